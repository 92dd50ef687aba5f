"""The child processes' entry points that chain the engine's parts: training, then the evaluation of
the finished run. This layer alone may use engine.train, engine.evaluate and engine.export together;
those three never import one another (pyproject.toml [tool.importlinter])."""

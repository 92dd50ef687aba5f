"""Export a run as a merged, quantized GGUF that is verified before it is called done.

runner.start_export starts the child (child.py), which runs pipeline.run_export: preflight.py,
merge.py, convert.py, quantize.py, verify.py, then package.py (Modelfile via modelfile.py, model
card via card.py). The CLI is engine/commands/export.py.
"""

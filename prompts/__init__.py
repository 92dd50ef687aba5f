"""The prompts, chat templates and eval sets chattune ships: data, read through engine/prompts.py.

This file only makes the folder an importable package, so a wheel carries it and
importlib.resources finds it wherever chattune is installed (pyproject.toml ships every file in it).
"""

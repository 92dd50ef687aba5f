"""Inference engines behind one small interface (see base.ChatEngine)."""

from __future__ import annotations

from engine.engines.base import ChatEngine, GenParams, ReplyStream

ENGINES = ("llamacpp", "transformers")

__all__ = ["ENGINES", "ChatEngine", "GenParams", "ReplyStream", "open_engine"]


def open_engine(kind: str, spec, workspace, *, system: str | None = None, template: str | None = None) -> ChatEngine:
    """Load `spec` (engine.models.ModelSpec) in the engine `kind`. Heavy imports happen here."""
    if kind == "llamacpp":
        from engine.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(spec, workspace, template=template)
    if kind == "transformers":
        from engine.engines.transformers_engine import TransformersEngine

        return TransformersEngine(spec, workspace, template=template)
    from engine.errors import ChattuneError

    raise ChattuneError(f"unknown engine {kind!r}", f"choose one of {', '.join(ENGINES)}")

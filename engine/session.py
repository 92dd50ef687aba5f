"""Open the workspace, model and engine the way every front end does (CLI and TUI alike)."""

from __future__ import annotations

from engine.adapters import resolve_adapter
from engine.engines import ChatEngine, open_engine
from engine.models import ModelSpec, resolve_model
from engine.workspace import Workspace


def default_engine_for(spec: ModelSpec) -> str:
    return "llamacpp" if spec.is_gguf else "transformers"


def open_chat(args) -> tuple[Workspace, ModelSpec, ChatEngine]:
    """From parsed CLI options (--workspace, --model, --engine, --adapter, --template)."""
    workspace = Workspace.open(getattr(args, "workspace", None))
    spec = resolve_model(getattr(args, "model", None))
    engine = open_engine(getattr(args, "engine", None) or default_engine_for(spec), spec, workspace,
                         template=getattr(args, "template", None))
    if getattr(args, "adapter", None):
        ref = resolve_adapter(workspace, args.adapter)
        engine.load_adapter(ref)
        engine.set_adapter(ref.name)
    return workspace, spec, engine

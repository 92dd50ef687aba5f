"""The engine as the app (tui/) sees it: the one module it imports.

The workspace and its feedback store, the models and chat engines, system prompts and chat
templates, training runs, evaluation and export; the child processes' events, typed, as the
modules `training_events` and `export_events` (one pydantic model per kind). Everything here is
cheap to import (no torch, no llama_cpp: those load in the engines and the child processes), and
the layers contract in pyproject.toml (checked by tests/test_layers.py) keeps the app from reaching
past it.
"""

from __future__ import annotations

from pathlib import Path

from engine import events as training_events
from engine import runlock
from engine.adapters import newest_adapter, resolve_adapter
from engine.doctor import training_line
from engine.engines import ChatEngine, GenParams, open_engine
from engine.engines.base import BASE, speaker_label
from engine.errors import ChattuneError
from engine.evaluate.runner import EvalHandle, start_evaluation
from engine.evaluate.scorecard import summary_rows
from engine.export import events as export_events
from engine.export.quants import DEFAULT_QUANTS, QUANTS
from engine.export.runner import ExportHandle, start_export
from engine.model_catalog import listed_by_child as listed_models
from engine.model_catalog import listed_model as pick_listed
from engine.models import resolve_model
from engine.prompts import system_prompt, system_prompts
from engine.runfolder import RunInfo, list_runs, read_run_config, runs_stamp
from engine.session import default_engine_for
from engine.store import KINDS, SPLITS, FeedbackStore, StoreError
from engine.templates import chat_templates, render_chat
from engine.text import clip, number, percent
from engine.train.config import METHODS, PRESETS, TrainConfig
from engine.train.plan import Plan, guess_device, plan_run
from engine.train.runner import attach_run, resume_run, start_run
from engine.workspace import Workspace

__all__ = [
    "BASE", "DEFAULT_QUANTS", "KINDS", "METHODS", "PRESETS", "QUANTS", "SPLITS",
    "ChatEngine", "ChattuneError", "EvalHandle", "ExportHandle", "FeedbackStore", "GenParams", "Plan", "RunInfo",
    "StoreError", "TrainConfig", "Workspace",
    "attach_run", "chat_templates", "clip", "default_engine_for", "evaluates_after_training", "export_events",
    "guess_device",
    "list_runs", "listed_model", "listed_models", "newest_adapter", "number", "open_engine", "percent", "plan_run",
    "render_chat", "resolve_adapter", "resolve_model", "resume_run", "run_command_line", "runs_stamp", "speaker_label",
    "start_evaluation", "start_export", "start_run", "summary_rows", "system_prompt", "system_prompts",
    "training_events", "training_line", "training_run",
]


def training_run(workspace: Workspace) -> str | None:
    """The name of the run training in this workspace now (started by any process), or None."""
    holder = runlock.holder_of(workspace.runs_dir)
    return holder.run if holder is not None else None


def evaluates_after_training(run_dir: Path) -> bool:
    """Whether the run's child evaluates the adapter after `done` (its config's `evaluate`)."""
    try:
        return bool(read_run_config(run_dir).config.get("evaluate", True))
    except ChattuneError:
        return True


def listed_model(model: str | None, workspace_root: Path) -> str | None:
    """`--model N` in the app: the path of the Nth model `chattune models` lists (listed by a child);
    any other value is left as it is."""
    return pick_listed(model, lambda: listed_models(workspace_root))


def run_command_line(argv: list[str] | None, chat) -> int:
    """`chattune ...`: the subcommands; `chat(args)` opens the app (so the engine never imports textual)."""
    from engine.cli import main

    return main(argv, chat=chat)

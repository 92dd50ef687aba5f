"""The models `chattune models` lists, for the app's model picker and `chattune --model N`.

Listed by a `chattune models --json` child: reading the architectures the GGUF converter knows loads
torch, which the app's process never does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.api import ChattuneError
from engine.api import listed_model as pick_listed

LIST_TIMEOUT_S = 300


def listed_models(workspace_root: Path) -> list[dict]:
    """Every model `chattune models` lists for this workspace, numbered as it numbers them (from 1)."""
    cmd = [sys.executable, "-m", "tui.cli", "--workspace", str(workspace_root), "models", "--json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=LIST_TIMEOUT_S, stdin=subprocess.DEVNULL)
        entries = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        entries = None
    if not isinstance(entries, list):
        raise ChattuneError("could not list the models here", "run `chattune models` to see why")
    return entries


def listed_model(model: str | None, workspace_root: Path) -> str | None:
    """`--model N`: the path of the Nth model `chattune models` lists; anything else is left as it is."""
    return pick_listed(model, lambda: listed_models(workspace_root))

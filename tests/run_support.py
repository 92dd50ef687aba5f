"""Shared by the tests that need a finished run without training one: a run folder started the way
`chattune train` starts it. Each test file then writes the metrics and the adapter it needs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from engine.store import FeedbackStore
from engine.workspace import Workspace


def start_run(workspace: Workspace, name: str, base: Path, n_examples: int | None = None):
    """Create the run folder with snapshot/ (of the workspace's store) and config.json (resolved config
    for `n_examples`, by default the snapshot's SFT count; base reference; snapshot), and open its
    event log. Returns (run_dir, log, snapshot)."""
    from engine.files import write_json_atomic
    from engine.models import resolve_model
    from engine.runfolder import EventLog, base_reference
    from engine.train.config import TrainConfig

    run_dir = workspace.run_dir(name)
    run_dir.mkdir(parents=True)
    with FeedbackStore(workspace.db_path) as store:
        snapshot = store.snapshot(run_dir / "snapshot")
    if n_examples is None:
        n_examples = snapshot.counts.get("sft-train", 1)
    write_json_atomic(run_dir / "config.json", {
        "name": name, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": TrainConfig().resolved(n_examples).to_dict(),
        "base": base_reference(resolve_model(str(base)), str(base)),
        "snapshot": {"dir": "snapshot", "hash": snapshot.hash, "counts": snapshot.counts}})
    return run_dir, EventLog(run_dir, None), snapshot

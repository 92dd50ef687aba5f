"""A run folder, and what it says about its run.

<workspace>/runs/<name>/
    config.json       the resolved TrainConfig, the base model reference (path + fingerprint),
                      the snapshot hash, and (written by the child) the runtime choices
    snapshot/         the frozen training data (store.snapshot)
    train.log         everything the child and its libraries printed
    metrics.jsonl     every event (see engine.train.events)
    checkpoints/      Trainer checkpoints (the last one is kept; resume starts there)
    adapter/          the final peft adapter (safetensors)
    adapter.gguf      the same adapter as a GGUF LoRA for llama.cpp
Together with the base model they name, config.json and snapshot/ are all a rerun needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from engine.adapters import GGUF_FILE, PEFT_DIR
from engine.childproc import TERMINAL_EVENTS
from engine.errors import ChattuneError
from engine.models import ModelSpec, hash_ends
from engine.train.config import TrainConfig
from engine.train.events import LOG_FILE, read_events
from engine.train.lock import holder_of

CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"
STATUSES = ("running", "done", "failed", "cancelled", "interrupted", "created")


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def read_run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ChattuneError(f"{run_dir} is not a training run (no {CONFIG_FILE})",
                            "list runs with `chattune runs`") from err
    except ValueError as err:
        raise ChattuneError(f"{path} is damaged ({err})", "start a new run") from err


def update_run_config(run_dir: Path, **sections) -> dict:
    data = read_run_config(run_dir)
    data.update(sections)
    write_json_atomic(Path(run_dir) / CONFIG_FILE, data)
    return data


# --- the base model a run trains on -------------------------------------------------------------


def base_reference(spec: ModelSpec, model_arg: str | None) -> dict:
    return {"arg": model_arg, "name": spec.name, "kind": spec.kind, "path": str(spec.path),
            "source": spec.source, "fingerprint": fingerprint(spec.path)}


def fingerprint(path: Path) -> str:
    """Identity of a model file or folder: sizes and the first and last MiB of each weight file.

    Cheap on multi-GB models, and it changes whenever the weights do."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.suffix in (".safetensors", ".gguf") or p.name == "config.json")
    digest = hashlib.sha256()
    for item in files:
        size = item.stat().st_size
        digest.update(f"{item.name}\0{size}\0".encode())
        hash_ends(digest, item, size)
    return digest.hexdigest()[:16]


# --- status, read back from the files -----------------------------------------------------------


@dataclass
class RunInfo:
    name: str
    run_dir: Path
    status: str  # one of STATUSES
    method: str = ""
    examples: int = 0
    val_examples: int = 0
    created_at: str = ""
    step: int = 0
    max_steps: int = 0
    final_loss: float | None = None
    eval_loss: float | None = None
    elapsed_s: float | None = None
    message: str | None = None  # the error, or what to do next
    adapter: Path | None = None
    gguf: Path | None = None
    base: str = ""
    config: dict = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, eval loss)

    @property
    def log(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def resumable(self) -> bool:
        return self.status in ("cancelled", "interrupted", "failed") and last_checkpoint(self.run_dir) is not None


def last_checkpoint(run_dir: Path) -> Path | None:
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    found = [(int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def load_run(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    meta = read_run_config(run_dir)
    config = meta.get("config", {})
    counts = meta.get("snapshot", {}).get("counts", {})
    method = config.get("method", "")
    info = RunInfo(
        name=run_dir.name, run_dir=run_dir, status="created", method=method,
        examples=counts.get(f"{method}-train", 0), val_examples=counts.get(f"{method}-val", 0),
        created_at=meta.get("created_at", ""), base=meta.get("base", {}).get("name", ""), config=config,
    )
    terminal = None
    for event in read_events(run_dir):
        kind = event["event"]
        if kind == "start":
            terminal = None  # a resumed run starts over
            info.examples = event.get("examples", info.examples)
            info.val_examples = event.get("val_examples", info.val_examples)
            info.max_steps = event.get("max_steps") or info.max_steps
        elif kind == "step":
            info.step = event.get("step", info.step)
            info.max_steps = event.get("max_steps") or info.max_steps
            if event.get("loss") is not None:
                info.final_loss = event["loss"]
                info.losses.append((info.step, event["loss"]))
        elif kind == "eval" and event.get("eval_loss") is not None:
            info.eval_loss = event["eval_loss"]
            info.eval_losses.append((event.get("step", info.step), event["eval_loss"]))
        elif kind in TERMINAL_EVENTS:
            terminal = event
    holder = holder_of(run_dir.parent)
    if holder is not None and holder.run == run_dir.name:
        info.status = "running"
    elif terminal is None:
        info.status = "interrupted" if info.step or (run_dir / LOG_FILE).is_file() else "created"
        if info.status == "interrupted":
            info.message = f"the training process stopped without a word; see {run_dir / LOG_FILE}"
    elif terminal["event"] == "done":
        info.status = "done"
        info.elapsed_s = terminal.get("elapsed_s")
        info.final_loss = terminal.get("final_loss", info.final_loss)
        info.eval_loss = terminal.get("eval_loss", info.eval_loss)
    elif terminal["event"] == "cancelled":
        info.status = "cancelled"
        info.message = "cancelled; resume it to continue from its last checkpoint"
    else:
        info.status = "failed"
        info.message = terminal.get("message")
    if info.status == "done":
        peft, gguf = run_dir / PEFT_DIR, run_dir / GGUF_FILE
        info.adapter = peft if (peft / "adapter_config.json").is_file() else None
        info.gguf = gguf if gguf.is_file() else None
    return info


def list_runs(workspace) -> list[RunInfo]:
    """Every run in the workspace, oldest first."""
    runs_dir = workspace.runs_dir
    if not runs_dir.is_dir():
        return []
    runs = []
    for run_dir in runs_dir.iterdir():
        if run_dir.is_dir() and (run_dir / CONFIG_FILE).is_file():
            try:
                runs.append(load_run(run_dir))
            except ChattuneError:
                continue
    return sorted(runs, key=lambda r: (r.created_at, r.name))


def load_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(read_run_config(run_dir)["config"])

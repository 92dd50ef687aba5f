"""A run folder, and what it says about its run: the format that training writes and evaluation,
export, the CLI and the app read.

<workspace>/runs/<name>/
    config.json       the resolved TrainConfig, the base model reference (path + fingerprint),
                      the snapshot hash, and (written by the child) the runtime choices
    snapshot/         the frozen training data (store.snapshot): <method>-<split>.jsonl
    train.log         everything the child and its libraries printed
    metrics.jsonl     every event (below)
    checkpoints/      Trainer checkpoints (the last one is kept; resume starts there)
    adapter/          the final peft adapter (safetensors)
    adapter.gguf      the same adapter as a GGUF LoRA for llama.cpp
Together with the base model they name, config.json and snapshot/ are all a rerun needs.

The training child's events, one JSON object per line, on stdout (for the runner) and in
metrics.jsonl: engine.events (status, data, start, step, epoch, eval, checkpoint, warning, done,
scorecard, cancelled, error), one pydantic model per kind. Readers skip kinds and fields they do
not know.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from engine.adapters import GGUF_FILE, PEFT_DIR
from engine.childproc import EventWriter
from engine.errors import ChattuneError
from engine.events import TERMINAL_EVENTS, TRAINING_EVENTS, Done, EvalLoss, Failed, Start, Step, TrainEvent
from engine.files import write_json_atomic
from engine.models import ModelSpec, hash_ends
from engine.runlock import holder_of
from engine.validation import one_line

CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"
SNAPSHOT_DIR = "snapshot"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
STATUSES = ("running", "done", "failed", "cancelled", "interrupted", "created")


class EventLog(EventWriter):
    """The training child's events: to the runner's pipe and appended to the run's metrics.jsonl."""

    def __init__(self, run_dir: Path, stream: IO[str] | None, enabled: bool = True):
        super().__init__(TRAINING_EVENTS, stream, Path(run_dir) / METRICS_FILE, enabled)
        self.run_dir = Path(run_dir)


def read_events(run_dir: Path) -> list[TrainEvent]:
    """Every event a run has written so far (a torn last line from a killed child is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [event for line in lines if (event := TRAINING_EVENTS.parse(line))]


@dataclass
class Curves:
    """A run's logged losses. A resumed run repeats the steps after its checkpoint: the later value
    of a step replaces the earlier one, so each step appears once."""

    train: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    evals: list[tuple[int, float, float]] = field(default_factory=list)  # (step, epoch, eval loss)

    @property
    def eval_by_step(self) -> list[tuple[int, float]]:
        return [(step, loss) for step, _, loss in self.evals]

    @property
    def eval_by_epoch(self) -> list[tuple[float, float]]:
        return [(epoch, loss) for _, epoch, loss in self.evals]


def loss_curves(events: list[TrainEvent]) -> Curves:
    steps: dict[int, float] = {}
    evals: dict[int, tuple[float, float]] = {}
    step = 0
    for event in events:
        if isinstance(event, (Step, EvalLoss)) and event.step is not None:
            step = event.step
        if isinstance(event, Step) and event.loss is not None:
            steps[step] = event.loss
        elif isinstance(event, EvalLoss) and event.eval_loss is not None:
            evals[step] = (round(float(event.epoch or len(evals) + 1), 3), event.eval_loss)
    return Curves(sorted(steps.items()), [(s, epoch, loss) for s, (epoch, loss) in sorted(evals.items())])


# --- config.json --------------------------------------------------------------------------------


class BaseRef(BaseModel):
    """The base model a run trains on: what the user passed, what it resolved to, and its fingerprint."""

    arg: str | None = None
    name: str = ""
    kind: str = ""  # "gguf" or "hf"
    path: str = ""
    source: str = ""
    fingerprint: str = ""


class SnapshotRef(BaseModel):
    dir: str = SNAPSHOT_DIR
    hash: str = ""
    counts: dict[str, int] = {}  # {"sft-train": n, ..., "dpo-test": n}


class RunTime(BaseModel):
    """What the training child made of "auto" (engine.train.recipe.Runtime), why, and the library versions."""

    model_config = ConfigDict(extra="allow")  # what a newer child records survives an older reader's rewrite

    device: str = ""
    quantization: str = ""
    precision: str = ""
    gradient_checkpointing: bool = False
    optim: str = ""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    bnb_compute_dtype: str = ""
    reasons: dict[str, str] = {}
    versions: dict[str, str | None] = {}


class RunConfig(BaseModel):
    """config.json. Runs written by earlier versions lack some keys: they read with the defaults, and a
    rewrite keeps only the keys the file had (exclude_unset) plus the section written."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    created_at: str = ""
    chattune: str | None = None  # the version that set the run up (absent in the earliest runs)
    # engine.train.config.TrainConfig as JSON, resolved for the data (`requested`: as the user gave it).
    # Typed there: evaluation and export sit below training and read only a few of its keys.
    config: dict[str, Any] = {}
    requested: dict[str, Any] | None = None
    base: BaseRef = BaseRef()
    snapshot: SnapshotRef = SnapshotRef()
    runtime: RunTime | None = None  # written by the child when it starts


def read_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunConfig.model_validate(data)
    except FileNotFoundError as err:
        raise ChattuneError(f"{run_dir} is not a training run (no {CONFIG_FILE})",
                            "list runs with `chattune runs`") from err
    except ValidationError as err:
        raise ChattuneError(f"{path} is damaged ({one_line(err, data)})", "start a new run") from None
    except ValueError as err:
        raise ChattuneError(f"{path} is damaged ({err})", "start a new run") from err


def write_run_config(run_dir: Path, run_config: RunConfig) -> None:
    write_json_atomic(Path(run_dir) / CONFIG_FILE, run_config.model_dump(mode="json", exclude_unset=True))


def update_run_config(run_dir: Path, **sections) -> RunConfig:
    """Write sections (as JSON values, checked against RunConfig) into the run's config.json."""
    current = read_run_config(run_dir).model_dump(mode="json", exclude_unset=True)
    try:
        updated = RunConfig.model_validate({**current, **sections})
    except ValidationError as err:
        raise ChattuneError(f"cannot record {', '.join(sections)} in {run_dir}: {one_line(err, sections)}",
                            "this is a bug in chattune; please report it") from None
    write_run_config(run_dir, updated)
    return updated


# --- the snapshot -------------------------------------------------------------------------------


def snapshot_file(snapshot_dir: Path, method: str, split: str) -> Path:
    return Path(snapshot_dir) / f"{method}-{split}.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            raise ChattuneError(f"{path}:{number} is not valid JSON ({err})",
                                "the run's snapshot is damaged; start a new run") from err
    return rows


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
    curves: Curves = field(default_factory=Curves)

    @property
    def losses(self) -> list[tuple[int, float]]:
        return self.curves.train

    @property
    def eval_losses(self) -> list[tuple[int, float]]:
        return self.curves.eval_by_step

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
    counts = meta.snapshot.counts
    method = meta.config.get("method", "")
    info = RunInfo(
        name=run_dir.name, run_dir=run_dir, status="created", method=method,
        examples=counts.get(f"{method}-train", 0), val_examples=counts.get(f"{method}-val", 0),
        created_at=meta.created_at, base=meta.base.name, config=meta.config,
    )
    events = read_events(run_dir)
    info.curves = loss_curves(events)
    terminal = None
    for event in events:
        if isinstance(event, Start):
            terminal = None  # a resumed run starts over
            info.examples = _given(event.examples, info.examples)
            info.val_examples = _given(event.val_examples, info.val_examples)
            info.max_steps = event.max_steps or info.max_steps
        elif isinstance(event, Step):
            info.step = _given(event.step, info.step)
            info.max_steps = event.max_steps or info.max_steps
            info.final_loss = _given(event.loss, info.final_loss)
        elif isinstance(event, EvalLoss):
            info.eval_loss = _given(event.eval_loss, info.eval_loss)
        elif event.event in TERMINAL_EVENTS:
            terminal = event
    holder = holder_of(run_dir.parent)
    if holder is not None and holder.run == run_dir.name:
        info.status = "running"
    elif terminal is None:
        info.status = "interrupted" if info.step or (run_dir / LOG_FILE).is_file() else "created"
        if info.status == "interrupted":
            info.message = f"the training process stopped without a word; see {run_dir / LOG_FILE}"
    elif isinstance(terminal, Done):
        info.status = "done"
        info.elapsed_s = terminal.elapsed_s
        info.final_loss = _given(terminal.final_loss, info.final_loss)
        info.eval_loss = _given(terminal.eval_loss, info.eval_loss)
    elif isinstance(terminal, Failed):
        info.status = "failed"
        info.message = terminal.message or None
    else:
        info.status = "cancelled"
        info.message = "cancelled; resume it to continue from its last checkpoint"
    if info.status == "done":
        peft, gguf = run_dir / PEFT_DIR, run_dir / GGUF_FILE
        info.adapter = peft if (peft / "adapter_config.json").is_file() else None
        info.gguf = gguf if gguf.is_file() else None
    return info


def _given(value, fallback):
    """An event's field when it carries one, else what was known before."""
    return fallback if value is None else value


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


def runs_stamp(workspace) -> tuple:
    """What changes whenever any run appends an event: the metrics files' sizes and times."""
    stamps = []
    for path in sorted(workspace.runs_dir.glob(f"*/{METRICS_FILE}")):
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append((path.parent.name, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)

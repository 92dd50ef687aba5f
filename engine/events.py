"""The JSON-line events the child processes write, as pydantic models: one model per kind, and one
`EventKinds` per stream (the training child's below; the export child's in engine.export.events).

Writing, `kinds.build({"event": kind, **fields})` refuses a kind or field the stream does not
define (a writer's typo fails its test instead of shipping). Reading, `kinds.parse(line)` picks the
model by "event" (a discriminated union) and ignores fields it does not know; a kind it does not
know (a newer child), a torn line or a stray print parses to None, which every reader skips.
Every field has a default: runs written by earlier versions carry fewer of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

TERMINAL_EVENTS = ("done", "error", "cancelled")


class Event(BaseModel):
    """What every event carries: its kind and the unix time it was written."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event: str
    t: float | None = None


class EventKinds:
    """The event models of one stream, keyed by their "event" literal."""

    def __init__(self, *models: type[Event]):
        self.models = {model.model_fields["event"].default: model for model in models}
        self._union = TypeAdapter(Annotated[Union[models], Field(discriminator="event")])  # noqa: UP007

    def parse(self, line: str | bytes) -> Event | None:
        """The event on one line, or None for anything else (see the module docstring)."""
        try:
            return self._union.validate_json(line)
        except ValidationError:
            return None

    def build(self, record: dict[str, Any]) -> Event:
        """The event a writer means: ValueError for a kind or a field this stream does not define,
        ValidationError for a value of the wrong type."""
        model = self.models.get(record.get("event"))
        if model is None:
            raise ValueError(f"no event kind {record.get('event')!r} (known: {', '.join(self.models)})")
        unknown = set(record) - set(model.model_fields)
        if unknown and model.model_config.get("extra") != "allow":
            raise ValueError(f"the {model.__name__} event has no field {', '.join(sorted(unknown))}")
        return model.model_validate(record)


# --- the training child (engine.train.child; appended to a run's metrics.jsonl too) -------------------


class Status(Event):
    """What the child is busy with."""

    event: Literal["status"] = "status"
    phase: str | None = None  # "base", "data", "load", "best", "save", "gguf", "eval"
    message: str = ""


class DataCounts(Event):
    """What the SFT mix holds (engine.train.mix), one field per count: example-train,
    rewording-train, rewording-val, replay-train, replay-val, ..."""

    model_config = ConfigDict(extra="allow")

    event: Literal["data"] = "data"

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.model_extra or {})


class Start(Event):
    """Training starts (or resumes: step > 0)."""

    event: Literal["start"] = "start"
    run: str | None = None
    method: str = ""
    examples: int | None = None  # the user's
    rows: int | None = None  # training rows with rewordings and replay
    val_examples: int | None = None  # validation rows: held-out rewordings and replay
    tokens: int | None = None  # per epoch
    epochs: int | float | None = None
    device: str | None = None
    quantization: str | None = None
    precision: str | None = None
    world_size: int | None = None
    visible_gpus: str | None = None  # CUDA_VISIBLE_DEVICES as the child saw it; None when unset
    quantized_layers: int | None = None
    step: int = 0
    max_steps: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    resumed_from: str | None = None  # the checkpoint


class Step(Event):
    """One logged optimizer step (DPO adds the reward fields)."""

    event: Literal["step"] = "step"
    step: int | None = None
    max_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    peak_mem_mb: float | None = None
    reward_margins: float | None = None
    reward_accuracies: float | None = None


class EpochEnd(Event):
    event: Literal["epoch"] = "epoch"
    step: int | None = None
    epoch: float | None = None
    train_loss: float | None = None  # mean of the epoch's logged losses


class EvalLoss(Event):
    """The validation rows' loss after an epoch (the best epoch's adapter is kept)."""

    event: Literal["eval"] = "eval"
    step: int | None = None
    epoch: float | None = None
    eval_loss: float | None = None


class CheckpointSaved(Event):
    event: Literal["checkpoint"] = "checkpoint"
    step: int | None = None
    path: str | None = None


class TrainWarning(Event):
    event: Literal["warning"] = "warning"
    kind: str | None = None  # "few_examples", "overfitting", "too_long", "trimmed", "no_checkpoint", "gguf", "eval"
    message: str = ""


class Done(Event):
    """The adapter is saved (the evaluation, when on, follows)."""

    event: Literal["done"] = "done"
    adapter: str | None = None
    gguf: str | None = None  # None when the conversion failed
    final_loss: float | None = None
    eval_loss: float | None = None
    steps: int | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    cpu_s: float | None = None  # CPU seconds the child used


class Scorecard(Event):
    """The evaluation that follows `done` (engine.evaluate; skipped with --no-eval)."""

    event: Literal["scorecard"] = "scorecard"
    path: str | None = None
    verdict: str | None = None
    reason: str | None = None
    heldout_n: int | None = None
    base_f1: float | None = None
    adapter_f1: float | None = None
    taught: int | None = None
    taught_n: int | None = None
    reworded: int | None = None
    reworded_n: int | None = None
    kept: int | None = None
    general_n: int | None = None
    forgetting_score: float | None = None
    elapsed_s: float | None = None


class Cancelled(Event):
    event: Literal["cancelled"] = "cancelled"
    step: int | None = None
    checkpoint: str | None = None  # None when cancelled before the first one
    log: str | None = None


class Failed(Event):
    event: Literal["error"] = "error"
    message: str = ""
    log: str | None = None
    returncode: int | None = None  # when the runner wrote it for a child that died silently


TrainEvent = (Status | DataCounts | Start | Step | EpochEnd | EvalLoss | CheckpointSaved | TrainWarning | Done
              | Scorecard | Cancelled | Failed)
TRAINING_EVENTS = EventKinds(Status, DataCounts, Start, Step, EpochEnd, EvalLoss, CheckpointSaved, TrainWarning,
                             Done, Scorecard, Cancelled, Failed)

"""The export child's events (engine.export.pipeline writes them, engine.export.runner reads them),
typed like the training child's (engine.events)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.events import Event, EventKinds


class ExportStart(Event):
    event: Literal["start"] = "start"
    run: str | None = None
    out: str | None = None
    quants: list[str] = []
    stages: list[str] = []


class ExportStage(Event):
    """A stage begins; `fraction` is of the whole export, 0..1."""

    event: Literal["stage"] = "stage"
    stage: str | None = None
    message: str = ""
    fraction: float = 0.0


class ExportProgress(ExportStage):
    """Within a stage."""

    event: Literal["progress"] = "progress"


class ExportWarning(Event):
    event: Literal["warning"] = "warning"
    stage: str | None = None
    kind: str | None = None  # "fallback", "verify", "lora", "modelfile"
    message: str = ""


class ExportedFile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    bytes: int | None = None
    what: str = ""


class Fidelity(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    same_top_token: float | None = None
    kl: float | None = None


class Fallback(BaseModel):
    """The tensors a quantization type could not hold, and what they became (engine.export.quantize)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    message: str = ""


class ExportDone(Event):
    event: Literal["done"] = "done"
    out: str = ""
    files: list[ExportedFile] = []
    ggufs: dict[str, str] = {}  # {quant: file name}
    stages: dict[str, float] = {}  # seconds each
    elapsed_s: float | None = None
    agreement: dict[str, float] = {}  # {quant: share of verify prompts given the adapter's reply}
    agreement_with_ties: dict[str, float] = {}
    fidelity: dict[str, Fidelity] = {}
    verified: bool = False
    problems: list[str] = []
    fallbacks: dict[str, Fallback] = {}
    ollama_name: str | None = None
    architecture: str | None = None
    params: int | None = None
    merge: dict[str, Any] | None = None


class ExportError(Event):
    event: Literal["error"] = "error"
    stage: str | None = None
    message: str = ""
    expected: bool = True  # False: a bug, not the user's to fix
    log: str | None = None
    returncode: int | None = None  # when the runner wrote it for a child that died silently


class ExportCancelledEvent(Event):
    event: Literal["cancelled"] = "cancelled"
    stage: str | None = None


ExportEvent = ExportStart | ExportStage | ExportProgress | ExportWarning | ExportDone | ExportError | ExportCancelledEvent
EXPORT_EVENTS = EventKinds(ExportStart, ExportStage, ExportProgress, ExportWarning, ExportDone, ExportError,
                           ExportCancelledEvent)

"""Two lines on top of the chat: model and engine, who answers, training (a progress bar while a run
goes); then the dataset counts."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import LoadingIndicator, Static

from tui.labels import speaker_title


@dataclass(frozen=True)
class TrainingState:
    """What the status bar says about training (tui.training keeps it current)."""

    phase: str = "idle"  # idle | starting | preparing | training | evaluating | failed | cancelled
    run: str = ""
    step: int = 0
    max_steps: int = 0
    loss: float | None = None
    eval_loss: float | None = None
    eta_s: float | None = None
    tokens_per_s: float | None = None
    message: str = ""


@dataclass(frozen=True)
class StatusInfo:
    model: str = ""  # "NAME · ENGINE" once loaded
    loading: bool = True
    load_error: str = ""
    speaker: str = "base"  # who answers the next reply
    blind: bool = False
    stats: dict | None = None  # FeedbackStore.stats(); None when the store is unavailable
    training: TrainingState = TrainingState()
    store_error: str = ""
    gpu_fallback: str = ""  # why the chat runs on the CPU although the GPU was meant (engine.gpu_fallback)


class StatusBar(Vertical):
    def compose(self) -> ComposeResult:
        with Horizontal(classes="status-row"):
            yield Static(id="status-model")
            yield LoadingIndicator(id="status-spinner")
            yield Static(id="status-speaker")
            yield Static(id="status-training")
        yield Static(id="status-data")

    def on_mount(self) -> None:
        self.show(self.app.status())

    def show(self, info: StatusInfo) -> None:
        try:
            self.query_one("#status-model", Static).update(_model(info))
        except NoMatches:
            return  # not composed yet: on_mount shows it
        self.query_one("#status-spinner").display = info.loading
        self.query_one("#status-speaker", Static).update(_speaker(info))
        self.query_one("#status-training", Static).update(training_text(info.training))
        self.query_one("#status-data", Static).update(_data(info))


def _model(info: StatusInfo) -> Text:
    if info.loading:
        return Text("loading model…", style="italic")
    if info.load_error:
        return Text("no model: " + info.load_error, style="bold red")
    text = Text(info.model, style="bold")
    if info.gpu_fallback:
        text.append(" · on the CPU", style="yellow")  # the GPU was meant: app.py tells why once
    return text


def _speaker(info: StatusInfo) -> Text:
    text = Text("▶ ")
    title = speaker_title(info.speaker)
    text.append(title, style="bold reverse green" if title == "BASE" else "bold reverse magenta")
    if info.blind:
        text.append(" blind", style="bold yellow")
    return text


def _data(info: StatusInfo) -> Text:
    if info.stats is None:
        return Text("feedback store unavailable: " + info.store_error, style="red")
    kinds, splits = info.stats["kinds"], info.stats["splits"]
    text = Text()
    for kind, mark, word in (("approved", "✓", "approved"), ("corrected", "✎", "corrected"),
                             ("flagged", "⚑", "flagged"), ("preference", "⇄", "votes")):
        text.append(f"{mark}{kinds.get(kind, 0)} ", style="bold")
        text.append(f"{word} ", style="dim")
    text.append("│ ", style="dim")
    text.append(" · ".join(f"{split} {n}" for split, n in splits.items()))
    return text


BAR_CELLS = 10


def training_text(state: TrainingState) -> Text:
    """At most ~40 cells, so the row still fits 80 columns next to the model and who answers."""
    text = Text("│ ", style="dim")
    if state.phase == "training" and state.max_steps:
        done = max(0, min(BAR_CELLS, round(BAR_CELLS * state.step / state.max_steps)))
        text.append("━" * done, style="bold magenta")
        text.append("━" * (BAR_CELLS - done), style="dim")
        text.append(f" {state.step}/{state.max_steps}", style="bold")
        if state.loss is not None:
            text.append(f" loss {state.loss:.3g}")
        if state.eta_s:
            text.append(f" {duration(state.eta_s)}", style="dim")
        return text
    words = {"idle": ("training: idle", "dim"), "starting": ("training: starting…", "italic"),
             "preparing": ("training: loading…", "italic"), "training": ("training…", "italic"),
             "evaluating": ("evaluating…", "italic"), "failed": ("training: failed", "red"),
             "cancelled": ("training: cancelled", "yellow")}
    word, style = words.get(state.phase, (state.phase, ""))
    text.append(word, style=style)
    return text


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"

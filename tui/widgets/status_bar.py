"""Two lines on top of the chat: model and engine, who answers, training; then the dataset counts."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import LoadingIndicator, Static

from tui.labels import speaker_title


@dataclass(frozen=True)
class StatusInfo:
    model: str = ""  # "NAME · ENGINE" once loaded
    loading: bool = True
    load_error: str = ""
    speaker: str = "base"  # who answers the next reply
    blind: bool = False
    stats: dict | None = None  # FeedbackStore.stats(); None when the store is unavailable
    training: str = "idle"
    store_error: str = ""


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
        self.query_one("#status-model", Static).update(_model(info))
        self.query_one("#status-spinner").display = info.loading
        self.query_one("#status-speaker", Static).update(_speaker(info))
        self.query_one("#status-training", Static).update(Text(f"│ training: {info.training}", style="dim"))
        self.query_one("#status-data", Static).update(_data(info))


def _model(info: StatusInfo) -> Text:
    if info.loading:
        return Text("loading model…", style="italic")
    if info.load_error:
        return Text("no model: " + info.load_error, style="bold red")
    return Text(info.model, style="bold")


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

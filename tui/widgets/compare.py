"""Two replies to the same prompt, side by side, for an A/B vote."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Markdown, Static


class ComparePane(VerticalScroll, can_focus=False):
    """One side: a label (hidden speaker in blind mode) over the streamed reply."""

    def __init__(self, label: str, *, id: str) -> None:
        super().__init__(id=id, classes="compare-pane")
        self.label = label
        self.speaker = ""
        self.text = ""
        self.finish_reason: str | None = None
        self._stream = None

    def compose(self) -> ComposeResult:
        yield Static(Text(self.label, style="bold"), classes="compare-label")
        yield Markdown("", classes="compare-body")

    def begin(self, speaker: str) -> None:
        self.speaker = speaker
        self._stream = Markdown.get_stream(self.query_one(Markdown))

    async def append(self, piece: str) -> None:
        self.text += piece
        if self._stream is not None and self.is_attached:  # the user may have left mid-stream
            await self._stream.write(piece)

    async def finish(self, reason: str) -> None:
        self.finish_reason = reason or "stop"
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if self.finish_reason == "cancelled" and self.is_attached:  # esc may have closed the view already
            self.set_label(f"{self.label}  (stopped)")

    def set_label(self, text: Text | str) -> None:
        self.query_one(".compare-label", Static).update(text if isinstance(text, Text) else Text(text, style="bold"))


class CompareView(Horizontal):
    def __init__(self, left_label: str, right_label: str) -> None:
        super().__init__(id="compare-view")
        self._labels = (left_label, right_label)

    def compose(self) -> ComposeResult:
        yield ComparePane(self._labels[0], id="compare-left")
        yield ComparePane(self._labels[1], id="compare-right")

    @property
    def panes(self) -> tuple[ComparePane, ComparePane]:
        return self.query_one("#compare-left", ComparePane), self.query_one("#compare-right", ComparePane)

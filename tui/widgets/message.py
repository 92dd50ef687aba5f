"""One turn of the conversation: the user's message, or a model reply the user can judge."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Markdown, Static

from engine.api import clip
from tui.labels import adapter_of, speaker_title

# kind -> (mark, word) shown on a judged reply
MARKS = {"approved": ("✓", "approved"), "corrected": ("✎", "corrected"), "flagged": ("⚑", "flagged")}
FINISH_NOTES = {"cancelled": "stopped", "length": "cut at max tokens", "error": "failed"}


@dataclass
class Reply:
    """A reply and what the user said about it. `context` is what the model saw (system .. user)."""

    context: list[dict]
    speaker: str = ""
    text: str = ""
    finish: str | None = None  # None while streaming
    record_id: int | None = None
    kind: str | None = None  # approved / corrected / flagged once stored
    correction: str | None = None
    reason: str | None = None
    # A verdict whose save failed (disk full...): kept so the user can retry without retyping.
    unsaved: dict = field(default_factory=dict)

    @property
    def adapter(self) -> str | None:
        return adapter_of(self.speaker)

    @property
    def streaming(self) -> bool:
        return self.finish is None

    @property
    def shown(self) -> str:
        """What the conversation goes on with: the correction once there is one."""
        return self.correction if self.kind == "corrected" and self.correction else self.text


class UserMessage(Static):
    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False, classes="user-message")
        self.text = text
        self.border_title = "you"


class ReplyMessage(Vertical, can_focus=True):
    """A model reply. Focus it (Tab, ↑/↓) to approve, correct or flag it."""

    BINDINGS = [
        Binding("up,k", "move(-1)", "previous", show=False),
        Binding("down,j", "move(1)", "next", show=False),
        Binding("a", "judge('approved')", "approve"),
        Binding("e", "judge('corrected')", "correct"),
        Binding("f", "judge('flagged')", "flag"),
    ]

    @dataclass
    class Judged(Message):
        """The user pressed a/e/f on this reply."""

        view: ReplyMessage
        kind: str

    @dataclass
    class Moved(Message):
        """Select the previous (-1) or next (+1) reply."""

        view: ReplyMessage
        step: int

    def __init__(self, reply: Reply) -> None:
        super().__init__(classes="reply")
        self.reply = reply
        self._stream = None

    def compose(self) -> ComposeResult:
        yield Static(self._header(), classes="reply-header")
        yield Markdown(self.reply.shown, classes="reply-body")
        yield Static(self._note(), classes="reply-note")

    def on_mount(self) -> None:
        self._show_note()

    # -- streaming (called on the UI thread, from the generating worker) ---------------------

    def begin(self, speaker: str) -> None:
        self.reply.speaker = speaker
        self._stream = Markdown.get_stream(self.query_one(Markdown))
        self.refresh_header()

    async def append(self, piece: str) -> None:
        self.reply.text += piece
        if self._stream is not None and self.is_attached:  # a new conversation may have removed it
            await self._stream.write(piece)

    async def finish(self, reason: str) -> None:
        self.reply.finish = reason or "stop"
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if self.is_attached:  # a new conversation may have removed it
            self.refresh_header()

    # -- judging ---------------------------------------------------------------------------------

    async def show_verdict(self) -> None:
        """Redraw after the reply's record changed (stored, corrected, deleted, or a failed save)."""
        self.refresh_header()
        self._show_note()
        markdown = self.query_one(Markdown)
        if markdown.source != self.reply.shown:
            await markdown.update(self.reply.shown)

    def refresh_header(self) -> None:
        self.query_one(".reply-header", Static).update(self._header())

    def _header(self) -> Text:
        reply = self.reply
        header = Text()
        header.append(speaker_title(reply.speaker) if reply.speaker else "…", style="bold")
        if reply.streaming:
            header.append("  streaming… (esc stops)", style="italic dim")
        elif reply.finish in FINISH_NOTES:
            header.append(f"  ({FINISH_NOTES[reply.finish]})", style="dim")
        if reply.kind:
            mark, word = MARKS[reply.kind]
            header.append(f"  {mark} {word}", style=f"bold {_MARK_STYLE[reply.kind]}")
        if reply.unsaved:
            header.append("  ● not saved: press the key again to retry", style="bold red")
        return header

    def _note(self) -> Text:
        reply = self.reply
        if reply.kind == "corrected":
            return Text(f"model said: {clip(reply.text, 200)}", style="dim")
        if reply.kind == "flagged" and reply.reason:
            return Text(f"reason: {clip(reply.reason, 200)}", style="dim")
        return Text("")

    def _show_note(self) -> None:
        note = self.query_one(".reply-note", Static)
        text = self._note()
        note.update(text)
        note.display = bool(text.plain)

    def action_judge(self, kind: str) -> None:
        self.post_message(self.Judged(self, kind))

    def action_move(self, step: int) -> None:
        self.post_message(self.Moved(self, step))


_MARK_STYLE = {"approved": "green", "corrected": "yellow", "flagged": "red"}

"""The message box: Enter sends; Shift+Enter or Ctrl+J adds a line (many terminals cannot send Shift+Enter)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class ChatInput(TextArea):
    # Enter and the new-line keys are handled in _on_key, in order with the typed characters: a fast
    # typist (or a paste without bracketed paste) sends "text<Enter>" in one burst, and a binding would
    # run before the characters still queued for this widget. The bindings name them in the footer.
    BINDINGS = [
        Binding("enter", "submit", "send", key_display="⏎"),
        Binding("ctrl+j,shift+enter", "newline", "new line"),
        Binding("tab", "screen.switch_focus", "replies & keys"),
    ]

    @dataclass
    class Submitted(Message):
        chat_input: ChatInput
        text: str

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)

    async def _on_key(self, event: events.Key) -> None:
        if event.key in ("enter", "ctrl+j", "shift+enter"):
            event.stop()
            event.prevent_default()
            self.action_submit() if event.key == "enter" else self.action_newline()
            return
        await super()._on_key(event)

    def action_submit(self) -> None:
        """Hand the text over and clear the box now, before any key typed after Enter lands in it."""
        text = self.text
        if text.strip():
            self.clear()
            self.post_message(self.Submitted(self, text))

    def give_back(self, text: str) -> None:
        """The message could not go out: put it back in front of anything typed since."""
        self.text = text + self.text
        self.move_cursor(self.document.end)

    def action_newline(self) -> None:
        self.insert("\n")

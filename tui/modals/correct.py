"""Edit a reply into the answer it should have been. Saving returns the text; Esc returns None."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea


class CorrectModal(ModalScreen[str | None]):
    BINDINGS = [
        Binding("ctrl+s", "save", "save"),
        Binding("escape", "cancel", "cancel"),
    ]

    def __init__(self, prompt: str, text: str, *, title: str = "Correct the reply") -> None:
        super().__init__(classes="modal")
        self.prompt = prompt
        self.text = text
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            yield Static(Text("prompt: " + " ".join(self.prompt.split()), style="dim"), classes="dialog-prompt")
            yield TextArea(self.text, soft_wrap=True, id="correction")
            yield Static(Text("typing replaces the reply · arrows edit it · ctrl+s save · esc cancel", style="dim"),
                         classes="dialog-hint")

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        # All selected: typing replaces the wrong reply, an arrow key keeps it for a small edit.
        area.select_all()

    def action_save(self) -> None:
        text = self.query_one(TextArea).text
        if not text.strip():
            self.notify("The correction is empty: write the answer you want, or esc to cancel.",
                        severity="warning")
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)

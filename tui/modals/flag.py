"""Flag a reply as wrong, with an optional reason. Returns the reason ('' for none), or None if cancelled."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class FlagModal(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, reason: str = "") -> None:
        super().__init__(classes="modal")
        self.reason = reason

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text("Flag this reply as wrong", style="bold"), classes="dialog-title")
            yield Input(self.reason, placeholder="why? (optional)", id="reason")
            yield Static(Text("enter flag · esc cancel · correct it later with e or in the dataset (d)",
                              style="dim"), classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)

"""Pick the system prompt from prompts/system/. Returns its name, or None if cancelled."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class SystemPromptModal(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, prompts: dict[str, str], current: str) -> None:
        super().__init__(classes="modal")
        self.prompts = prompts
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide"):
            yield Static(Text("System prompt (from prompts/system/)", style="bold"), classes="dialog-title")
            yield OptionList(*(Option(f"{'● ' if name == self.current else '  '}{name}", id=name)
                               for name in self.prompts), id="prompt-list")
            yield Static(id="prompt-preview", classes="dialog-prompt")
            yield Static(Text("↑↓ choose · enter use it · esc cancel", style="dim"), classes="dialog-hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        names = list(self.prompts)
        options.highlighted = names.index(self.current) if self.current in names else 0
        options.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one("#prompt-preview", Static).update(Text(self.prompts[event.option.id], style="italic"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)

"""Pick the chat template: the one chosen for the model, or one from prompts/templates/. Returns the
name ("" for the model's own choice), or None if cancelled."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from engine.api import ChattuneError, render_chat

AUTOMATIC = ""  # the template choose_template picks: the model's own, or its stand-in
SAMPLE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Who are you?"}]


class TemplateModal(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, templates: dict[str, str], current: str, automatic: str) -> None:
        """`templates`: name -> Jinja text; `current`: the name in use (AUTOMATIC: the model's choice);
        `automatic`: why the model's choice is what it is (its one line)."""
        super().__init__(classes="modal")
        self.templates = templates
        self.current = current
        self.automatic = automatic

    def compose(self) -> ComposeResult:
        options = [Option(f"{'● ' if self.current == AUTOMATIC else '  '}automatic: {self.automatic}", id="auto")]
        options += [Option(f"{'● ' if name == self.current else '  '}{name}", id=f"t-{name}") for name in self.templates]
        with Vertical(classes="dialog dialog-wide"):
            yield Static(Text("Chat template (from prompts/templates/)", style="bold"), classes="dialog-title")
            yield OptionList(*options, id="template-list")
            yield Static(id="template-preview", classes="dialog-prompt")
            yield Static(Text("The chat, training and export use it. ↑↓ choose · enter use it · esc cancel",
                              style="dim"), classes="dialog-hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        names = list(self.templates)
        options.highlighted = names.index(self.current) + 1 if self.current in names else 0
        options.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        name = self._template_of(event.option.id)
        preview = self.query_one("#template-preview", Static)
        if name == AUTOMATIC:
            preview.update(Text("The model's own template, or the stand-in chosen for it.", style="italic"))
            return
        try:
            text = render_chat(self.templates[name], SAMPLE, bos_token="<s>", eos_token="</s>")
        except ChattuneError as err:
            text = str(err)
        preview.update(Text(text, style="italic"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._template_of(event.option.id))

    def action_cancel(self) -> None:
        self.dismiss(None)

    @staticmethod
    def _template_of(option_id: str) -> str:
        return AUTOMATIC if option_id == "auto" else option_id.removeprefix("t-")

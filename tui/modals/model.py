"""Pick the chat's model from what `chattune models` lists. Returns its path, or None if cancelled."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from engine.api import ChattuneError, listed_models


class ModelModal(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, workspace_root: Path, current: str | None) -> None:
        super().__init__(classes="modal")
        self.workspace_root = workspace_root
        self.current = current
        self.entries: list[dict] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide"):
            yield Static(Text("Model (what `chattune models` lists)", style="bold"), classes="dialog-title")
            yield OptionList(id="model-list")
            yield Static(Text("Looking for models…", style="italic"), id="model-detail", classes="dialog-prompt")
            yield Static(Text("↑↓ choose · enter load it (the base; adapters are per model) · esc cancel",
                              style="dim"), classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self.run_worker(self._list, thread=True, exit_on_error=False)

    def _list(self) -> None:
        try:
            entries, error = listed_models(self.workspace_root), ""
        except ChattuneError as err:
            entries, error = [], str(err)
        self.app.call_from_thread(self._show, entries, error)

    def _show(self, entries: list[dict], error: str) -> None:
        if not self.is_attached:  # dismissed while the list was being read
            return
        self.entries = entries
        if error or not entries:
            self.query_one("#model-detail", Static).update(Text(error or "No model found.", style="bold red"))
            return
        options = self.query_one(OptionList)
        options.add_options(Option(f"{n:>2} {'● ' if self._is_current(e) else '  '}{e['name']} · {e['source']}",
                                   id=str(n - 1)) for n, e in enumerate(entries, 1))
        options.highlighted = next((i for i, e in enumerate(entries) if self._is_current(e)), 0)

    def _is_current(self, entry: dict) -> bool:
        if self.current is None:
            return entry["source"] == "embedded"
        return Path(entry["path"]) == Path(self.current)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        e = self.entries[int(event.option.id)]
        size = f"{e['size_bytes'] / 2**20:,.0f} MiB"
        swap = {"tested": "hot-swap tested", "converter": "hot-swap via the converter", "no": "no hot-swap"}
        facts = [e["architecture"], size, e["quantization"], f"template {e['template']}",
                 "trains" if e["train"] else "does not train", swap.get(e["hot_swap"], e["hot_swap"]),
                 "exports" if e["export"] else "does not export"]
        detail = Text(" · ".join(facts) + "\n", style="italic")
        detail.append(e["path"] + (f"\n{e['note']}" if e.get("note") else ""), style="dim")
        self.query_one("#model-detail", Static).update(detail)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        # "" for the embedded model: the app then opens it as it does with no --model (None is cancel).
        entry = self.entries[int(event.option.id)]
        self.dismiss("" if entry["source"] == "embedded" else entry["path"])

    def action_cancel(self) -> None:
        self.dismiss(None)

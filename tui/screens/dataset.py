"""The dataset: browse the feedback records, filter by kind and split, view, correct, delete, move split."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Select, Static

from engine.api import KINDS, SPLITS, ChattuneError, StoreError, clip
from tui.messages import StoreChanged
from tui.modals.confirm import ConfirmModal
from tui.modals.correct import CorrectModal
from tui.modals.record import RecordModal, record_details

ALL = "all"
KIND_MARKS = {"approved": "✓", "corrected": "✎", "flagged": "⚑", "preference": "⇄"}
FIXED_WIDTHS = {"id": 4, "kind": 12, "split": 6}  # prompt and answer share the rest


class DatasetScreen(Screen):
    BINDINGS = [
        Binding("escape,d", "close", "chat"),
        Binding("f", "filter", "filter"),
        Binding("v", "view", "view"),
        Binding("e", "edit", "correct"),
        Binding("s", "move_split", "train⇄test"),
        Binding("delete,D", "delete", "delete"),
    ]

    def __init__(self) -> None:
        super().__init__(id="dataset")
        self.records = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="dataset-filters"):
            yield Static(Text("Dataset", style="bold"), id="dataset-title")
            yield Select([("all kinds", ALL), *((kind, kind) for kind in KINDS)], value=ALL, allow_blank=False,
                         compact=True, id="filter-kind")
            yield Select([("all splits", ALL), *((split, split) for split in SPLITS)], value=ALL,
                         allow_blank=False, compact=True, id="filter-split")
            yield Static(id="dataset-count")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="records")
        with VerticalScroll(id="record-preview"):
            yield Static(id="record-details")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.reload()
        self.query_one(DataTable).focus()

    def on_resize(self) -> None:
        self.reload(keep=self._current_id())

    # -- table -------------------------------------------------------------------------------------

    def reload(self, keep: int | None = None) -> None:
        """Read the records again (newest first) and keep the cursor on `keep` if it is still shown."""
        table = self.query_one(DataTable)
        store = self.app.store
        if store is None:
            self.query_one("#dataset-count", Static).update(Text(f"store unavailable: {self.app.store_error}",
                                                                 style="red"))
            return
        kind, split = (self.query_one(f"#filter-{name}", Select).value for name in ("kind", "split"))
        self.records = store.records(kind=None if kind == ALL else kind, split=None if split == ALL else split)
        stats = store.stats()
        learned, held = stats["sft"]["train"], stats["sft"]["test"]
        story = f" · next run learns all {learned}" + (f", {held} held out in test" if held else "")
        self.query_one("#dataset-count", Static).update(Text(f"{len(self.records)} of {stats['total']}{story}",
                                                             style="dim"))
        table.clear(columns=True)
        widths = self._widths()
        for name in ("id", "kind", "split", "prompt", "answer"):
            table.add_column(name, width=widths[name], key=name)
        for r in self.records:
            table.add_row(str(r.id), f"{KIND_MARKS[r.kind]} {r.kind}", r.split + ("*" if r.split_pinned else ""),
                          clip(r.prompt, 120), clip(_answer(r), 120), key=str(r.id))
        ids = [r.id for r in self.records]
        if keep in ids:
            table.move_cursor(row=ids.index(keep))
        self._show_details()

    def _widths(self) -> dict[str, int]:
        # Each column has 1 cell of padding on both sides; leave 2 for the scrollbar.
        free = max(20, self.size.width - sum(FIXED_WIDTHS.values()) - 5 * 2 - 2)
        return {**FIXED_WIDTHS, "prompt": free * 2 // 5, "answer": free - free * 2 // 5}

    def _current(self):
        table = self.query_one(DataTable)
        if not self.records or table.cursor_row is None or not 0 <= table.cursor_row < len(self.records):
            return None
        return self.records[table.cursor_row]

    def _current_id(self) -> int | None:
        record = self._current()
        return record.id if record else None

    def _show_details(self) -> None:
        record = self._current()
        details = self.query_one("#record-details", Static)
        if record is None:
            details.update(Text("No records here yet. In the chat, select a reply and press a, e or f.",
                                style="italic dim"))
        else:
            details.update(record_details(record))

    def on_data_table_row_highlighted(self) -> None:
        self._show_details()

    def on_data_table_row_selected(self) -> None:
        self.action_view()

    def on_select_changed(self) -> None:
        self.reload(keep=self._current_id())

    # -- actions -----------------------------------------------------------------------------------

    def action_close(self) -> None:
        self.dismiss()

    def action_filter(self) -> None:
        self.query_one("#filter-kind", Select).focus()

    def action_view(self) -> None:
        record = self._current()
        if record is not None:
            self.app.push_screen(RecordModal(record))

    def action_edit(self) -> None:
        record = self._current()
        if record is None:
            return
        if record.kind == "preference":
            self.notify("An A/B vote cannot be edited: delete it and vote again.", severity="warning")
            return
        modal = CorrectModal(record.prompt, record.correction or record.reply, title=f"Correct record #{record.id}")
        self.app.push_screen(modal, partial(self._edited, record.id))

    def _edited(self, record_id: int, text: str | None) -> None:
        if text is not None and self._write(lambda store: store.set_correction(record_id, text)):
            self.notify(f"✎ record #{record_id} corrected", markup=False)
            self.reload(keep=record_id)

    def action_move_split(self) -> None:
        record = self._current()
        if record is None:
            return
        split = SPLITS[(SPLITS.index(record.split) + 1) % len(SPLITS)]
        if self._write(lambda store: store.set_split(record.id, split)):
            meaning = ("held out: runs never train on it, the scorecard asks it" if split == "test"
                       else "the next run learns it")
            self.notify(f"record #{record.id} → {split} (pinned): {meaning}", markup=False)
            self.reload(keep=record.id)

    def action_delete(self) -> None:
        record = self._current()
        if record is not None:
            question = f"Delete record #{record.id} ({record.kind})? This cannot be undone."
            self.app.push_screen(ConfirmModal(question), partial(self._delete_confirmed, record.id))

    def _delete_confirmed(self, record_id: int, yes: bool | None) -> None:
        if yes and self._write(lambda store: store.delete(record_id)):
            self.notify(f"record #{record_id} deleted", markup=False)
            row = self.query_one(DataTable).cursor_row
            self.reload()
            if self.records:
                self.query_one(DataTable).move_cursor(row=min(row, len(self.records) - 1))

    def _write(self, change) -> bool:
        """Apply one store change; a failure is shown, never raised."""
        try:
            change(self.app.store)
        except StoreError as err:
            self.notify(f"{err}\nNothing was changed; try again.", title="not changed", severity="error",
                        markup=False)
            return False
        except ChattuneError as err:
            self.notify(str(err), title="not changed", severity="warning", markup=False)
            return False
        self.app.post_message(StoreChanged())
        return True


def _answer(record) -> str:
    if record.kind == "flagged":
        return f"(flagged{': ' + record.reason if record.reason else ''}) {record.reply}"
    return record.answer or ""

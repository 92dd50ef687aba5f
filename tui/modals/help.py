"""Every key, in one place."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("Chatting", (
        ("enter", "send the message"),
        ("shift+enter / ctrl+j", "new line in the message"),
        ("esc", "stop the reply that is streaming; else leave the message box"),
        ("tab", "switch between the message box and the replies"),
        ("ctrl+↑ / ctrl+↓", "select a reply from the message box"),
    )),
    ("On a selected reply", (
        ("↑ ↓ / k j", "select the previous / next reply"),
        ("a", "approve: store it as a good answer"),
        ("e", "correct: edit it into the right answer and store both"),
        ("f", "flag it as wrong, with an optional reason"),
    )),
    ("Anywhere in the chat (outside the message box)", (
        ("b", "switch who answers next: base model or adapter (no reload)"),
        ("c", "compare: the last prompt answered by base and adapter side by side"),
        ("B", "blind compare on/off: sides shuffled, names shown after the vote"),
        ("n", "new conversation"),
        ("s", "choose the system prompt"),
        ("T", "choose the chat template (chat, training and export use it)"),
        ("m", "choose the model from what `chattune models` lists"),
        ("d", "dataset: browse, filter, edit, delete, change split"),
        ("t", "train an adapter on the dataset (while a run goes: cancel it)"),
        ("r", "runs: loss curves and scorecards; enter use a run's adapter, 0 base, R resume, e re-evaluate"),
        ("x", "export a finished run as merged, quantized GGUF files"),
        ("? / f1", "this help"),
        ("ctrl+q", "quit"),
    )),
    ("Compare view", (
        ("1 / [ / ←", "the left reply is better"),
        ("2 / ] / →", "the right reply is better"),
        ("esc", "back to the chat"),
    )),
    ("Status bar", (
        ("✓ ✎ ⚑ ⇄", "approved, corrected, flagged replies and A/B votes in the dataset"),
        ("train · test", "records per split: every example in train is learned; test is an exam you pinned"),
        ("━━━━── 12/40 loss", "a training run: steps done, last loss, time left"),
    )),
)


class HelpModal(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "close")]

    def compose(self) -> ComposeResult:
        parts = []
        for section, rows in KEYS:
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold cyan", no_wrap=True, min_width=22)
            table.add_column()
            for key, what in rows:
                table.add_row(key, what)
            parts += [Text(section, style="bold underline"), table, Text("")]
        with Vertical(classes="dialog dialog-wide"):
            yield Static(Text("chattune keys", style="bold"), classes="dialog-title")
            with VerticalScroll(id="help-body"):
                yield Static(Group(*parts))
            yield Static(Text("esc close", style="dim"), classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)

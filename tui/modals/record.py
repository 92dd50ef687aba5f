"""One dataset record in full: context, reply, correction or reason, and where it came from."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class RecordModal(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "close", "close")]

    def __init__(self, record) -> None:
        super().__init__(classes="modal")
        self.record = record

    def compose(self) -> ComposeResult:
        r = self.record
        with Vertical(classes="dialog dialog-wide"):
            yield Static(Text(f"record #{r.id} · {r.kind} · {r.split}{' (pinned)' if r.split_pinned else ''}",
                              style="bold"), classes="dialog-title")
            with VerticalScroll(id="record-body"):
                yield Static(record_details(r))
                yield Static(Text(f"created {r.created_at} · updated {r.updated_at}", style="dim"))
            yield Static(Text("esc close", style="dim"), classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)


def record_details(r) -> Group:
    """The parts of a record worth reading, labelled; used by the modal and the dataset preview."""
    parts = [_labelled(m["role"], m["content"]) for m in r.messages]
    if r.kind == "preference":
        meta = r.meta
        parts.append(_labelled(f"chosen ({meta.get('chosen_by') or '?'})", r.correction or "", "green"))
        parts.append(_labelled(f"rejected ({meta.get('rejected_by') or '?'})", r.reply, "red"))
        if meta.get("blind"):
            parts.append(Text("voted blind", style="dim"))
    else:
        parts.append(_labelled("reply", r.reply, "green" if r.kind == "approved" else "red"))
        if r.correction:
            parts.append(_labelled("correction", r.correction, "green"))
        if r.reason:
            parts.append(_labelled("reason", r.reason, "yellow"))
    source = " · ".join(x for x in (r.model, f"adapter {r.adapter}" if r.adapter else "") if x)
    if source:
        parts.append(Text(source, style="dim"))
    return Group(*parts)


def _labelled(label: str, text: str, style: str = "cyan") -> Text:
    out = Text()
    out.append(f"{label}: ", style=f"bold {style}")
    out.append(text)
    return out

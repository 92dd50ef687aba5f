"""The export dialog: a finished run, the quantization types and an optional output folder; then the
export's progress (a child process: merge, convert, quantize, verify, package) and where it went."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, ProgressBar, Select, Static

from engine.api import (
    DEFAULT_QUANTS,
    QUANTS,
    ChattuneError,
    export_events,
    list_runs,
    start_export,
)
from tui.background import follow
from tui.modals.confirm import ConfirmModal


def finished_runs(workspace) -> list[str]:
    """Runs that can be exported (finished, with a peft adapter), newest first."""
    return [info.name for info in reversed(list_runs(workspace)) if info.status == "done" and info.adapter]


def agreement_line(agreement, with_ties=None) -> str:
    """verify's agreement with the adapter's replies, per quantization type, and counting near ties
    (replies the adapter itself was undecided about) where they add something."""
    if not agreement:
        return "–"
    with_ties = with_ties or {}

    def rate(quant: str, value: float) -> str:
        tied = with_ties.get(quant)
        return f"{quant} {100 * value:.0f}%" + (f" ({100 * tied:.0f}% with near ties)" if tied and tied > value else "")

    return "same replies as the adapter: " + ", ".join(rate(quant, value) for quant, value in agreement.items())


class ExportModal(ModalScreen[None]):
    # The verification's size (None: the engine's defaults); tests make it small.
    verify_prompts: int | None = None
    verify_max_tokens: int | None = None
    BINDINGS = [
        Binding("ctrl+s", "start", "export"),
        Binding("escape", "close", "close / cancel"),
    ]

    def __init__(self, workspace, run: str | None = None) -> None:
        super().__init__(classes="modal", id="export-modal")
        self.workspace = workspace
        self.runs = finished_runs(workspace)
        self.run = run if run is not None else (self.runs[0] if self.runs else None)
        self.handle = None
        self.outcome: export_events.ExportEvent | None = None  # the terminal event
        self.warnings: list[str] = []

    @property
    def running(self) -> bool:
        return self.handle is not None and self.outcome is None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="export-dialog"):
            yield Static(Text("Export a run as GGUF (merged, quantized, verified)", style="bold"),
                         classes="dialog-title")
            with Horizontal(classes="export-row"):
                yield Static("run", classes="export-label")
                options = [(name, name) for name in self.runs]
                if self.run is not None and self.run not in self.runs:
                    options.append((self.run, self.run))
                yield Select(options, value=self.run if self.run is not None else Select.NULL, compact=True,
                             prompt="no finished run", id="export-run")
            with Horizontal(id="export-quants"):
                for name in QUANTS:
                    yield Checkbox(name, name in DEFAULT_QUANTS, compact=True, id=f"quant-{name}")
            with Horizontal(classes="export-row"):
                yield Static("folder", classes="export-label")
                yield Input(placeholder="default: exports/RUN-DATE", compact=True, id="export-out")
            yield Static(id="export-about")
            yield ProgressBar(total=1.0, show_eta=False, id="export-progress")
            yield Static(id="export-stage")
            yield Static(id="export-result")
            with Horizontal(id="export-buttons"):
                yield Button("Export", variant="primary", compact=True, id="export-start")
                yield Static(Text("ctrl+s export · esc close (cancels a running export)", style="dim"),
                             classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#export-progress").display = False
        if not self.runs and self.run is None:
            self._result(Text("No finished training run to export yet: train one with t.", style="bold red"))
        self._about()
        self.query_one("#export-run", Select).focus()

    def _about(self) -> None:
        chosen = self.quants()
        self.query_one("#export-about", Static).update(Text(
            " · ".join(f"{q}: {QUANTS[q].about}" for q in chosen) if chosen else "choose at least one type",
            style="dim"))

    def on_checkbox_changed(self) -> None:
        self._about()

    def quants(self) -> list[str]:
        return [name for name in QUANTS if self.query_one(f"#quant-{name}", Checkbox).value]

    # -- starting ----------------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-start":
            self.action_start()

    def on_input_submitted(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        if self.running:
            return
        run = self.query_one("#export-run", Select).value
        run = None if run is Select.NULL else str(run)
        quants = self.quants()
        if not quants:
            self._result(Text("Choose at least one quantization type.", style="bold red"))
            return
        out = self.query_one("#export-out", Input).value.strip() or None
        try:
            handle = start_export(self.workspace, run, quants, out, prompts=self.verify_prompts,
                                  max_tokens=self.verify_max_tokens)
        except ChattuneError as err:
            self._result(Text(str(err), style="bold red"))
            return
        except OSError as err:
            self._result(Text(f"{type(err).__name__}: {err}", style="bold red"))
            return
        self.handle, self.outcome, self.warnings = handle, None, []
        for widget in self.query("#export-dialog Select, #export-dialog Checkbox, #export-dialog Input, "
                                 "#export-start"):
            widget.disabled = True
        bar = self.query_one("#export-progress", ProgressBar)
        bar.display = True
        bar.update(progress=0)
        self._result(Text(f"exporting {handle.plan.run} to {handle.out_dir}", style="dim"))
        follow(self.app, f"export-{handle.name}", handle.events, partial(self._on_event, handle),
               partial(self._ended, handle))

    # -- following (UI thread) ---------------------------------------------------------------------

    def _on_event(self, handle, event: export_events.ExportEvent) -> None:
        if isinstance(event, export_events.ExportStage):  # a progress event is one too
            self.query_one("#export-progress", ProgressBar).update(progress=event.fraction)
            self.query_one("#export-stage", Static).update(Text(f"{event.stage}: {event.message}", style="italic"))
        elif isinstance(event, export_events.ExportWarning):
            self.warnings.append(event.message)
        elif isinstance(event, export_events.ExportDone):
            self.outcome = event
            self.query_one("#export-progress", ProgressBar).update(progress=1.0)
            self.query_one("#export-stage", Static).update("")
            text = Text("Exported to ", style="bold green")
            text.append(event.out, style="bold")
            text.append(f"\n{', '.join(event.ggufs.values())}")
            text.append("\nverify: " + agreement_line(event.agreement, event.agreement_with_ties)
                        + (" ✓" if event.verified else " (see verify.json)"))
            for problem in event.problems[:3]:
                text.append(f"\n⚠ {problem}", style="yellow")
            self._result(text)
            self.app.notify(f"Exported to {event.out}", title="export done", markup=False)
        elif isinstance(event, export_events.ExportError):
            self.outcome = event
            self._result(Text(f"Export failed ({event.stage or 'start'}): {event.message}\n"
                              f"log: {event.log or handle.log_path}", style="bold red"))
        elif isinstance(event, export_events.ExportCancelledEvent):
            self.outcome = event
            self._result(Text("Export cancelled; its folder was removed.", style="yellow"))

    def _ended(self, handle, error: Exception | None) -> None:
        if error is not None:
            self.outcome = self.outcome or export_events.ExportError(message=str(error))
            self._result(Text(f"{type(error).__name__}: {error}\nlog: {handle.log_path}", style="bold red"))
        for widget in self.query("#export-dialog Select, #export-dialog Checkbox, #export-dialog Input, "
                                 "#export-start"):
            widget.disabled = False

    def _result(self, text: Text) -> None:
        self.query_one("#export-result", Static).update(text)

    # -- leaving -----------------------------------------------------------------------------------

    def action_close(self) -> None:
        if not self.running:
            self.dismiss(None)
            return
        self.app.push_screen(ConfirmModal("Cancel the export? Its half-made folder is removed."), self._cancel)

    def _cancel(self, yes: bool | None) -> None:
        if yes and self.running:
            self.handle.cancel()
            self.query_one("#export-stage", Static).update(Text("cancelling…", style="italic"))

"""The runs: a table of every training run with its scorecard figures; the selected run's loss
curves, config and scorecard. Use a run's adapter in the chat, go back to the base, resume a stopped
run, or evaluate a run again."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plotext import PlotextPlot

from engine.api import RunInfo, list_runs, number, percent, runs_stamp, start_evaluation, summary_rows
from tui.background import follow
from tui.widgets.status_bar import StatusBar

# learned: taught recall · recall on rewordings never trained on (engine/evaluate/recall.py)
COLUMNS = ("run", "status", "method", "ex", "steps", "loss", "eval", "learned", "held-out", "kept", "verdict", "A/B")
STATUS_STYLE = {"done": "green", "running": "bold magenta", "failed": "red", "cancelled": "yellow",
                "interrupted": "yellow"}


class RunsScreen(Screen):
    BINDINGS = [
        Binding("escape,r", "close", "chat"),
        Binding("enter", "use", "use adapter", priority=True),
        Binding("0", "base", "base"),
        Binding("R", "resume", "resume"),
        Binding("e", "evaluate", "re-eval"),
    ]

    def __init__(self) -> None:
        super().__init__(id="runs")
        self.runs: list[RunInfo] = []
        self.rows: dict[str, dict] = {}
        self.evaluating: set[str] = set()

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield DataTable(cursor_type="row", zebra_stripes=True, id="runs-table")
        with Horizontal(id="run-detail"):
            yield PlotextPlot(id="run-plot")
            with VerticalScroll(id="run-info"):
                yield Static(id="run-text")
        yield Footer(compact=True, show_command_palette=False)

    _stamp: tuple = ()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.reload()
        table.focus()
        self.set_interval(2.0, self._tick)

    def _tick(self) -> None:
        """While a run trains, its row and curves follow it (re-read only when it wrote something)."""
        if not (self.app.trainer.active and self.app.screen is self):
            return
        stamp = runs_stamp(self.app.workspace)
        if stamp != self._stamp:
            self._stamp = stamp
            self.reload()

    # -- the table ---------------------------------------------------------------------------------

    def reload(self) -> None:
        keep = self.current.name if self.current else None
        workspace = self.app.workspace
        self.runs = list(reversed(list_runs(workspace)))  # newest first
        try:
            self.rows = {row["run"]: row for row in summary_rows(workspace)}
        except Exception as err:  # noqa: BLE001 -- a damaged scorecard must not hide the runs
            self.rows = {}
            self.notify(f"{type(err).__name__}: {err}", title="scorecards unreadable", severity="warning",
                        markup=False)
        table = self.query_one(DataTable)
        table.clear()
        for info in self.runs:
            table.add_row(*self._cells(info), key=info.name)
        names = [info.name for info in self.runs]
        if keep in names:
            table.move_cursor(row=names.index(keep))
        self.show_current()

    def _cells(self, info: RunInfo) -> list:
        row = self.rows.get(info.name)
        status = "evaluating" if info.name in self.evaluating else info.status
        cells = [Text(info.name), Text(status, style=STATUS_STYLE.get(status, "")), info.method,
                 str(info.examples), f"{info.step}/{info.max_steps}" if info.max_steps else str(info.step or "–"),
                 number(info.final_loss), number(info.eval_loss)]
        if row is None:
            return cells + ["–", "–", "–", "–", "–"]
        learned = f"{row['taught']}/{row['taught_n']}"
        if row["reworded_n"]:
            learned += f"·{row['reworded']}/{row['reworded_n']}"
        if not row["heldout_n"]:
            heldout = "–"
        elif row["base_f1"] is not None or row["adapter_f1"] is not None:
            heldout = f"{number(row['base_f1'])}→{number(row['adapter_f1'])}"
        else:
            heldout = f"{percent(row['base_exact'])}→{percent(row['adapter_exact'])}"
        verdict = Text(row["verdict"], style="green" if row["verdict"] == "good" else "yellow")
        ab = f"{percent(row['win_rate'])}/{row['votes']}" if row["votes"] else "–"
        return cells + [learned, heldout, percent(row["forgetting_score"]), verdict, ab]

    @property
    def current(self) -> RunInfo | None:
        table = self.query_one(DataTable)
        if not self.runs or table.cursor_row is None or not 0 <= table.cursor_row < len(self.runs):
            return None
        return self.runs[table.cursor_row]

    def on_data_table_row_highlighted(self) -> None:
        self.show_current()

    def on_data_table_row_selected(self) -> None:
        self.action_use()

    def show_current(self) -> None:
        info = self.current
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        text = self.query_one("#run-text", Static)
        if info is None:
            text.update(Text("No training runs yet. In the chat, judge some replies, then press t.",
                             style="italic dim"))
            plot.refresh()
            return
        plt.title("loss")
        if info.losses:
            plt.plot([s for s, _ in info.losses], [v for _, v in info.losses], label="train", marker="braille")
        if info.eval_losses:
            plt.plot([s for s, _ in info.eval_losses], [v for _, v in info.eval_losses], label="val",
                     marker="braille")
        if not info.losses and not info.eval_losses:
            plt.title("loss: no steps yet")
        plot.refresh()
        text.update(run_details(info, self.rows.get(info.name)))

    # -- actions -----------------------------------------------------------------------------------

    def action_close(self) -> None:
        self.dismiss()

    def action_use(self) -> None:
        info = self.current
        if info is None:
            return
        if info.status != "done" or not (info.adapter or info.gguf):
            self.notify(f"Run {info.name} has no adapter ({info.status}).", severity="warning", markup=False)
            return
        if not self.app.engine_ready(tell=True):
            return
        self.app.hot_swap(info.name, activate=True, announce=f"Adapter {info.name} answers next.")

    def action_base(self) -> None:
        if self.app.engine_ready(tell=True):
            self.app.use_adapter(None)

    def action_resume(self) -> None:
        info = self.current
        if info is None:
            return
        if info.status not in ("cancelled", "interrupted", "failed"):
            self.notify(f"Run {info.name} is {info.status}: only a cancelled, interrupted or failed run resumes.",
                        severity="warning", markup=False)
            return
        if self.app.trainer.active:
            self.notify("A run is training already: one at a time.", severity="warning")
            return
        self.app.trainer.resume(info.name)
        self.notify(f"Resuming run {info.name}" + ("" if info.resumable else " from the start (no checkpoint)")
                    + "…", markup=False)
        self.set_timer(1.0, self.reload)

    def action_evaluate(self) -> None:
        info = self.current
        if info is None or info.name in self.evaluating:
            return
        if info.status != "done":
            self.notify(f"Run {info.name} has not finished: nothing to evaluate.", severity="warning",
                        markup=False)
            return
        self.evaluating.add(info.name)
        self.reload()
        self.notify(f"Evaluating {info.name} in the background (a minute or two)…", markup=False)
        workspace = self.app.workspace

        def evaluation():  # background thread: start the child, wait for it
            handle = start_evaluation(workspace, info.name)
            return [(handle, handle.wait())]

        follow(self.app, f"eval-{info.name}", evaluation, partial(self._evaluated, info.name),
               partial(self._eval_ended, info.name))

    def _evaluated(self, name: str, ended: tuple) -> None:
        handle, code = ended
        self.evaluating.discard(name)
        if code == 0:
            self.app.notify(f"Run {name}: scorecard updated.", title="evaluation", markup=False)
        else:
            self.app.notify(f"The evaluation of {name} failed (status {code}): {handle.last_line()}\n"
                            f"log: {handle.log_path}", title="evaluation failed", severity="error", timeout=30,
                            markup=False)
        if self in self.app.screen_stack:
            self.reload()

    def _eval_ended(self, name: str, error: Exception | None) -> None:
        if error is not None:
            self.evaluating.discard(name)
            self.app.notify(str(error), title="evaluation failed", severity="error", timeout=30, markup=False)


def run_details(info: RunInfo, row: dict | None) -> Text:
    config = info.config
    text = Text(info.name, style="bold")
    text.append(f"  {info.status}", style=STATUS_STYLE.get(info.status, ""))
    if info.message:
        text.append(f"\n{info.message}", style="red" if info.status == "failed" else "yellow")
    text.append(f"\nbase {info.base or '?'}\n", style="dim")
    if config:
        text.append(f"{config.get('method', '?').upper()} · {config.get('preset', '?')} · "
                    f"{config.get('epochs', '?')} epochs · lr {config.get('learning_rate', 0) or 0:.2g}\n"
                    f"LoRA r {config.get('lora_r')} α {config.get('lora_alpha')} · batch {config.get('batch_size')}"
                    f" · seq {config.get('max_seq_len')} · seed {config.get('seed')}\n")
    text.append(f"{info.examples} of your examples · {info.val_examples} validation rows (rewordings, replay)\n")
    text.append(f"loss {number(info.final_loss)} · eval loss {number(info.eval_loss)}")
    if info.elapsed_s:
        text.append(f" · {info.elapsed_s / 60:.1f} min")
    if row is None:
        text.append("\nno scorecard" + (": e evaluates it" if info.status == "done" else ""), style="dim")
        return text
    text.append("\nverdict ", style="bold")
    text.append(row["verdict"], style="green" if row["verdict"] == "good" else "yellow")
    text.append(f": {row['reason']}\n")
    text.append(f"learned: taught {row['taught']}/{row['taught_n']}, other wordings never trained on "
                f"{row['reworded']}/{row['reworded_n']}\n")
    text.append(f"held-out ({row['heldout_n']}): F1 {number(row['base_f1'])} → {number(row['adapter_f1'])}, "
                f"exact {percent(row['base_exact'])} → {percent(row['adapter_exact'])}\n")
    text.append(f"forgetting: kept {row['kept']}/{row['general_n']} ({percent(row['forgetting_score'])}), "
                f"{row['broken']} broken\n")
    text.append(f"A/B: {percent(row['win_rate'])} of {row['votes']} votes" if row["votes"] else "A/B: no votes yet")
    if not row.get("current", True):
        text.append("\n(scorecard of an older adapter: e evaluates again)", style="yellow")
    return text


"""The training dialog: method, preset and overrides, with the plan (example counts, time estimate,
warnings) recomputed as they change. Returns the TrainConfig to start, or None.

Planning reads the store and every earlier run's files, so it runs on a worker thread, once typing
pauses (PLAN_DELAY_S): keystrokes never wait for it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Select, Static

from engine.api import (
    METHODS,
    PRESETS,
    ChattuneError,
    Plan,
    TrainConfig,
    guess_device,
    plan_run,
    training_line,
)

# field: (label, type); empty means "from the preset" (epochs, learning rate, rank, alpha)
FIELDS = {
    "epochs": ("epochs", float),
    "learning_rate": ("learning rate", float),
    "lora_r": ("LoRA rank", int),
    "lora_alpha": ("LoRA alpha", int),
    "batch_size": ("batch size", int),
    "max_seq_len": ("max seq len", int),
    "seed": ("seed", int),
    "augment": ("rewordings", int),  # per example, 0: none (the learning recipe, engine/train/mix.py)
    "replay": ("replay share", float),  # 0: none
}
FROM_PRESET = ("epochs", "learning_rate", "lora_r", "lora_alpha")
PLAN_DELAY_S = 0.3  # plan once the keys have paused this long


class TrainModal(ModalScreen[TrainConfig | None]):
    BINDINGS = [
        Binding("ctrl+s", "start", "start"),
        Binding("escape", "cancel", "cancel"),
    ]

    def __init__(self, workspace, model_arg: str | None) -> None:
        super().__init__(classes="modal", id="train-modal")
        self.workspace = workspace
        self.model_arg = model_arg
        self.plan: Plan | None = None
        self.config: TrainConfig | None = None
        self.error = ""
        self.planning = False  # a change is waiting for its plan: Start waits too
        self._asked = 0  # how many plans were asked for: only the answer to the last one is shown
        self._values: TrainConfig | str | None = None  # what the last plan was asked for
        self._timer = None
        self._start_when_planned = False

    def compose(self) -> ComposeResult:
        defaults = TrainConfig()
        with Vertical(classes="dialog", id="train-dialog"):
            yield Static(Text("Train an adapter on your feedback", style="bold"), classes="dialog-title")
            with Grid(id="train-fields"):
                yield Static("method")
                yield Select([(m.upper(), m) for m in METHODS], value=defaults.method, allow_blank=False,
                             compact=True, id="method")
                yield Static("preset")
                yield Select([(p, p) for p in PRESETS], value=defaults.preset, allow_blank=False, compact=True,
                             id="preset")
                for name, (label, _kind) in FIELDS.items():
                    value = "" if name in FROM_PRESET else str(getattr(defaults, name))
                    yield Static(label)
                    yield Input(value, compact=True, id=name, select_on_focus=False,
                                placeholder="from the preset" if name in FROM_PRESET else "")
                yield Checkbox("QLoRA (4-bit)", guess_device(defaults) == "cuda", compact=True, id="qlora")
                yield Checkbox("evaluate after", defaults.evaluate, compact=True, id="evaluate")
            yield Static(id="train-plan")
            yield Static(id="train-error")
            with Horizontal(id="train-buttons"):
                yield Button("Start", variant="primary", compact=True, id="train-start")
                yield Button("Cancel", compact=True, id="train-cancel")
                yield Static(Text("ctrl+s start · esc cancel", style="dim"),
                             classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#method", Select).focus()
        self.recompute()  # the dialog opens with its plan (one read, before the first paint)

    # -- the plan ----------------------------------------------------------------------------------

    def read_config(self) -> TrainConfig:
        """The dialog's values as a TrainConfig; ChattuneError names the first bad one."""
        values: dict = {}
        for name, (label, kind) in FIELDS.items():
            raw = self.query_one(f"#{name}", Input).value.strip()
            if not raw:
                if name in FROM_PRESET:
                    continue
                raise ChattuneError(f"{label} is empty", "fill it in")
            try:
                values[name] = kind(raw)
            except ValueError:
                raise ChattuneError(f"{label}: {raw!r} is not {'a whole number' if kind is int else 'a number'}",
                                    "fix it") from None
        return TrainConfig(
            method=self.query_one("#method", Select).value, preset=self.query_one("#preset", Select).value,
            quantization="4bit" if self.query_one("#qlora", Checkbox).value else "none",
            evaluate=self.query_one("#evaluate", Checkbox).value, **values)

    def recompute(self) -> None:
        self._values = self.read_config_or_error()
        self._planned(self._asked, *self._plan(self._values))

    def replan_soon(self) -> None:
        """UI thread, on every change: plan once the changes pause, on a worker thread."""
        if self.read_config_or_error() == self._values:
            return  # nothing that the plan depends on changed (the widgets' first events say so)
        self.planning = True
        self._asked += 1
        self._show_start()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(PLAN_DELAY_S, self._replan)

    def _replan(self) -> None:
        self._timer = None
        asked, config = self._asked, self.read_config_or_error()
        self._values = config
        self.run_worker(lambda: self.app.call_from_thread(self._planned, asked, *self._plan(config)),
                        thread=True, group="plan", exit_on_error=False)

    def read_config_or_error(self) -> TrainConfig | str:
        try:
            return self.read_config()
        except ChattuneError as err:
            return str(err)

    def _plan(self, config: TrainConfig | str) -> tuple[Plan | None, TrainConfig | None, str]:
        """Any thread: (plan, config, error) for the dialog's values."""
        if isinstance(config, str):
            return None, None, config
        try:
            return plan_run(self.workspace, config, self.model_arg), config, ""
        except ChattuneError as err:
            return None, None, str(err)
        except Exception as err:  # noqa: BLE001 -- a broken store or model file: say so, stay open
            return None, None, f"{type(err).__name__}: {err}"

    def _planned(self, asked: int, plan: Plan | None, config: TrainConfig | None, error: str) -> None:
        if asked != self._asked or not self.is_attached:
            return  # a later change is on its way, or the dialog has closed
        self.plan, self.config, self.error, self.planning = plan, config, error, False
        self._show()
        if self._start_when_planned:
            self._start_when_planned = False
            self.action_start()

    def _show(self) -> None:
        plan_view = self.query_one("#train-plan", Static)
        error_view = self.query_one("#train-error", Static)
        if self.plan is None:
            plan_view.update("")
        else:
            text = Text(self.plan.summary())
            resolved = self.plan.config
            text.append(f"\nLoRA r {resolved.lora_r} / alpha {resolved.lora_alpha}, learning rate "
                        f"{resolved.learning_rate:.2g}, base {self.plan.base_name}", style="dim")
            text.append(f"\n{training_line(quantization=resolved.quantization)}", style="dim")  # as `chattune doctor`
            for warning in self.plan.warnings:
                text.append(f"\n⚠ {warning}", style="yellow")
            plan_view.update(text)
            for name in FROM_PRESET:
                value = getattr(resolved, name)
                self.query_one(f"#{name}", Input).placeholder = f"preset: {value:.2g}" if isinstance(value, float) \
                    and name == "learning_rate" else f"preset: {value:g}"
        if self.error:
            error_view.update(Text(self.error, style="bold red"))
        elif self.plan is not None and self.plan.examples == 0:
            what = "approve or correct replies" if self.plan.method == "sft" else "correct replies or vote in A/B"
            error_view.update(Text(f"Nothing to train on yet: {what} first.", style="bold red"))
        else:
            error_view.update("")
        self._show_start()

    def _show_start(self) -> None:
        self.query_one("#train-start", Button).disabled = not self.ready

    @property
    def ready(self) -> bool:
        return not self.planning and self.config is not None and self.plan is not None and self.plan.examples > 0

    def on_input_changed(self) -> None:
        self.replan_soon()

    def on_select_changed(self) -> None:
        self.replan_soon()

    def on_checkbox_changed(self) -> None:
        self.replan_soon()

    # -- leaving -----------------------------------------------------------------------------------

    def on_input_submitted(self) -> None:
        self.action_start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "train-start":
            self.action_start()
        else:
            self.action_cancel()

    def action_start(self) -> None:
        if self.planning:
            self._start_when_planned = True  # ctrl+s right after a keystroke: start once planned
        elif self.ready:
            self.dismiss(self.config)
        else:
            self.app.bell()

    def action_cancel(self) -> None:
        self.dismiss(None)

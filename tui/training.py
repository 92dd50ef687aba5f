"""Training from the app: start, follow, cancel and resume runs, and hot-swap the new adapter.

The child process does the work (engine.train.runner); this follows its events on a daemon thread
and turns them into the status bar's TrainingState, toasts and, on `done`, an adapter load into the
live engine. A run outlives the app: quitting leaves it training, and the next start attaches to it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

from engine.api import (
    ChattuneError,
    TrainConfig,
    attach_run,
    evaluates_after_training,
    resolve_adapter,
    resume_run,
    start_run,
    training_events,
    training_run,
)
from tui.background import follow
from tui.labels import adapter_of
from tui.messages import EngineChanged
from tui.widgets.status_bar import TrainingState

ACTIVE = ("starting", "preparing", "training", "evaluating")
PHASES = {"base": "preparing", "load": "preparing", "save": "training", "gguf": "training", "eval": "evaluating"}


class Trainer:
    """The one run the app follows (one per workspace: the engine's lock sees to that)."""

    def __init__(self, app) -> None:
        self.app = app
        self.handle = None  # RunHandle / AttachedRun while following
        self.state = TrainingState()
        self._quiet_before = 0.0  # an attached run replays its history: no toasts for what is old
        self.evaluates = True  # the child evaluates the adapter after `done`

    @property
    def active(self) -> bool:
        return self.state.phase in ACTIVE

    # -- starting ----------------------------------------------------------------------------------

    def start(self, config: TrainConfig) -> None:
        self._set(TrainingState(phase="starting", message="snapshotting the dataset"))
        self.app.start_worker(partial(self._start, lambda: start_run(self.app.workspace, config,
                                                                     self.app.model_arg)), name="train")

    def resume(self, name: str) -> None:
        self._set(TrainingState(phase="starting", run=name, message="resuming"))
        self.app.start_worker(partial(self._start, lambda: resume_run(self.app.workspace, name)), name="train")

    def _start(self, spawn) -> None:
        """Worker thread: spawn the child (snapshots the store), then follow it."""
        try:
            handle = spawn()
        except ChattuneError as err:
            self.app.call_from_thread(self._refused, str(err))
            return
        except Exception as err:
            self.app.call_from_thread(self._refused, f"{type(err).__name__}: {err}")
            return
        self.app.call_from_thread(self._follow, handle)

    def _refused(self, message: str) -> None:
        self._set(TrainingState(phase="failed", message=message))
        self.app.notify(message, title="training not started", severity="error", timeout=20, markup=False)

    def attach_running(self) -> None:
        """At app start: follow the run that is training in this workspace, if one is."""
        running = training_run(self.app.workspace)
        if running is None:
            return
        try:
            handle = attach_run(self.app.workspace, running)
        except ChattuneError:
            return  # it ended between the two looks
        self._quiet_before = time.time()
        self._set(TrainingState(phase="preparing", run=handle.name, message="attached"))
        self.app.notify(f"Run {handle.name} is training in the background: following it. t cancels it.",
                        title="training", markup=False)
        self._follow(handle)

    def _follow(self, handle) -> None:
        self.handle = handle
        self.evaluates = evaluates_after_training(handle.run_dir)
        self._set(replace(self.state, run=handle.name))
        follow(self.app, f"train-{handle.name}", handle.events, partial(self._on_event, handle),
               partial(self._ended, handle))

    # -- cancelling --------------------------------------------------------------------------------

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self._set(replace(self.state, message="cancelling: saving a checkpoint"))

    # -- events (UI thread) --------------------------------------------------------------------------

    def _on_event(self, handle, event: training_events.TrainEvent) -> None:
        if handle is not self.handle:
            return
        state = self.state
        loud = (event.t if event.t is not None else time.time()) >= self._quiet_before
        name = handle.name
        if isinstance(event, training_events.Status):
            phase = PHASES.get(event.phase, state.phase)
            if state.phase == "training" and phase == "preparing":
                phase = "training"
            self._set(replace(state, phase=phase, message=event.message))
        elif isinstance(event, training_events.Start):
            self._set(replace(state, phase="training", step=event.step, max_steps=event.max_steps or 0, message=""))
        elif isinstance(event, training_events.Step):
            self._set(replace(state, phase="training", step=state.step if event.step is None else event.step,
                              max_steps=event.max_steps or state.max_steps,
                              loss=state.loss if event.loss is None else event.loss, eta_s=event.eta_s,
                              tokens_per_s=event.tokens_per_s))
        elif isinstance(event, training_events.EvalLoss):
            self._set(replace(state, eval_loss=event.eval_loss))
        elif isinstance(event, training_events.TrainWarning) and loud:
            self.app.notify(event.message, title=f"run {name}: {event.kind or 'warning'}",
                            severity="warning", timeout=15, markup=False)
        elif isinstance(event, training_events.Done):
            self._set(replace(state, phase="evaluating" if self.evaluates else "training",
                              step=state.max_steps or state.step, eta_s=0))
            self.app.hot_swap(name, announce=f"Run {name} finished: its adapter is loaded, press b to talk to it.")
        elif isinstance(event, training_events.Scorecard) and loud:
            self.app.notify(scorecard_line(event), title=f"run {name} evaluated",
                            severity="warning" if event.verdict not in ("good", None) else "information",
                            timeout=20, markup=False)
        elif isinstance(event, training_events.Cancelled):
            self._set(TrainingState(phase="cancelled", run=name))
            if loud:
                self.app.notify(f"Run {name} cancelled; resume it from the runs screen (r, then R).",
                                title="training", markup=False)
        elif isinstance(event, training_events.Failed):
            self._set(TrainingState(phase="failed", run=name, message=event.message))
            self.app.notify(f"{event.message}\nlog: {event.log or handle.log_path}",
                            title=f"run {name} failed", severity="error", timeout=60, markup=False)

    def _ended(self, handle, error: Exception | None) -> None:
        if handle is not self.handle:
            return
        self.handle = None
        if error is not None:
            self._set(TrainingState(phase="failed", run=handle.name, message=str(error)))
            self.app.notify(f"{type(error).__name__}: {error}\nlog: {handle.log_path}",
                            title=f"lost track of run {handle.name}", severity="error", timeout=60, markup=False)
        elif self.active:
            self._set(TrainingState(phase="idle", run=handle.name))

    def _set(self, state: TrainingState) -> None:
        ended = self.state.phase in ACTIVE and state.phase not in ACTIVE
        self.state = state
        self.app.refresh_status(store_changed=False)
        if ended:
            self.app.runs_changed()


def scorecard_line(event: training_events.Scorecard) -> str:
    def f1(value) -> str:
        return "–" if value is None else f"{value:.2f}"

    kept = event.forgetting_score
    return (f"verdict: {event.verdict} ({event.reason}); held-out F1 {f1(event.base_f1)} → "
            f"{f1(event.adapter_f1)}; general answers kept: "
            f"{'–' if kept is None else f'{100 * kept:.0f}%'}")


def swap_in(app, name: str) -> str:
    """Worker thread: load adapter `name` into the engine (no reload of the base). Returns the name."""
    ref = resolve_adapter(app.workspace, name)
    with app.engine_lock:
        app.engine.load_adapter(ref)
    return ref.name


def switched(app, name: str, activate: bool | None, announce: str | None) -> None:
    """UI thread, after swap_in: `name` becomes the B side; it answers next if `activate`, or (None)
    if an adapter was answering already."""
    app.b_side = name
    speaking = adapter_of(app.engine.which())
    if activate or (activate is None and speaking is not None):
        try:
            app.engine.set_adapter(name)
        except ChattuneError as err:
            app.notify(str(err), title="adapter", severity="error", markup=False)
    app.post_message(EngineChanged())
    if announce:
        app.notify(announce, title="adapter loaded", timeout=15, markup=False)

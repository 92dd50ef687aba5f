"""Training, runs and export from the chat app (Pilot, FakeEngine): the t dialog and its plan, a real
run of the tiny model hot-swapped into the chat, a killed run, the runs screen, the export dialog."""

from __future__ import annotations

import json
import time

import pytest
from fake_engine import FakeEngine
from test_tui import Notices, running, send
from textual.widgets import Button, Checkbox, DataTable, Input

from engine import runlock
from engine.events import TRAINING_EVENTS, Done, Scorecard, Status
from engine.train.config import TrainConfig
from tui.modals.export import ExportModal
from tui.modals.train import TrainModal
from tui.screens.chat import ChatScreen
from tui.screens.runs import RunsScreen
from tui.widgets.status_bar import TrainingState, training_text

pytestmark = pytest.mark.anyio
TRAIN_GUARD_S = 600  # a real child process on a busy 2-core machine: only against a hang


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def wait_for(pilot, predicate, what: str, timeout: float = TRAIN_GUARD_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await pilot.pause(0.05)


def status_text(app, widget: str = "#status-training") -> str:
    return str(app.screen.query_one(widget).render())


def write_run(workspace, name: str, *, status: str = "done", created: str = "2025-01-01T10:00:00+00:00",
              losses=((1, 2.31), (2, 1.84), (3, 1.42), (4, 1.18), (5, 0.97), (6, 0.86)),
              evals=((3, 1.95), (6, 1.61)), card: bool = False):
    """A run folder as training leaves it (config.json, metrics.jsonl, an adapter when done)."""
    run = workspace.run_dir(name)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "name": name, "created_at": created, "config": TrainConfig(epochs=2, batch_size=4).resolved(12).to_dict(),
        "base": {"name": "SmolLM2-135M-Instruct"}, "snapshot": {"counts": {"sft-train": 12, "sft-val": 3}}}))
    events = [{"event": "start", "t": 1, "examples": 12, "val_examples": 3, "max_steps": 6}]
    for step, loss in losses:
        events.append({"event": "step", "t": 1 + step, "step": step, "max_steps": 6, "loss": loss})
        for at, eval_loss in evals:
            if at == step:
                events.append({"event": "eval", "t": 1 + step, "step": step, "eval_loss": eval_loss})
    if status == "done":
        events.append({"event": "done", "t": 20, "adapter": str(run / "adapter"), "gguf": str(run / "adapter.gguf"),
                       "final_loss": losses[-1][1], "eval_loss": evals[-1][1], "elapsed_s": 95.0})
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text("{}")
        (run / "adapter.gguf").write_bytes(b"GGUF")
    elif status == "cancelled":
        events.append({"event": "cancelled", "t": 20, "step": losses[-1][0], "checkpoint": None})
    elif status == "failed":
        events.append({"event": "error", "t": 20, "message": "out of memory", "log": str(run / "train.log")})
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if card:
        (run / "scorecard.json").write_text(json.dumps({
            "version": 2, "run": name,
            "learning": {"taught": {"n": 5, "recalled": 5, "rate": 1.0},
                         "reworded": {"n": 5, "recalled": 4, "rate": 0.8}},
            "heldout": {"n": 5, "base": {"exact_match": 0.2, "f1": 0.31, "loglik": -2.1},
                        "adapter": {"exact_match": 0.6, "f1": 0.72, "loglik": -1.2}},
            "forgetting": {"score": 0.9, "kept": 9, "n": 10, "broken": 1},
            "verdict": {"label": "good", "reason": "eval loss went down with the train loss"},
            "ab": {"votes": 0, "wins": 0, "losses": 0, "blind": 0, "win_rate": None}}))
    return run


def record_states(app) -> list[TrainingState]:
    """Every TrainingState the status bar was given."""
    seen: list[TrainingState] = []
    original = app.trainer._set

    def spy(state):
        seen.append(state)
        original(state)

    app.trainer._set = spy
    return seen


# --- the status bar ---------------------------------------------------------------------------------


def test_training_progress_fits_the_status_row():
    text = training_text(TrainingState(phase="training", run="sft-20250101-120000", step=123, max_steps=4567,
                                       loss=1.23456, eta_s=7322))
    assert "123/4567" in text.plain and "loss 1.23" in text.plain and "2h02m" in text.plain
    assert len(text.plain) <= 40
    assert training_text(TrainingState()).plain == "│ training: idle"
    assert "failed" in training_text(TrainingState(phase="failed")).plain


# --- the t dialog -----------------------------------------------------------------------------------


async def test_train_dialog_refuses_an_empty_store(workspace):
    async with running(workspace) as (app, pilot):
        await pilot.press("tab", "t")
        assert isinstance(app.screen, TrainModal)
        modal = app.screen
        assert modal.plan is not None and modal.plan.examples == 0
        assert modal.query_one("#train-start", Button).disabled
        assert "Nothing to train on" in str(modal.query_one("#train-error").render())
        await pilot.press("ctrl+s")  # refused: the dialog stays
        assert app.screen is modal and not app.trainer.active
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)


async def test_train_dialog_shows_counts_estimate_and_inline_errors(workspace):
    from train_support import GENERAL, fill_store

    fill_store(workspace.db_path, n_facts=8)
    n = 8 + len(GENERAL)  # every example is learned: none went to a validation split
    async with running(workspace) as (app, pilot):
        await pilot.press("tab", "t")
        modal = app.screen
        assert isinstance(modal, TrainModal)
        plan_text = str(modal.query_one("#train-plan").render())
        assert f"learns all {n} of your examples (+ rewordings and replay" in plan_text
        assert "about" in plan_text and f"only {n} examples" in plan_text
        assert not modal.query_one("#train-start", Button).disabled
        epochs = modal.query_one("#epochs", Input)
        assert epochs.placeholder.startswith("preset: ")

        def shown(widget: str = "#train-plan") -> str:
            return str(modal.query_one(widget).render())

        epochs.value = "two"
        await wait_for(pilot, lambda: "epochs: 'two' is not a number" in shown("#train-error"), "the error")
        assert modal.query_one("#train-start", Button).disabled
        epochs.value = "0"
        await wait_for(pilot, lambda: "invalid training setting: epochs = 0" in shown("#train-error"), "the error")
        epochs.value = "1"
        modal.query_one("#batch_size", Input).value = "2"
        # 11 examples, each also under the other system prompt and in 4 rewordings, plus replay: 66 rows
        await wait_for(pilot, lambda: "66 rows" in shown(), "the plan")
        assert "~33 steps" in shown()
        modal.query_one("#augment", Input).value = "0"  # the plain recipe: the examples as given
        modal.query_one("#replay", Input).value = "0"
        await wait_for(pilot, lambda: "~6 steps" in shown(), "the plan")
        assert shown("#train-error").strip() == ""

        modal.query_one("#method").value = "dpo"  # every correction is also a DPO pair
        await wait_for(pilot, lambda: "DPO: learns all 8 of your examples" in shown(), "the plan")
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen) and not app.trainer.active


async def test_typing_in_the_train_dialog_plans_once_off_the_ui_thread(workspace, monkeypatch):
    """Planning reads the store and every run's files: a burst of keys asks for one plan, made on a
    worker thread, and ctrl+s pressed before it is ready starts with what was typed."""
    import threading

    from train_support import fill_store

    import tui.modals.train as train_modal

    fill_store(workspace.db_path, n_facts=4)
    planned_on = []

    def recorded_plan(*args):
        planned_on.append(threading.current_thread())
        return real_plan(*args)

    real_plan = train_modal.plan_run
    monkeypatch.setattr(train_modal, "plan_run", recorded_plan)
    chosen = []
    async with running(workspace) as (app, pilot):
        modal = TrainModal(workspace, None)
        app.push_screen(modal, callback=chosen.append)
        await wait_for(pilot, lambda: modal.plan is not None and not modal.planning, "the first plan")
        opened_with = len(planned_on)
        modal.query_one("#seed", Input).focus()
        await pilot.press("end", "backspace", "backspace", "1", "2", "3", "ctrl+s")
        await wait_for(pilot, lambda: chosen, "the dialog to close")
        assert chosen[0].seed == 123
        assert len(planned_on) == opened_with + 1  # one plan for the five keys that changed it
        assert planned_on[-1] is not threading.main_thread()


# --- real runs ----------------------------------------------------------------------------------------


@pytest.mark.child
async def test_a_run_from_the_dialog_is_hot_swapped_into_the_chat(workspace, tiny_model_dir):
    from train_support import fill_store

    fill_store(workspace.db_path, n_facts=8)
    engine = FakeEngine()
    notices = Notices()
    async with running(workspace, engine, model_arg=str(tiny_model_dir), notices=notices) as (app, pilot):
        states = record_states(app)
        await pilot.press("tab", "t")
        modal = app.screen
        modal.query_one("#epochs", Input).value = "1"
        modal.query_one("#batch_size", Input).value = "4"
        modal.query_one("#augment", Input).value = "0"  # the plain recipe keeps this run short
        modal.query_one("#replay", Input).value = "0"
        modal.query_one("#evaluate", Checkbox).value = False
        await wait_for(pilot, lambda: modal.ready and "~3 steps" in str(modal.query_one("#train-plan").render()),
                       "the plan")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, ChatScreen)
        await wait_for(pilot, lambda: app.trainer.handle is not None, "the child to start")
        name = app.trainer.handle.name
        view = await send(pilot, "still chatting?")  # the chat answers while the run trains
        assert view.reply.speaker == "base"
        await wait_for(pilot, lambda: app.b_side == name and not app.trainer.active, "the run to end")
        await wait_for(pilot, lambda: notices.any(f"Run {name} finished", "press b"), "the notice", 10)
        assert name in engine.adapters() and engine.which() == "base"  # loaded; base still answers
        progress = [s for s in states if s.phase == "training" and s.max_steps == 3]
        assert progress and progress[-1].step == 3 and progress[-1].loss is not None
        assert "training: idle" in status_text(app)
        await pilot.press("tab", "b")
        await wait_for(pilot, lambda: engine.which() == f"adapter {name}", "the adapter to answer", 30)
    assert runlock.holder_of(workspace.runs_dir) is None


@pytest.mark.child
async def test_a_killed_run_is_reported_with_its_log_and_the_chat_goes_on(workspace):
    """The child dies at once (as under the OOM killer): an error naming the log, status back to failed."""
    from train_support import fill_store

    fill_store(workspace.db_path, n_facts=4)
    notices = Notices()
    async with running(workspace, notices=notices) as (app, pilot):
        await pilot.press("tab", "t")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainModal) and app.screen.ready, "the plan")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.trainer.handle is not None, "the child to start", 60)
        app.trainer.handle.kill()
        await wait_for(pilot, lambda: app.trainer.state.phase == "failed", "the failure", 60)
        await wait_for(pilot, lambda: notices.any("failed", "killed by SIGKILL", "train.log"), "the notice", 10)
        assert "training: failed" in status_text(app)
        view = await send(pilot, "are you there?")
        assert view.reply.text.endswith("are you there?")
        await pilot.press("tab", "r")
        assert isinstance(app.screen, RunsScreen)
        assert app.screen.runs[0].status == "failed"


@pytest.mark.child
async def test_t_during_a_run_offers_to_cancel_it(workspace):
    from train_support import fill_store

    fill_store(workspace.db_path, n_facts=4)
    async with running(workspace) as (app, pilot):
        await pilot.press("tab", "t")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainModal) and app.screen.ready, "the plan")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.trainer.handle is not None, "the child to start", 60)
        handle = app.trainer.handle
        await pilot.press("t")
        assert "Cancel training run" in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("n")
        assert handle.poll() is None or app.trainer.state.phase != "cancelled"
        await pilot.press("t", "y")
        await wait_for(pilot, lambda: not app.trainer.active, "the run to stop", 120)
        assert app.trainer.state.phase in ("cancelled", "failed")  # before its first step it may just exit
        assert handle.wait(30) is not None


async def test_events_drive_the_status_bar_and_the_verdict_toast(workspace):
    """The event vocabulary, fed straight to the follower: progress, evaluating…, the verdict, idle."""
    from types import SimpleNamespace

    run = write_run(workspace, "r1")
    engine = FakeEngine(adapters=("old",))
    notices = Notices()
    async with running(workspace, engine, notices=notices) as (app, pilot):
        engine.set_adapter("old")  # an adapter answers: the new one takes over on done
        trainer = app.trainer
        handle = SimpleNamespace(name="r1", run_dir=run, log_path=run / "train.log")
        trainer.handle = handle
        for event in ({"event": "status", "phase": "load", "message": "loading"},
                      {"event": "start", "step": 0, "max_steps": 4},
                      {"event": "step", "step": 1, "max_steps": 4, "loss": 2.5, "eta_s": 90},
                      {"event": "warning", "kind": "overfitting", "message": "eval loss going up"},
                      {"event": "eval", "step": 1, "eval_loss": 2.7}):
            trainer._on_event(handle, TRAINING_EVENTS.build(event))
        await pilot.pause()
        assert "1/4" in status_text(app) and "loss 2.5" in status_text(app) and "1m30s" in status_text(app)
        await wait_for(pilot, lambda: notices.any("overfitting", "eval loss going up"), "the notice", 10)
        trainer._on_event(handle, Done(adapter=str(run / "adapter"), gguf=None))
        await wait_for(pilot, lambda: engine.which() == "adapter r1", "the hot swap", 30)
        assert app.b_side == "r1" and "evaluating…" in status_text(app)
        trainer._on_event(handle, Status(phase="eval", message="held-out answers"))
        trainer._on_event(handle, Scorecard(verdict="overfitting", reason="eval loss rose", base_f1=0.2, adapter_f1=0.5,
                                            forgetting_score=0.8))
        trainer._ended(handle, None)
        await pilot.pause()
        await wait_for(pilot, lambda: notices.any("run r1 evaluated", "overfitting", "0.20 → 0.50", "80%"), "the notice", 10)
        assert "training: idle" in status_text(app) and trainer.handle is None


async def test_quitting_during_a_run_asks_and_leaves_it_going(workspace):
    from tui.modals.confirm import ConfirmModal

    async with running(workspace) as (app, pilot):
        app.trainer._set(TrainingState(phase="training", run="sft-x", step=3, max_steps=10))
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, ConfirmModal)
        assert "keeps training in the background" in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("n")
        assert isinstance(app.screen, ChatScreen) and app.is_running
        await pilot.press("ctrl+q", "y")
        await wait_for(pilot, lambda: not app.is_running, "the app to quit", 10)


# --- the runs screen ----------------------------------------------------------------------------------


async def test_runs_screen_lists_runs_and_enter_switches_the_adapter(workspace):
    write_run(workspace, "sft-old", created="2025-01-01T10:00:00+00:00", card=True)
    write_run(workspace, "sft-new", created="2025-01-02T10:00:00+00:00")
    write_run(workspace, "sft-stopped", status="cancelled", created="2025-01-03T10:00:00+00:00")
    engine = FakeEngine()
    notices = Notices()
    async with running(workspace, engine, notices=notices) as (app, pilot):
        await pilot.press("tab", "r")
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one(DataTable)
        assert [info.name for info in screen.runs] == ["sft-stopped", "sft-new", "sft-old"]
        assert table.row_count == 3
        assert [str(c) for c in table.get_row("sft-old")][7:11] == ["5/5·4/5", "0.31→0.72", "90%", "good"]
        assert "no scorecard" in str(screen.query_one("#run-text").render())  # the cancelled one, first

        await pilot.press("enter")  # a cancelled run has no adapter
        await wait_for(pilot, lambda: notices.any("has no adapter"), "the notice", 10)
        await pilot.press("e")
        await wait_for(pilot, lambda: notices.any("has not finished"), "the notice", 10)
        await pilot.press("down")
        assert "sft-new" in str(screen.query_one("#run-text").render())
        await pilot.press("R")
        await wait_for(pilot, lambda: notices.any("only a cancelled, interrupted or failed run resumes"), "the notice", 10)
        await pilot.press("enter")
        await wait_for(pilot, lambda: engine.which() == "adapter sft-new", "the switch", 30)
        assert app.b_side == "sft-new" and "sft-new" in status_text(app, "#status-speaker")
        await pilot.press("down")
        assert "held-out (5): F1 0.31 → 0.72" in str(screen.query_one("#run-text").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: engine.which() == "adapter sft-old", "the second switch", 30)
        await pilot.press("0")
        await wait_for(pilot, lambda: engine.which() == "base", "back to base", 30)
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
        view = await send(pilot, "who?")
        assert view.reply.speaker == "base"


@pytest.mark.child
async def test_re_evaluation_runs_in_a_child_and_its_failure_names_the_log(workspace):
    write_run(workspace, "fake-done")  # its base model is not there: `chattune eval` fails at once
    notices = Notices()
    async with running(workspace, notices=notices) as (app, pilot):
        await pilot.press("tab", "r", "e")
        screen = app.screen
        assert "fake-done" in screen.evaluating
        assert "evaluating" in [str(c) for c in screen.query_one(DataTable).get_row("fake-done")]
        await wait_for(pilot, lambda: not screen.evaluating, "the evaluation to end", 120)
        await wait_for(pilot, lambda: notices.any("evaluation of fake-done failed", "eval.log"), "the notice", 10)
        assert (workspace.run_dir("fake-done") / "eval.log").stat().st_size > 0


# --- the export dialog ----------------------------------------------------------------------------------


async def test_export_dialog_refuses_absent_and_unknown_runs(workspace):
    write_run(workspace, "unfinished", status="cancelled")
    async with running(workspace) as (app, pilot):
        await pilot.press("tab", "x")
        modal = app.screen
        assert isinstance(modal, ExportModal) and modal.runs == []
        await pilot.press("ctrl+s")
        assert "no finished training run" in str(modal.query_one("#export-result").render())
        assert modal.handle is None
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
        app.push_screen(ExportModal(workspace, run="nope"))
        await pilot.pause()
        await pilot.press("ctrl+s")
        assert "run 'nope' not found" in str(app.screen.query_one("#export-result").render())
        for name in ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"):
            app.screen.query_one(f"#quant-{name}", Checkbox).value = False
        await pilot.press("ctrl+s")
        assert "at least one" in str(app.screen.query_one("#export-result").render())


@pytest.mark.child
async def test_export_dialog_exports_a_tiny_run(workspace, tiny_model_dir, monkeypatch):
    from teach import random_lora
    from test_export import fill_store as fill_export_store
    from test_export import make_run

    fill_export_store(workspace)
    make_run(workspace, "tiny", tiny_model_dir, lambda run_dir: random_lora(tiny_model_dir, run_dir, seed=5))
    monkeypatch.setattr(ExportModal, "verify_prompts", 2)
    monkeypatch.setattr(ExportModal, "verify_max_tokens", 8)
    async with running(workspace) as (app, pilot):
        await pilot.press("tab", "x")
        modal = app.screen
        assert isinstance(modal, ExportModal) and modal.runs == ["tiny"]
        modal.query_one("#quant-Q4_K_M", Checkbox).value = False
        modal.query_one("#quant-Q8_0", Checkbox).value = True
        modal.query_one("#export-out", Input).value = "from-tui"
        await pilot.press("ctrl+s")
        assert modal.handle is not None and modal.running
        await wait_for(pilot, lambda: modal.outcome is not None, "the export", 300)
        result = str(modal.query_one("#export-result").render())
        assert modal.outcome.event == "done", result
        assert "Exported to" in result and "from-tui" in result and "same replies as the adapter: Q8_0 " in result
        assert (workspace.export_dir("from-tui") / "tiny-Q8_0.gguf").is_file()
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)


async def test_app_start_follows_a_run_already_training(workspace, monkeypatch):
    """A run started before the app (or by an earlier app): followed through its run folder."""
    write_run(workspace, "bg", status="running", losses=((1, 2.0),), evals=())
    held = runlock.acquire(workspace.runs_dir, "bg")
    try:
        notices = Notices()
        async with running(workspace, notices=notices) as (app, pilot):
            await wait_for(pilot, lambda: app.trainer.state.step == 1, "the replayed step", 30)
            await wait_for(pilot, lambda: notices.any("Run bg is training in the background"), "the notice", 10)
            assert "1/6" in status_text(app) and app.trainer.active
            with (workspace.run_dir("bg") / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps({"event": "step", "t": time.time(), "step": 2, "max_steps": 6, "loss": 1.5}) + "\n")
            await wait_for(pilot, lambda: app.trainer.state.step == 2, "a new step", 30)
            with (workspace.run_dir("bg") / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps({"event": "cancelled", "t": time.time(), "step": 2, "checkpoint": None}) + "\n")
            await wait_for(pilot, lambda: app.trainer.state.phase == "cancelled", "the end", 30)
            await wait_for(pilot, lambda: notices.any("cancelled; resume it"), "the notice", 10)
    finally:
        held.release()

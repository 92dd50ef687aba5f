"""Snapshots (pytest-textual-snapshot) of the chat, compare, dataset and runs screens and the training
dialog at 80x24.

Deterministic: the FakeEngine's scripted replies, fixed system prompts and fixed records. After a
deliberate UI change, review the new pictures and update them with `pytest --snapshot-update`.
"""

from __future__ import annotations

import pytest
from fake_engine import FakeEngine, default_script
from test_tui import add_gguf_run, make_app, ready, send, wait_until

from engine.store import FeedbackStore
from tui.screens.compare import CompareScreen
from tui.widgets.chat_input import ChatInput

SIZE = (80, 24)


@pytest.fixture(autouse=True)
def fixed_prompts(tmp_path, monkeypatch):
    """System prompts that do not change when someone edits prompts/."""
    system = tmp_path / "prompts" / "system"
    system.mkdir(parents=True)
    (system / "default.md").write_text("You are a helpful assistant.")
    (system / "pirate.md").write_text("Answer like a pirate.")
    monkeypatch.setenv("CHATTUNE_PROMPTS", str(tmp_path / "prompts"))


async def settle(pilot) -> None:
    """No blinking cursor and no toasts in a picture."""
    for area in pilot.app.screen.query(ChatInput):
        area.cursor_blink = False
    pilot.app.clear_notifications()
    await pilot.pause()


def picture(snap_compare, app, steps) -> bool:
    """snap_compare at SIZE of `app` once the model has loaded, `await steps(pilot)` has run and the
    screen has settled."""

    async def run_before(pilot):
        await ready(pilot)
        await steps(pilot)
        await settle(pilot)

    return snap_compare(app, terminal_size=SIZE, run_before=run_before)


def markdown_script(messages, adapter):
    if "list" in messages[-1]["content"]:
        return "Three steps:\n\n1. Ask a question\n2. Judge the reply: `a`, `e` or `f`\n3. **Train** on it"
    return default_script(messages, adapter)


def test_chat_screen(snap_compare, workspace):
    app = make_app(workspace, FakeEngine(script=markdown_script))

    async def steps(pilot):
        first = await send(pilot, "What is the capital of France?")
        await send(pilot, "Give me a list")
        await pilot.press("tab", "up", "a")
        await wait_until(pilot, lambda: first.reply.kind == "approved", "approval")

    assert picture(snap_compare, app, steps)


def test_compare_view(snap_compare, workspace):
    add_gguf_run(workspace, "run1")
    app = make_app(workspace, adapter="run1")

    async def steps(pilot):
        await send(pilot, "Name a fruit")
        await pilot.press("tab", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.done, "both replies")
        await pilot.press("2")
        await wait_until(pilot, lambda: app.screen.voted == 1, "vote")

    assert picture(snap_compare, app, steps)


def test_dataset_screen(snap_compare, workspace):
    store = FeedbackStore(workspace.db_path)
    system = {"role": "system", "content": "You are a helpful assistant."}
    for prompt, reply in (("What is 2+2?", "5"), ("Capital of Peru?", "Lima."), ("Say hi", "Hello!")):
        messages = [system, {"role": "user", "content": prompt}]
        if reply == "5":
            record = store.add_feedback("flagged", messages, reply, reason="wrong sum", model="fake")
            store.set_correction(record.id, "2+2 is 4.")
        else:
            store.add_feedback("approved", messages, reply, model="fake")
    store.add_feedback("flagged", [system, {"role": "user", "content": "Tell a joke"}], "No.", reason="unhelpful")
    store.add_preference([system, {"role": "user", "content": "Name a fruit"}], "Mango.", "Rock.",
                         chosen_by="adapter run1", rejected_by="base")
    store.close()
    app = make_app(workspace)

    assert picture(snap_compare, app, lambda pilot: pilot.press("tab", "d", "down"))


def test_runs_screen(snap_compare, workspace):
    from test_tui_train import write_run

    write_run(workspace, "sft-20250101-100000", created="2025-01-01T10:00:00+00:00", card=True)
    write_run(workspace, "sft-20250102-100000", status="failed", created="2025-01-02T10:00:00+00:00",
              losses=((1, 2.4), (2, 2.1)), evals=())
    app = make_app(workspace)

    assert picture(snap_compare, app, lambda pilot: pilot.press("tab", "r", "down"))


def test_training_dialog(snap_compare, workspace, monkeypatch):
    """The plan is fixed: the real estimate depends on the machine's cores and GPU."""
    from engine.train.plan import Plan

    def fixed_plan(_workspace, config, _model_arg):
        resolved = config.resolved(24)
        return Plan(resolved, config.method, 24, 3, 1850, 72, 245.0, "cpu", "estimated",
                    "SmolLM2-135M-Instruct", 134_515_008, ["only 24 examples: about 50 or more curated examples "
                                                           "work much better"])

    monkeypatch.setattr("tui.modals.train.plan_run", fixed_plan)
    monkeypatch.setattr("tui.modals.train.guess_device", lambda _config: "cpu")
    monkeypatch.setattr("tui.modals.train.training_line", lambda **_: "setup: LoRA on the CPU, fp32 (torch sees no GPU)")
    app = make_app(workspace)

    assert picture(snap_compare, app, lambda pilot: pilot.press("tab", "t"))

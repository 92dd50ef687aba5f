"""The chat app driven with Pilot on the scripted FakeEngine, checking what the real store recorded."""

from __future__ import annotations

import json
import random
import threading
import time
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
from fake_engine import FakeEngine
from teach import FACT, QUESTION
from textual import events
from textual.notifications import Notify
from textual.widgets import DataTable, Input, Select, TextArea

from engine.engines.base import GenParams
from engine.errors import ModelNotFound
from engine.models import resolve_model
from engine.runfolder import fingerprint
from engine.store import FeedbackStore, StoreError
from tui.app import ChattuneApp, open_model
from tui.modals.confirm import ConfirmModal
from tui.modals.correct import CorrectModal
from tui.modals.flag import FlagModal
from tui.modals.help import HelpModal
from tui.modals.record import RecordModal
from tui.modals.system_prompt import SystemPromptModal
from tui.screens.chat import ChatScreen
from tui.screens.compare import CompareScreen
from tui.screens.dataset import DatasetScreen
from tui.widgets.chat_input import ChatInput
from tui.widgets.message import ReplyMessage
from tui.widgets.status_bar import StatusBar

pytestmark = pytest.mark.anyio  # async tests run on anyio's pytest plugin (asyncio backend)

MODEL = "Fake model · fake"
HANG_GUARD_S = 60  # only against a hung test, never a measured expectation


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def wait_until(pilot, predicate, what: str = "condition") -> None:
    """Poll: workers run on threads, so one pilot.pause() is not enough."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await pilot.pause(0.02)


class Notices(list):
    """Every notification the app raised, as 'title: message'."""

    def hook(self, message) -> None:
        if isinstance(message, Notify):
            self.append(f"{message.notification.title}: {message.notification.message}")

    def any(self, *words: str) -> bool:
        return any(all(w in n for w in words) for n in self)


def make_app(workspace, engine=None, **kwargs) -> ChattuneApp:
    engine = engine or FakeEngine()
    return ChattuneApp(workspace, lambda: (MODEL, engine), **kwargs)


def add_gguf_run(workspace, name: str) -> None:
    """A run folder with an adapter file, trained (config.json says) on the embedded model the app
    opens by default: enough for resolve_adapter, newest_adapter and the fake engine."""
    run = workspace.run_dir(name)
    run.mkdir(parents=True)
    (run / "adapter.gguf").write_bytes(b"GGUF")
    base = {"fingerprint": fingerprint(resolve_model(None).path)}
    (run / "config.json").write_text(json.dumps({"base": base}), encoding="utf-8")


def replies(app) -> list[ReplyMessage]:
    return list(app.screen.query(ReplyMessage))


async def ready(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.engine is not None, "the model to load")


@asynccontextmanager
async def running(workspace, engine=None, *, notices: Notices | None = None, **kwargs):
    """make_app run under Pilot at 80x24 (the layout the tests expect), past the model load: yields
    (app, pilot). `notices`, when given, collects the app's notifications."""
    app = make_app(workspace, engine, **kwargs)
    hook = notices.hook if notices is not None else None  # not `if notices`: an empty list is falsy
    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await ready(pilot)
        yield app, pilot


async def send(pilot, text: str) -> ReplyMessage:
    """Type a message, press enter, and wait for the reply to finish streaming."""
    app = pilot.app
    before = len(replies(app))
    app.screen.query_one(ChatInput).focus()
    await pilot.press(*text)
    await pilot.press("enter")
    await wait_until(pilot, lambda: len(replies(app)) > before and not replies(app)[-1].reply.streaming,
                     f"the reply to {text!r}")
    return replies(app)[-1]


async def test_send_message_streams_markdown_reply(workspace):
    engine = FakeEngine()
    async with running(workspace, engine) as (app, pilot):
        view = await send(pilot, "hello")
        assert view.reply.text == "The **base** model answers: hello"
        assert view.reply.finish == "stop" and view.reply.speaker == "base"
        assert app.screen.query_one(ChatInput).text == ""
        assert engine.seen[-1] == [{"role": "system", "content": app.system_text}, {"role": "user", "content": "hello"}]
        await pilot.pause()
        assert "base model answers" in "".join(str(b.content) for b in view.query("MarkdownBlock"))
        # the second turn carries the first exchange
        await send(pilot, "again")
        assert [m["role"] for m in engine.seen[-1]] == ["system", "user", "assistant", "user"]


async def test_enter_sends_ctrl_j_and_shift_enter_add_lines(workspace):
    async with running(workspace) as (app, pilot):
        await pilot.press("a", "ctrl+j", "b", "shift+enter", "c")
        assert app.screen.query_one(ChatInput).text == "a\nb\nc"
        assert replies(app) == []
        await pilot.press("enter")
        await wait_until(pilot, lambda: replies(app) and not replies(app)[-1].reply.streaming, "reply")
        assert replies(app)[-1].reply.context[-1]["content"] == "a\nb\nc"


async def test_approve_flag_correct_selected_replies(workspace):
    notices = Notices()
    async with running(workspace, notices=notices) as (app, pilot):
        first = await send(pilot, "capital of France?")
        second = await send(pilot, "two plus two?")
        await pilot.press("tab")  # input -> last reply
        assert app.focused is second
        await pilot.press("up")
        assert app.focused is first
        await pilot.press("a")
        await wait_until(pilot, lambda: first.reply.kind == "approved", "approval")
        await wait_until(pilot, lambda: notices.any("approved", "#"), "the toast")

        await pilot.press("down", "f")
        assert isinstance(app.screen, FlagModal)
        await pilot.press(*"wrong sum", "enter")
        await wait_until(pilot, lambda: second.reply.kind == "flagged", "flag")

        await pilot.press("e")
        assert isinstance(app.screen, CorrectModal)
        area = app.screen.query_one(TextArea)
        assert area.text == second.reply.text  # prefilled with the reply, all selected
        await pilot.press(*"Four.")  # typing replaces it
        assert area.text == "Four."
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: second.reply.kind == "corrected", "correction")
        assert "✎ corrected" in str(second.query_one(".reply-header").render())

        store = FeedbackStore(workspace.db_path)
        records = {r.kind: r for r in store.records()}
        assert set(records) == {"approved", "corrected"}  # the flag became the correction
        approved, corrected = records["approved"], records["corrected"]
        assert approved.prompt == "capital of France?" and approved.reply == first.reply.text
        assert approved.model == MODEL and approved.adapter is None and approved.params["max_tokens"] == 512
        assert corrected.correction == "Four." and corrected.reply == second.reply.text
        assert corrected.reason == "wrong sum"
        assert [m["role"] for m in corrected.messages] == ["system", "user", "assistant", "user"]
        # the status bar counts them
        data = str(app.screen.query_one("#status-data").render())
        assert "✓1" in data and "✎1" in data and "⚑0" in data
        # and the conversation goes on with the corrected answer
        await send(pilot, "and three?")
        assert {"role": "assistant", "content": "Four."} in replies(app)[-1].reply.context
        store.close()


async def test_a_burst_of_keys_with_enter_sends_all_of_it(workspace):
    """A fast typist or an unbracketed paste: the keys arrive together, Enter among them."""
    async with running(workspace) as (app, pilot):
        chat_input = app.screen.query_one(ChatInput)
        for key, char in [*((c, c) for c in "one two"), ("ctrl+j", None), *((c, c) for c in "three"),
                          ("enter", None), *((c, c) for c in "next")]:
            app.post_message(events.Key(key, char))  # no pause between the keys
        await wait_until(pilot, lambda: replies(app) and not replies(app)[-1].reply.streaming, "the reply")
        assert replies(app)[-1].reply.context[-1]["content"] == "one two\nthree"
        assert chat_input.text == "next"


async def test_letter_keys_type_into_the_message_box(workspace):
    async with running(workspace) as (app, pilot):
        await pilot.press(*"bcdnx")
        assert app.screen.query_one(ChatInput).text == "bcdnx"
        assert isinstance(app.screen, ChatScreen)


async def test_typing_while_a_reply_is_selected_starts_a_message(workspace):
    async with running(workspace) as (app, pilot):
        await send(pilot, "hello")
        await pilot.press("tab")
        assert isinstance(app.screen.focused, ReplyMessage)
        await pilot.press(*"What?")  # no binding wants W: the message box takes it and the rest
        chat_input = app.screen.query_one(ChatInput)
        assert app.screen.focused is chat_input and chat_input.text == "What?"
        assert len(replies(app)) == 1  # nothing was sent, nothing else happened


async def test_toggle_base_and_adapter(workspace):
    add_gguf_run(workspace, "run1")
    engine = FakeEngine()
    notices = Notices()
    async with running(workspace, engine, notices=notices) as (app, pilot):
        await send(pilot, "hi")
        await pilot.press("tab", "b")  # no adapter loaded: the newest run's is loaded, no model reload
        await wait_until(pilot, lambda: engine.which() == "adapter run1", "adapter switch")
        assert "run1" in str(app.screen.query_one("#status-speaker").render())
        view = await send(pilot, "hi")
        assert view.reply.speaker == "adapter run1" and "tuned" in view.reply.text
        await pilot.press("tab", "b")
        await wait_until(pilot, lambda: engine.which() == "base", "back to base")
        assert "BASE" in str(app.screen.query_one("#status-speaker").render())
        # approving the adapter's reply (still selected) records the adapter
        assert app.focused is view
        await pilot.press("a")
        await wait_until(pilot, lambda: view.reply.kind == "approved", "approval")
        store = FeedbackStore(workspace.db_path)
        assert store.get(view.reply.record_id).adapter == "run1"
        store.close()


async def test_adapter_that_fails_to_load_on_b_is_reported(workspace):
    add_gguf_run(workspace, "bad")
    engine = FakeEngine(broken_adapters=("bad",))
    notices = Notices()
    async with running(workspace, engine, notices=notices) as (app, pilot):
        await pilot.press("tab", "b")
        await wait_until(pilot, lambda: notices.any("adapter failed", "does not fit"), "the error")
        assert engine.which() == "base" and app.is_running
        view = await send(pilot, "still fine?")
        assert view.reply.speaker == "base"


async def test_help_and_record_view_open_and_close(workspace):
    store = FeedbackStore(workspace.db_path)
    store.add_feedback("flagged", [{"role": "user", "content": "q"}], "bad", reason="why not")
    store.close()
    async with running(workspace) as (app, pilot):
        await pilot.press("f1")
        assert isinstance(app.screen, HelpModal)
        await pilot.press("escape", "escape", "question_mark")  # from the replies area, ? works too
        assert isinstance(app.screen, HelpModal)
        await pilot.press("escape", "d", "enter")
        assert isinstance(app.screen, RecordModal)
        assert app.screen.record.reason == "why not"
        await pilot.press("escape")
        assert isinstance(app.screen, DatasetScreen)


async def test_toggle_without_any_adapter_says_how_to_get_one(workspace):
    notices = Notices()
    async with running(workspace, notices=notices) as (app, pilot):
        await pilot.press("tab", "b")
        await wait_until(pilot, lambda: notices.any("No adapter yet", "--adapter"), "the hint")
        assert app.engine.which() == "base"


async def test_startup_adapter_that_fails_is_reported_and_base_answers(workspace):
    add_gguf_run(workspace, "bad")
    notices = Notices()
    async with running(workspace, FakeEngine(broken_adapters=("bad",)), adapter="bad", notices=notices) as (app, pilot):
        await wait_until(pilot, lambda: notices.any("adapter not loaded", "does not fit"), "adapter error")
        view = await send(pilot, "still there?")
        assert view.reply.speaker == "base"


async def test_compare_and_vote_stores_a_preference(workspace):
    add_gguf_run(workspace, "run1")
    async with running(workspace, adapter="run1") as (app, pilot):
        assert app.engine.which() == "adapter run1"
        await send(pilot, "name a fruit")
        await pilot.press("tab", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.done, "both replies")
        left, right = app.screen.panes
        assert (left.speaker, right.speaker) == ("base", "adapter run1")
        await pilot.press("2")
        await wait_until(pilot, lambda: app.screen.voted == 1, "vote")
        assert "✓ chosen" in str(right.query_one(".compare-label").render())
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
        assert app.engine.which() == "adapter run1"  # compare restores who answers
        store = FeedbackStore(workspace.db_path)
        [vote] = store.records(kind="preference")
        assert vote.prompt == "name a fruit"
        assert vote.correction == right.text and vote.reply == left.text  # chosen / rejected
        assert vote.meta == {"chosen_by": "adapter run1", "rejected_by": "base", "blind": False}
        assert store.dpo_pairs(split=None)[0]["chosen"] == right.text
        store.close()


@pytest.mark.parametrize("seed", [0, 1])
async def test_blind_compare_hides_names_until_the_vote(workspace, seed):
    add_gguf_run(workspace, "run1")
    app = make_app(workspace, adapter="run1")
    app.rng = random.Random(seed)
    async with app.run_test() as pilot:
        await ready(pilot)
        await send(pilot, "name a fruit")
        await pilot.press("tab", "B", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.done, "both replies")
        panes = app.screen.panes
        labels = [str(p.query_one(".compare-label").render()) for p in panes]
        assert labels == ["Reply 1", "Reply 2"]
        await pilot.press("1")
        await wait_until(pilot, lambda: app.screen.voted == 0, "vote")
        revealed = str(panes[0].query_one(".compare-label").render())
        assert ("BASE" if panes[0].speaker == "base" else "adapter run1") in revealed
        store = FeedbackStore(workspace.db_path)
        [vote] = store.records(kind="preference")
        assert vote.meta["blind"] is True and vote.meta["chosen_by"] == panes[0].speaker
        store.close()


async def test_escape_stops_a_streaming_reply_and_keys_keep_working(workspace):
    # A reply of about 40 s: long enough that it is still streaming when esc arrives on a slow machine.
    long_script = lambda messages, adapter: " ".join(f"word{i}" for i in range(2000))  # noqa: E731
    async with running(workspace, FakeEngine(script=long_script, delay=0.02)) as (app, pilot):
        await pilot.press("h", "i", "enter")
        await wait_until(pilot, lambda: replies(app) and len(replies(app)[-1].reply.text) > 20, "first words")
        view = replies(app)[-1]
        assert view.reply.streaming
        await pilot.press("x", "y")  # typing still works while it streams
        assert app.screen.query_one(ChatInput).text == "xy"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not view.reply.streaming, "the stop")
        assert view.reply.finish == "cancelled"
        assert len(view.reply.text.split()) < 2000
        assert "stopped" in str(view.query_one(".reply-header").render())


async def test_dataset_screen_filters_edits_moves_and_deletes(workspace):
    store = FeedbackStore(workspace.db_path)
    messages = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    flagged = store.add_feedback("flagged", messages("what is 2+2?"), "5", reason="bad math").id
    approved = store.add_feedback("approved", messages("hello"), "Hi there!").id
    notices = Notices()
    async with running(workspace, notices=notices) as (app, pilot):
        await pilot.press("tab", "d")
        assert isinstance(app.screen, DatasetScreen)
        table = app.screen.query_one(DataTable)
        assert table.row_count == 2
        # filter by kind
        app.screen.query_one("#filter-kind", Select).value = "flagged"
        await wait_until(pilot, lambda: table.row_count == 1, "filter")
        assert app.screen.records[0].id == flagged
        # edit the flagged record into a correction
        await pilot.press("e")
        assert isinstance(app.screen, CorrectModal)
        app.screen.query_one(TextArea).text = "2+2 is 4."
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: store.get(flagged).kind == "corrected", "correction")
        assert store.get(flagged).correction == "2+2 is 4."
        await wait_until(pilot, lambda: table.row_count == 0, "flagged filter now empty")
        app.screen.query_one("#filter-kind", Select).value = "all"
        await wait_until(pilot, lambda: table.row_count == 2, "all records")
        # move the newest (approved) record to the next split, pinned
        split = store.get(approved).split
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("s")
        await wait_until(pilot, lambda: store.get(approved).split_pinned, "split change")
        assert store.get(approved).split != split
        # delete it, after a confirmation
        await pilot.press("delete")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await wait_until(pilot, lambda: table.row_count == 1, "deletion")
        assert [r.id for r in store.records()] == [flagged]
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
        assert "✎1" in str(app.screen.query_one("#status-data").render())
    store.close()


async def test_dataset_edit_shows_in_the_chat(workspace):
    async with running(workspace) as (app, pilot):
        view = await send(pilot, "hello")
        await pilot.press("tab", "a")
        await wait_until(pilot, lambda: view.reply.kind == "approved", "approval")
        await pilot.press("d")
        await pilot.press("e")
        app.screen.query_one(TextArea).text = "Hello! How can I help?"
        await pilot.press("ctrl+s")
        await pilot.press("escape")
        await wait_until(pilot, lambda: view.reply.kind == "corrected", "the chat to follow the store")
        assert view.reply.shown == "Hello! How can I help?"


async def test_store_write_failure_keeps_the_feedback_for_a_retry(workspace, monkeypatch):
    notices = Notices()
    async with running(workspace, notices=notices) as (app, pilot):
        view = await send(pilot, "hello")

        def disk_full(*args, **kwargs):
            raise StoreError("the feedback store failed: database or disk is full", "free some space")

        monkeypatch.setattr(app.store, "add_feedback", disk_full)
        await pilot.press("tab", "e")
        app.screen.query_one(TextArea).text = "A careful answer."
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: notices.any("not saved", "disk is full"), "the error")
        assert view.reply.kind is None and view.reply.unsaved["correction"] == "A careful answer."
        assert "not saved" in str(view.query_one(".reply-header").render())
        monkeypatch.undo()  # space freed: retry keeps the text
        await pilot.press("e")
        assert app.screen.query_one(TextArea).text == "A careful answer."
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: view.reply.kind == "corrected", "the retry")
        assert not view.reply.unsaved


async def test_message_sent_while_the_model_loads_goes_out_when_ready(workspace):
    loaded = threading.Event()
    engine = FakeEngine()

    def slow_load():
        loaded.wait(HANG_GUARD_S)
        return MODEL, engine

    app = ChattuneApp(workspace, slow_load)
    async with app.run_test() as pilot:
        await pilot.press(*"early bird", "enter")
        await wait_until(pilot, lambda: app.screen.waiting == "early bird", "the message to wait")
        assert app.screen.query_one("#status-spinner").display  # the spinner shows while it loads
        assert replies(app) == []
        loaded.set()
        await wait_until(pilot, lambda: replies(app) and not replies(app)[-1].reply.streaming, "the reply")
        assert replies(app)[-1].reply.text.endswith("early bird")
        assert not app.screen.query_one("#status-spinner").display


async def test_model_load_failure_is_shown_and_dataset_still_opens(workspace):
    def broken():
        raise ModelNotFound("GGUF file /nope.gguf not found", "check the path")

    app = ChattuneApp(workspace, broken)
    notices = Notices()
    async with app.run_test(message_hook=notices.hook) as pilot:
        await wait_until(pilot, lambda: app.load_error, "the load error")
        await wait_until(pilot, lambda: notices.any("did not load", "/nope.gguf"), "the notice")
        assert "no model" in str(app.screen.query_one("#status-model").render())
        await pilot.press(*"hi", "enter")
        await wait_until(pilot, lambda: notices.any("No model"), "the refusal")
        await pilot.press("escape", "d")
        assert isinstance(app.screen, DatasetScreen)


async def test_generation_error_is_notified_not_crashed(workspace):
    def failing(messages, adapter):
        raise RuntimeError("context window full")

    notices = Notices()
    async with running(workspace, FakeEngine(script=failing), notices=notices) as (app, pilot):
        await pilot.press("h", "enter")
        await wait_until(pilot, lambda: notices.any("reply failed", "context window full"), "the error")
        await wait_until(pilot, lambda: replies(app)[-1].reply.finish == "error", "the failed mark")
        assert app.is_running


async def test_system_prompt_picker_and_new_conversation(workspace):
    engine = FakeEngine()
    async with running(workspace, engine) as (app, pilot):
        await send(pilot, "one")
        await pilot.press("tab", "s")
        assert isinstance(app.screen, SystemPromptModal)
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: app.system_name != "default", "the pick")
        await pilot.press("n")
        await wait_until(pilot, lambda: not replies(app), "a new conversation")
        await send(pilot, "two")
        assert engine.seen[-1] == [{"role": "system", "content": app.system_text}, {"role": "user", "content": "two"}]


async def test_train_runs_and_export_keys_open_their_screens(workspace):
    from tui.modals.export import ExportModal
    from tui.modals.train import TrainModal
    from tui.screens.runs import RunsScreen

    async with running(workspace) as (app, pilot):
        for key, kind in (("t", TrainModal), ("r", RunsScreen), ("x", ExportModal)):
            app.screen.query_one(ChatInput).focus()
            await pilot.press("tab", key)
            assert isinstance(app.screen, kind)
            await pilot.press("escape")
            assert isinstance(app.screen, ChatScreen)


async def test_flag_reason_dialog_can_be_cancelled(workspace):
    async with running(workspace) as (app, pilot):
        view = await send(pilot, "hi")
        await pilot.press("tab", "f")
        assert isinstance(app.screen, FlagModal)
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen) and view.reply.kind is None
        await pilot.press("f")
        app.screen.query_one(Input).value = ""
        await pilot.press("enter")  # no reason is fine
        await wait_until(pilot, lambda: view.reply.kind == "flagged", "flag")
        assert view.reply.reason is None


async def test_status_bar_shows_model_engine_and_counts(workspace):
    async with running(workspace) as (app, pilot):
        bar = app.screen.query_one(StatusBar)
        assert MODEL in str(bar.query_one("#status-model").render())
        assert "BASE" in str(bar.query_one("#status-speaker").render())
        assert "idle" in str(bar.query_one("#status-training").render())
        assert "train 0" in str(bar.query_one("#status-data").render())


def real_app(workspace, **kwargs) -> ChattuneApp:
    """The embedded SmolLM2 through the llama.cpp engine, with short replies."""
    args = SimpleNamespace(model=None, engine="llamacpp", template=None)
    return ChattuneApp(workspace, lambda: open_model(args, workspace), params=GenParams(max_tokens=16), **kwargs)


async def real_ready(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.engine is not None or pilot.app.load_error, "the model")
    assert not pilot.app.load_error


@pytest.mark.slow
async def test_real_embedded_model_streams_and_is_approved(workspace):
    app = real_app(workspace)
    async with app.run_test() as pilot:
        await real_ready(pilot)
        assert "llamacpp" in app.model_label
        view = await send(pilot, "What is the capital of France?")
        assert view.reply.finish in ("stop", "length") and view.reply.text.strip()
        await pilot.press("tab", "a")
        await wait_until(pilot, lambda: view.reply.kind == "approved", "approval")
        store = FeedbackStore(workspace.db_path)
        assert store.get(view.reply.record_id).reply == view.reply.text
        store.close()
    app.close_resources()


@pytest.mark.slow
async def test_real_adapter_hot_swap_and_compare(workspace, taught_run):
    """A LoRA that taught the embedded model a made-up fact: b swaps it out with no reload, and compare
    shows base and adapter side by side."""
    app = real_app(workspace, adapter=str(taught_run))
    async with app.run_test() as pilot:
        await real_ready(pilot)
        assert app.engine.which() == f"adapter {taught_run.name}"
        taught = await send(pilot, QUESTION)
        assert FACT in taught.reply.text
        await pilot.press("tab", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.done, "both replies")
        base, adapter = app.screen.panes
        assert FACT in adapter.text and FACT not in base.text
        await pilot.press("2")
        await wait_until(pilot, lambda: app.screen.voted == 1, "vote")
        await pilot.press("escape")
        await pilot.press("b", "n")  # a new conversation: the fact in the history would be echoed back
        await wait_until(pilot, lambda: app.engine.which() == "base" and not replies(app), "base, new chat")
        plain = await send(pilot, QUESTION)
        assert FACT not in plain.reply.text and plain.reply.speaker == "base"
        store = FeedbackStore(workspace.db_path)
        [vote] = store.records(kind="preference")
        assert vote.meta["chosen_by"] == f"adapter {taught_run.name}" and FACT in vote.correction
        store.close()
    app.close_resources()


async def test_a_chat_that_fell_back_to_the_cpu_says_so_and_still_answers(workspace):
    """The GPU was meant (n_gpu_layers) but its memory ran short: the engine loaded on the CPU."""
    engine = FakeEngine()
    engine.gpu_fallback = "the GPU had 0.2 GB free for a 3.1 GB model"
    notices = Notices()
    async with running(workspace, engine, notices=notices) as (app, pilot):
        for _ in range(50):
            if notices.any("GPU", "0.2 GB free", "runs on the CPU"):
                break
            await pilot.pause(0.1)
        assert notices.any("GPU", "0.2 GB free", "runs on the CPU"), notices
        assert "on the CPU" in str(app.screen.query_one("#status-model").render())
        view = await send(pilot, "hello")
        assert view.reply.text == "The **base** model answers: hello"

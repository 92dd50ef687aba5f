"""Speed where the user waits (issue 16), on the tiny model: the chat's threads follow the load, each A/B
side keeps its own KV cache, and a conversation longer than the context drops its oldest turns. No timing
is asserted: the figures come from `chattune bench chat` and `chattune bench swap`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_tui import replies, running, send
from test_tui_train import wait_for

from engine.adapters import resolve_adapter
from engine.engines import GenParams, open_engine
from engine.engines.context import common_prefix, fit_context
from engine.engines.cores import share_of, usable_cores
from engine.errors import ChattuneError
from engine.models import resolve_model

SHORT = GenParams(max_tokens=8)
CORES = usable_cores()
SHARE = share_of(CORES)
several_cores = pytest.mark.skipif(SHARE == CORES, reason="one usable core: the chat has nothing to give up")
SYSTEM = {"role": "system", "content": "Be brief."}


def chat(*turns: str) -> list[dict]:
    """System prompt, then user and assistant messages in turn (odd count: it ends with a question)."""
    return [SYSTEM] + [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(turns)]


@pytest.fixture(scope="module")
def tiny_llamacpp(tiny_gguf):
    engine = open_engine("llamacpp", resolve_model(str(tiny_gguf)), None)
    yield engine
    engine.close()


# --- threads that follow the load ----------------------------------------------------------------------


@several_cores
def test_llamacpp_threads_follow_the_load_on_the_live_context(tiny_llamacpp):
    from llama_cpp import llama_n_threads, llama_n_threads_batch

    engine = tiny_llamacpp
    llm = engine._llm

    def on_context() -> tuple[int, int]:
        return llama_n_threads(llm.ctx), llama_n_threads_batch(llm.ctx)

    engine.set_load(False)
    assert engine.threads == CORES and on_context() == (CORES, CORES)  # nothing else runs: every core
    idle_reply = engine.stream(chat("Hello there!"), SHORT).collect()
    engine.set_load(True)
    assert engine.threads == SHARE and on_context() == (SHARE, SHARE)
    assert engine.stream(chat("Hello there!"), SHORT).collect() == idle_reply
    engine.set_load(False)
    assert engine.threads == CORES and on_context() == (CORES, CORES)
    assert engine._llm is llm  # never reloaded


@several_cores
def test_transformers_threads_follow_the_load(tiny_model_dir):
    import torch

    engine = open_engine("transformers", resolve_model(str(tiny_model_dir)), None)
    try:
        engine.set_load(True)
        assert engine.threads == SHARE == torch.get_num_threads()
        engine.stream(chat("Hello there!"), SHORT).collect()  # generates on its own thread, at the share
        engine.set_load(False)
        assert engine.threads == CORES == torch.get_num_threads()
    finally:
        engine.close()


@several_cores
def test_a_run_started_in_another_process_takes_the_share_from_the_next_reply(tiny_gguf, workspace):
    """`chattune train` in another terminal holds the workspace's training lock; the app is not told."""
    engine = open_engine("llamacpp", resolve_model(str(tiny_gguf)), workspace)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from engine import runlock; held = runlock.acquire(sys.argv[1], 'cli'); "
                               "print('held', flush=True); sys.stdin.read()", str(workspace.runs_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert engine.threads == CORES
        assert holder.stdout.readline().strip() == "held"
        engine.stream(chat("Hello there!"), SHORT).collect()
        assert engine.threads == SHARE
        holder.stdin.close()
        holder.wait(30)
        engine.stream(chat("Hello there!"), SHORT).collect()
        assert engine.threads == CORES
    finally:
        holder.kill()
        engine.close()


# --- A/B: each side keeps its KV cache ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llamacpp", "transformers"])
def test_switching_sides_reads_only_what_is_new_and_answers_as_a_fresh_evaluation(kind, tiny_gguf, tiny_model_dir,
                                                                                   tiny_runs):
    spec = resolve_model(str(tiny_gguf if kind == "llamacpp" else tiny_model_dir))
    ref = resolve_adapter(tiny_runs, "rand-a")

    def fresh(side: str | None, messages: list[dict]) -> tuple[list[int], int]:
        """A new engine: nothing cached, the whole prompt evaluated."""
        engine = open_engine(kind, spec, None)
        try:
            engine.load_adapter(ref)
            engine.set_adapter(side)
            engine.stream(messages, SHORT).collect()
            return engine.last_tokens, engine.last_prompt_evaluated
        finally:
            engine.close()

    first = chat("What is the capital of France?")
    second = first + chat("The capital of France is Paris.", "And of Italy?")[1:]
    third = second + chat("Rome.", "Which of the two is bigger?")[1:]
    engine = open_engine(kind, spec, None)
    try:
        engine.load_adapter(ref)
        cached = {}  # side -> the tokens its KV cache holds: its last prompt and reply (bar the reply's last token)
        for side in (None, "rand-a"):  # a compare on the first question: both sides have read it
            engine.set_adapter(side)
            engine.stream(first, SHORT).collect()
            cached[side] = engine.prompt_tokens(first) + engine.last_tokens[:-1]
        for side, messages in ((None, second), ("rand-a", second), (None, third), ("rand-a", third)):
            engine.set_adapter(side)
            engine.stream(messages, SHORT).collect()
            tokens, whole = fresh(side, messages)
            assert engine.last_tokens == tokens, (side, len(messages))
            prompt = engine.prompt_tokens(messages)
            assert whole == len(prompt)
            reused = min(common_prefix(cached[side], prompt), len(prompt) - 1)  # this side's own cache
            assert reused > len(engine.prompt_tokens(first)) // 2
            assert engine.last_prompt_evaluated == len(prompt) - reused, (side, len(messages))
            cached[side] = prompt + engine.last_tokens[:-1]
    finally:
        engine.close()


# --- long conversations -----------------------------------------------------------------------------------


def test_fit_context_drops_whole_turns_oldest_first_and_keeps_the_system_prompt():
    def words(messages: list[dict]) -> int:
        return sum(len(m["content"].split()) for m in messages)

    messages = chat("one two three", "four five", "six seven eight", "nine", "ten eleven")
    assert fit_context(messages, words, limit=20, room=4) == (messages, 0, 13)
    kept, dropped, n = fit_context(messages, words, limit=14, room=4)
    assert (kept, dropped, n) == ([SYSTEM] + messages[3:], 2, 8)  # one turn left: 13 + 4 > 14, 8 + 4 <= 14
    kept, dropped, n = fit_context(messages, words, limit=6, room=4)
    assert (kept, dropped, n) == ([SYSTEM, messages[-1]], 4, 4)  # the last question alone, with less room
    with pytest.raises(ChattuneError, match="more than the model's context"):
        fit_context(messages, words, limit=4, room=1)


@pytest.mark.parametrize("kind", ["llamacpp", "transformers"])
def test_an_over_long_conversation_drops_its_oldest_turns_and_still_answers(kind, tiny_gguf, tiny_model_dir):
    if kind == "llamacpp":
        from engine.engines.llamacpp import LlamaCppEngine

        engine, limit = LlamaCppEngine(resolve_model(str(tiny_gguf)), None, n_ctx=256), 256
    else:
        engine, limit = open_engine("transformers", resolve_model(str(tiny_model_dir)), None), 512
    turns = []
    for i in range(limit // 16):  # about 30 tokens a turn: well past the context
        turns += [f"Question {i}: what comes after the number {i}?", f"The number after {i} is {i + 1}."]
    messages = chat(*turns, "And after 1000?")
    try:
        reply = engine.stream(messages, SHORT)
        text = reply.collect()
        assert reply.dropped > 0 and reply.n_tokens > 0 and reply.finish_reason in ("stop", "length")
        kept = [SYSTEM] + messages[1 + reply.dropped:]
        assert kept[1]["role"] == "user" and kept[-1] == messages[-1]  # whole turns left, oldest first
        assert engine.stream(kept, SHORT).collect() == text  # the system prompt and the newest turns were its prompt
    finally:
        engine.close()


# --- in the app ---------------------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend():
    return "asyncio"


@several_cores
@pytest.mark.anyio
async def test_the_chat_gives_a_training_child_its_cores_while_it_runs(workspace, tiny_gguf, tiny_model_dir):
    from train_support import fill_store

    from engine.train.config import TrainConfig

    fill_store(workspace.db_path, n_facts=8)
    engine = open_engine("llamacpp", resolve_model(str(tiny_gguf)), workspace)
    try:
        async with running(workspace, engine, model_arg=str(tiny_model_dir), params=SHORT) as (app, pilot):
            assert engine.threads == CORES
            app.trainer.start(TrainConfig(epochs=1, batch_size=4, evaluate=False))
            await wait_for(pilot, lambda: app.trainer.handle is not None, "the child to start")
            assert engine.threads == SHARE  # before the child has imported torch
            view = await send(pilot, "still there?")
            assert view.reply.finish in ("stop", "length") and engine.threads == SHARE
            await wait_for(pilot, lambda: not app.trainer.active, "the run to end")
            assert app.trainer.state.phase == "idle", app.trainer.state  # it finished
            assert engine.threads == CORES
    finally:
        engine.close()


@pytest.mark.anyio
async def test_a_chat_past_the_context_says_so_once_and_stores_what_is_judged_whole(workspace, tiny_gguf):
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.store import FeedbackStore

    engine = LlamaCppEngine(resolve_model(str(tiny_gguf)), workspace, n_ctx=256)
    try:
        async with running(workspace, engine, params=GenParams(max_tokens=16)) as (app, pilot):
            for i in range(8):  # about 45 tokens a turn
                await send(pilot, f"Tell me one more thing about the number {i}, in a few words.")
            assert all(view.reply.finish in ("stop", "length") and view.reply.text for view in replies(app))
            notes = app.screen.query("#context-note")
            assert len(notes) == 1 and "oldest messages no longer fit" in str(notes.first().render())
            view = replies(app)[-1]
            await pilot.press("tab", "e", *"Eight.", "ctrl+s")  # the tiny model says nothing worth approving
            await wait_for(pilot, lambda: view.reply.kind == "corrected", "the correction", 30)
            record = FeedbackStore(workspace.db_path).get(view.reply.record_id)
            assert record.messages == view.reply.context and len(record.messages) == 1 + 2 * 8 - 1
            assert record.messages[1]["content"].endswith("the number 0, in a few words.")
    finally:
        engine.close()

"""Chat speed: time to first token and decode speed through the TUI's code path (engine.stream and
its ReplyStream), against the raw library on the same model, prompts and greedy settings."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from engine.bench.common import Context, PartResult, Row, column, pair, paired, summarize
from engine.engines.base import GenParams

# Open questions, so that greedy replies run to the token limit and decode speed has tokens to time.
PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle works, part by part.",
    "Describe the water cycle in detail for a curious ten-year-old.",
)
TARGET = 0.95  # the app may cost at most 5% against the raw library
IDLE_TARGET = 1.6  # first token with every core, against the half the engine kept before (issue 16)


def conversations() -> list[list[dict]]:
    from engine.prompts import system_prompt

    system = system_prompt("default")
    return [[{"role": "system", "content": system}, {"role": "user", "content": p}] for p in PROMPTS]


def _measures(start: float, first: float | None, end: float, n_tokens: int, text: str) -> dict:
    """Time to first text, and decode speed over the tokens after the first one."""
    decode = (n_tokens - 1) / (end - first) if first is not None and n_tokens > 1 and end > first else None
    return {"ttft_s": None if first is None else first - start, "decode_tps": decode, "tokens": n_tokens,
            "text": text}


def stream_reply(engine, messages: list[dict], params: GenParams) -> dict:
    """One reply the way the TUI gets it: engine.stream, then iterate the ReplyStream."""
    start = time.perf_counter()
    first = None
    reply = engine.stream(messages, params)
    for _piece in reply:
        if first is None:
            first = time.perf_counter()
    return _measures(start, first, time.perf_counter(), reply.n_tokens, reply.text)


def _rows(ours: list[dict], base: list[dict], setting: str = "") -> list[Row]:
    return [
        Row(f"time to first token{setting}", "ms", summarize(column(ours, "ttft_s", 1000)),
            summarize(column(base, "ttft_s", 1000)), better="lower", target=TARGET),
        Row(f"decode speed{setting}", "tok/s", summarize(column(ours, "decode_tps")),
            summarize(column(base, "decode_tps")), better="higher", target=TARGET),
    ]


def _same_replies(ours: list[dict], base: list[dict]) -> str:
    same = sum(o["text"] == b["text"] for o, b in zip(ours, base, strict=True))
    return f"replies identical to the baseline's in {same} of {len(ours)} trials (greedy, same prompts)"


# --- llama.cpp ----------------------------------------------------------------------------------


def llamacpp_chat(ctx: Context) -> PartResult:
    """At both thread settings the engine switches between (every core while nothing else runs, its
    share while a training or export child does), against raw llama-cpp-python at the same count."""
    part = PartResult("chat-llamacpp")
    if not ctx.spec.is_gguf:
        part.status, part.reason = "skipped", "the llama.cpp engine needs a GGUF model (this one is an HF folder)"
        return part
    from llama_cpp import llama_set_n_threads

    from engine.bench.raw_llama import GUARD_NOTE, raw_llama
    from engine.engines import open_engine

    tokens = ctx.budget.chat_tokens
    params = GenParams(max_tokens=tokens, temperature=0.0)
    chats = conversations()
    ctx.progress("chat (llama.cpp): loading our engine and a raw Llama on the same GGUF")
    engine = open_engine("llamacpp", ctx.spec, ctx.workspace)
    engine.set_load(False)
    idle_threads = engine.threads
    raw = raw_llama(ctx.spec.path, (idle_threads, idle_threads))
    tokens_of_text: dict[str, int] = {}  # greedy: the same text means the same tokens

    def ours(i: int) -> dict:
        result = stream_reply(engine, chats[i % len(chats)], params)
        tokens_of_text[result["text"]] = result["tokens"]
        return result

    def baseline(i: int) -> dict:
        start = time.perf_counter()
        first, pieces = None, []
        for chunk in raw.create_chat_completion(chats[i % len(chats)], max_tokens=tokens, temperature=0.0,
                                                top_p=params.top_p, top_k=0, min_p=0.0, repeat_penalty=1.0,
                                                stream=True):
            content = chunk["choices"][0]["delta"].get("content")
            if content:
                first = first or time.perf_counter()
                pieces.append(content)
        end = time.perf_counter()
        text = "".join(pieces)
        n = tokens_of_text.get(text) or len(raw.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        return _measures(start, first, end, n, text)

    def use(busy: bool) -> None:
        engine.set_load(busy)
        llama_set_n_threads(raw.ctx, engine.threads, engine.threads)

    threads: dict[bool, int] = {}
    try:
        for busy in (False, True):
            use(busy)
            threads[busy] = engine.threads
        settings = [False, True] if threads[True] != threads[False] else [False]  # one core: one setting
        ctx.progress(f"chat (llama.cpp): {' and '.join(str(threads[b]) for b in settings)} thread(s), "
                     f"{ctx.budget.trials} trials per side, {tokens} tokens per reply")
        runs = interleaved(settings, use, ours, baseline, ctx.budget.trials)
    finally:
        engine.close()
        raw.close()
    for busy, (ours_runs, base_runs) in runs.items():
        part.rows += _rows(ours_runs, base_runs, f" ({_setting(busy, threads[busy])})")
    if True in runs:
        part.rows.append(Row(
            "time to first token: idle vs a child's share", "ms", summarize(column(runs[False][0], "ttft_s", 1000)),
            summarize(column(runs[True][0], "ttft_s", 1000)), better="lower", target=IDLE_TARGET,
            note=f"ours on {idle_threads} threads (nothing else runs) against ours on {threads[True]}, the engine's "
                 "setting before it followed the load"))
    part.ours = ("LlamaCppEngine.stream() iterated like the TUI does (template, ReplyStream, UTF-8 pieces); "
                 "set_load() picks the thread count on the live context")
    part.baseline = ("llama_cpp.Llama(n_ctx=4096).create_chat_completion(stream=True, temperature=0, "
                     "repeat_penalty=1.0) on the same GGUF, with llama_set_n_threads at our engine's count")
    part.notes = [GUARD_NOTE] + [f"{_setting(busy, threads[busy])}: {_same_replies(*runs[busy])}" for busy in runs]
    part.notes += [f"llama-cpp-python's own default thread counts here would be {_default_threads()}",
                   f"{len(PROMPTS)} prompts in turn (default system prompt, one-line questions), at most {tokens} "
                   "tokens per reply, one warm-up reply per side and thread count; the thread counts take turns "
                   "within each trial; decode speed counts the tokens after the first one"]
    part.details = {"prompts": list(PROMPTS), "max_tokens": tokens,
                    "threads": {"idle": threads[False], "child running": threads.get(True, threads[False])},
                    "tokens_per_reply": summarize(column(runs[False][0], "tokens"))}
    return part


def interleaved(settings: list, use: Callable[[object], None], ours: Callable[[int], dict],
                baseline: Callable[[int], dict], trials: int) -> dict:
    """setting -> (ours, baseline) runs, the settings taken in turn within each trial (in alternating
    order, as ours and the baseline alternate who goes first), so that a change in machine load hits
    every setting alike and the ratio between two settings compares like with like. Each call gets
    the next prompt, so no reply finds its whole prompt cached by the one before."""
    prompts = itertools.count()
    found: dict = {setting: ([], []) for setting in settings}
    for setting in settings:  # one warm-up reply per side and setting
        use(setting)
        n = next(prompts)
        ours(n)
        baseline(n)
    for i in range(trials):
        for setting in settings if i % 2 == 0 else settings[::-1]:
            use(setting)
            ours_run, base_run = pair(ours, baseline, i, next(prompts))
            found[setting][0].append(ours_run)
            found[setting][1].append(base_run)
    return found


def _setting(busy: bool, threads: int) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}, " + ("a child runs" if busy else "idle")


def _default_threads() -> str:
    import multiprocessing

    cores = multiprocessing.cpu_count()
    return f"{max(cores // 2, 1)} and {cores}"


# --- transformers -------------------------------------------------------------------------------


def transformers_chat(ctx: Context) -> PartResult:
    from transformers import TextIteratorStreamer

    from engine.engines import open_engine

    part = PartResult("chat-transformers")
    tokens = ctx.budget.hf_chat_tokens
    params = GenParams(max_tokens=tokens, temperature=0.0)
    chats = conversations()
    ctx.progress("chat (transformers): loading our engine (the raw baseline uses the same model object)")
    engine = open_engine("transformers", ctx.spec, ctx.workspace)
    tokenizer, model = engine.tokenizer, engine.model

    def ours(i: int) -> dict:
        return stream_reply(engine, chats[i % len(chats)], params)

    def baseline(i: int) -> dict:
        inputs = tokenizer.apply_chat_template(chats[i % len(chats)], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True).to(model.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        out = {}

        def generate():
            out["ids"] = model.generate(**inputs, max_new_tokens=tokens, do_sample=False, streamer=streamer)

        start = time.perf_counter()
        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        first, pieces = None, []
        for piece in streamer:
            if piece:
                first = first or time.perf_counter()
                pieces.append(piece)
        worker.join()
        end = time.perf_counter()
        new = out["ids"][0, inputs["input_ids"].shape[1]:].tolist()
        n = len(new) - (bool(new) and new[-1] == tokenizer.eos_token_id)
        return _measures(start, first, end, n, "".join(pieces))

    try:
        trials = ctx.budget.slow_trials
        ctx.progress(f"chat (transformers): {trials} trials per side, {tokens} tokens per reply")
        ours_runs, base_runs = paired(ours, baseline, trials)
    finally:
        engine.close()
    part.rows = _rows(ours_runs, base_runs)
    part.ours = "TransformersEngine.stream() iterated like the TUI does (TextIteratorStreamer on a worker thread)"
    part.baseline = ("model.generate(do_sample=False, max_new_tokens=N) with a TextIteratorStreamer on a thread, "
                     "prompt from tokenizer.apply_chat_template, same model object")
    part.notes = [_same_replies(ours_runs, base_runs),
                  f"device {engine.device}; at most {tokens} tokens per reply, one warm-up reply per side"]
    part.details = {"prompts": list(PROMPTS), "max_tokens": tokens, "device": engine.device,
                    "tokens_per_reply": summarize(column(ours_runs, "tokens"))}
    return part

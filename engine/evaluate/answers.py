"""Greedy answers from the base and the adapter, through the same engines the chat uses.

llama.cpp with the GGUF LoRA is the fast path for a GGUF base (the adapter was trained on exactly its
dequantized weights); otherwise the transformers engine with the peft adapter.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.adapters import AdapterRef
from engine.engines.base import GenParams
from engine.evaluate.base_cache import BaseAnswers, answer_key
from engine.models import ModelSpec

GENERAL_MAX_TOKENS = 32  # the general prompts ask for short answers; enough to tell same from changed


def engine_kind_for(spec: ModelSpec, adapter: AdapterRef) -> str:
    return "llamacpp" if spec.is_gguf and adapter.gguf_path is not None else "transformers"


def heldout_max_tokens(reference: str) -> int:
    """About twice the reference's length in tokens (~4 characters each): a longer answer cannot
    score better, and a rambling model costs no more than that."""
    return max(32, min(256, len(reference) // 2 + 16))


def answer(engine, messages: list[dict], max_tokens: int) -> str:
    return engine.stream(messages, GenParams(max_tokens=max_tokens, temperature=0.0)).collect().strip()


def answer_both(engine, kind: str, adapter_name: str, jobs: list[tuple[list[dict], int]], cache: BaseAnswers,
                progress: Callable[[str], None], what: str) -> tuple[list[str], list[str]]:
    """(base answers, adapter answers) for each (messages, max_tokens) job; base answers come from the
    cache where it has them."""
    base = []
    keys = [answer_key(kind, messages, max_tokens) for messages, max_tokens in jobs]
    missing = sum(key not in cache.answers for key in keys)
    engine.set_adapter(None)
    done = 0
    for key, (messages, max_tokens) in zip(keys, jobs, strict=True):
        if key not in cache.answers:
            done += 1
            progress(f"{what}: base answer {done}/{missing}")
            cache.answers[key] = answer(engine, messages, max_tokens)
        base.append(cache.answers[key])
    engine.set_adapter(adapter_name)
    return base, answer_adapter(engine, jobs, progress, what)


def answer_adapter(engine, jobs: list[tuple[list[dict], int]], progress: Callable[[str], None],
                   what: str) -> list[str]:
    """The active adapter's answers to (messages, max_tokens) jobs (answer_both sets it active)."""
    replies = []
    for i, (messages, max_tokens) in enumerate(jobs, 1):
        progress(f"{what}: adapter answer {i}/{len(jobs)}")
        replies.append(answer(engine, messages, max_tokens))
    return replies

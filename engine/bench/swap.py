"""Adapter hot swap: apply, switch and clear in the live engine, against what users do today,
which is reloading the model with the adapter (llama-cpp-python only takes a LoRA at construction)."""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.bench.chat import conversations
from engine.bench.common import Context, PartResult, Row, column, paired, repeat, summarize, timed
from engine.engines.base import GenParams

FIRST_TOKEN = GenParams(max_tokens=1, temperature=0.0)
TURN_TEN_TARGET = 3.0  # first token after an A/B switch at turn 10, against re-reading the conversation (issue 16)


def turn_ten() -> tuple[list[dict], list[dict]]:
    """A conversation at its 9th question, and the same one at its 10th: nine exchanges of the bench's
    examples (short and medium answers in turn) under the default system prompt."""
    from engine.bench.examples import MEDIUM, SHORT
    from engine.prompts import system_prompt

    exchanges = [pair for pairs in zip(MEDIUM, SHORT, strict=False) for pair in pairs][:9]
    messages = [{"role": "system", "content": system_prompt("default")}]
    for question, answer in exchanges:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    tenth = {"role": "user", "content": "Thanks! Now explain how a bicycle works, part by part."}
    return messages[:-1], messages + [tenth]


def bench_adapters(ctx: Context):
    """Two random adapters for the model (peft + GGUF LoRA), built once per bench run."""
    if "adapters" not in ctx.cache:
        from engine.bench.adapters import random_adapters
        from engine.models import trainable_base

        base_dir = trainable_base(ctx.spec, ctx.workspace, progress=ctx.progress)
        ctx.progress("swap: building two random rank-16 LoRA adapters (peft and GGUF)")
        ctx.cache["adapters"] = (base_dir, random_adapters(base_dir, ctx.scratch / "adapters"))
    return ctx.cache["adapters"]


def _swap_cycles(engine, names: tuple[str, str], trials: int) -> list[dict]:
    """base -> a (apply), a -> b (switch), b -> base (clear), `trials` times."""
    a, b = names

    def cycle(_i: int) -> dict:
        return {"apply": timed(lambda: engine.set_adapter(a)), "switch": timed(lambda: engine.set_adapter(b)),
                "clear": timed(lambda: engine.set_adapter(None))}

    return repeat(cycle, trials)


def _switch_then_reply(engine, names: tuple[str, str], messages: list[dict]):
    """A trial function: switch to the adapter not in effect, and take a one-token reply."""
    state = {"current": names[0]}
    engine.set_adapter(names[0])

    def trial(_i: int) -> dict:
        target = names[1] if state["current"] == names[0] else names[0]
        start = time.perf_counter()
        engine.set_adapter(target)
        engine.stream(messages, FIRST_TOKEN).collect()
        state["current"] = target
        return {"first": time.perf_counter() - start}

    return trial


def _rows(loads: list[float], cycles: list[dict], ours_first: list[dict], reloads: list[dict],
          base_reloads: list[dict], reload_what: str) -> list[Row]:
    reload_adapter = summarize(column(reloads, "reload", 1000))
    return [
        Row("load adapter (once)", "ms", summarize([s * 1000 for s in loads]), None, better="lower",
            note="our one-time cost per adapter; the baseline has no equivalent"),
        Row("apply: base -> adapter", "ms", summarize(column(cycles, "apply", 1000)), reload_adapter,
            better="lower", note=f"baseline: {reload_what} with the adapter"),
        Row("switch: adapter -> adapter", "ms", summarize(column(cycles, "switch", 1000)), reload_adapter,
            better="lower", note=f"baseline: {reload_what} with the other adapter"),
        Row("clear: adapter -> base", "ms", summarize(column(cycles, "clear", 1000)),
            summarize(column(base_reloads, "reload", 1000)), better="lower",
            note=f"baseline: {reload_what} without an adapter"),
        Row("switch + 1-token reply", "ms", summarize(column(ours_first, "first", 1000)),
            summarize(column(reloads, "reload_first", 1000)), better="lower",
            note="end to end: the swap's cost shows in the next reply too"),
    ]


@dataclass
class Reloads:
    """The baseline: the model built anew for each trial, as users change adapters today."""

    build: Callable  # (adapter ref) -> a model with that adapter
    build_base: Callable  # () -> the model without an adapter
    first_reply: Callable  # (model) -> None: take a 1-token reply
    close: Callable | None  # (model) -> None: free it; None: drop it and let gc free it
    trials: int
    announce: str  # the progress line
    what: str  # how the rows name the baseline

    def trial(self, build: Callable, first_reply: Callable | None = None) -> dict:
        """Time building the model ('reload') and, when given, a 1-token reply ('reload_first'), both
        from the start; then free the model, untimed."""
        start = time.perf_counter()
        model = build()
        times = {"reload": time.perf_counter() - start}
        if first_reply is not None:
            first_reply(model)
            times["reload_first"] = time.perf_counter() - start
        if self.close is not None:
            self.close(model)
        else:
            del model
            gc.collect()  # free the copy before the next trial builds another
        return times


def _measure(ctx: Context, engine, refs, messages: list[dict], baseline: Reloads) -> list[Row]:
    """Time our side in the live engine (load once, swap cycles, switch + reply) against the baseline,
    then close the engine. Both engines' parts share this so that their rows measure the same steps."""
    names = (refs[0].name, refs[1].name)

    def reload(i: int) -> dict:
        return baseline.trial(lambda: baseline.build(refs[i % 2]), baseline.first_reply)

    def reload_base(_i: int) -> dict:
        return baseline.trial(baseline.build_base)

    try:
        loads = [timed(lambda ref=ref: engine.load_adapter(ref)) for ref in refs]
        cycles = _swap_cycles(engine, names, ctx.budget.fast_trials)
        ctx.progress(baseline.announce)
        ours_first, reloads = paired(_switch_then_reply(engine, names, messages), reload, baseline.trials)
        base_reloads = repeat(reload_base, baseline.trials)
    finally:
        engine.close()
    return _rows(loads, cycles, ours_first, reloads, base_reloads, baseline.what)


# --- llama.cpp ----------------------------------------------------------------------------------


def llamacpp_swap(ctx: Context) -> PartResult:
    part = PartResult("swap-llamacpp")
    if not ctx.spec.is_gguf:
        part.status, part.reason = "skipped", "the llama.cpp engine needs a GGUF model (this one is an HF folder)"
        return part
    from engine.bench.raw_llama import GUARD_NOTE, raw_llama
    from engine.engines import open_engine

    _base_dir, refs = bench_adapters(ctx)
    messages = conversations()[0]
    ctx.progress("swap (llama.cpp): apply, switch and clear in the live engine")
    engine = open_engine("llamacpp", ctx.spec, ctx.workspace)
    threads = (engine.threads, engine.threads)

    def one_token(llm) -> None:
        for _chunk in llm.create_chat_completion(messages, max_tokens=1, temperature=0.0, stream=True):
            pass

    part.rows = _measure(ctx, engine, refs, messages, Reloads(
        build=lambda ref: raw_llama(ctx.spec.path, threads, lora_path=ref.gguf_path),
        build_base=lambda: raw_llama(ctx.spec.path, threads), first_reply=one_token,
        close=lambda llm: llm.close(), trials=ctx.budget.trials,
        announce="swap (llama.cpp): against reloading Llama(model, lora_path=...)",
        what="Llama(model_path, ...) construction"))
    ctx.progress("swap (llama.cpp): first token after a switch at turn 10 of a conversation")
    part.rows += _turn_ten(ctx, open_engine("llamacpp", ctx.spec, ctx.workspace), refs[0],
                           raw_llama(ctx.spec.path, threads))
    part.ours = ("LlamaCppEngine.set_adapter(): llama_set_adapters_lora on the live context; the side left parks "
                 "its KV cache (llama_state_seq_get_data) and the side taken gets its own back, so a reply "
                 "evaluates only what that side has not seen; adapters loaded once with llama_adapter_lora_init")
    part.baseline = ("llama_cpp.Llama(model_path, lora_path=ADAPTER.gguf) built anew (llama-cpp-python's way to "
                     "change adapters, its issue #1302); the 1-token reply uses create_chat_completion. Turn 10: "
                     "a raw Llama with both sides' LoRA switched by llama_set_adapters_lora and the KV cache "
                     "reset, as the engine did before it kept each side's cache")
    part.notes = [GUARD_NOTE, "adapters: two random rank-16 LoRAs on every linear layer, converted with "
                              "engine.gguf_lora.convert_peft_to_gguf",
                  "switch + 1-token reply alternates two adapters on the same prompt: each finds its own "
                  "cached prompt",
                  "turn 10: base and adapter have each answered turn 9; the base has read turn 10 when the "
                  "switch to the adapter is timed, up to its first token",
                  f"{ctx.budget.fast_trials} swap cycles, {ctx.budget.trials} reloads"]
    return part


def _turn_ten(ctx: Context, engine, ref, raw) -> list[Row]:
    """First token after switching base -> adapter at turn 10: our engine, where the adapter's own cache
    holds the conversation up to turn 9, against a reset that re-reads all of it. Closes both models."""
    import llama_cpp

    ninth, tenth = turn_ten()
    engine.load_adapter(ref)
    tokens = engine.prompt_tokens(tenth)
    handle = llama_cpp.llama_adapter_lora_init(raw.model, str(ref.gguf_path).encode("utf-8"))

    def ours(_i: int) -> dict:
        for side, messages in ((None, ninth), (ref.name, ninth), (None, tenth)):  # untimed: the chat so far
            engine.set_adapter(side)
            engine.stream(messages, FIRST_TOKEN).collect()
        start = time.perf_counter()
        engine.set_adapter(ref.name)
        engine.stream(tenth, FIRST_TOKEN).collect()
        return {"first": time.perf_counter() - start, "evaluated": engine.last_prompt_evaluated}

    def reset_and_reread(_i: int) -> dict:
        start = time.perf_counter()
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
        llama_cpp.llama_set_adapters_lora(raw.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        raw.reset()
        next(raw.generate(tokens, temp=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0))
        return {"first": time.perf_counter() - start, "evaluated": len(tokens)}

    try:
        ours_runs, base_runs = paired(ours, reset_and_reread, ctx.budget.trials)
    finally:
        engine.set_adapter(None)
        llama_cpp.llama_set_adapters_lora(raw.ctx, None, 0, None)
        llama_cpp.llama_adapter_lora_free(handle)
        raw.close()
        engine.close()
    return [
        Row("first token after a switch, turn 10", "ms", summarize(column(ours_runs, "first", 1000)),
            summarize(column(base_runs, "first", 1000)), better="lower", target=TURN_TEN_TARGET,
            note=f"a conversation of {len(tokens)} tokens; baseline: KV cache reset, the whole conversation re-read"),
        Row("prompt tokens evaluated after that switch", "tokens", summarize(column(ours_runs, "evaluated")),
            summarize(column(base_runs, "evaluated")), better="lower"),
    ]


# --- transformers -------------------------------------------------------------------------------


def transformers_swap(ctx: Context) -> PartResult:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.engines import open_engine

    part = PartResult("swap-transformers")
    base_dir, refs = bench_adapters(ctx)
    messages = conversations()[0]
    ctx.progress("swap (transformers): apply, switch and clear in the live engine")
    engine = open_engine("transformers", ctx.spec, ctx.workspace)
    dtype, device, tokenizer = engine.model.dtype, engine.device, engine.tokenizer

    def load_model():
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).to(device).eval()

    def one_token(model) -> None:
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(device)
        model.generate(**inputs, max_new_tokens=1, do_sample=False)

    part.rows = _measure(ctx, engine, refs, messages, Reloads(
        build=lambda ref: PeftModel.from_pretrained(load_model(), str(ref.peft_dir)),
        build_base=load_model, first_reply=one_token, close=None, trials=ctx.budget.slow_trials,
        announce="swap (transformers): against reloading the model and PeftModel.from_pretrained",
        what="AutoModelForCausalLM.from_pretrained"))
    part.ours = ("TransformersEngine.set_adapter(): peft adapters loaded once into the live model, then "
                 "set_adapter / disable_adapters; each side keeps its KV cache")
    part.baseline = ("AutoModelForCausalLM.from_pretrained(base) + PeftModel.from_pretrained(ADAPTER) anew; "
                     "the 1-token reply uses model.generate")
    part.notes = [f"device {device}; {ctx.budget.fast_trials} swap cycles, {ctx.budget.slow_trials} reloads",
                  "switch + 1-token reply alternates two adapters on the same prompt: each finds its own "
                  "cached prompt (a DynamicCache per side)"]
    return part

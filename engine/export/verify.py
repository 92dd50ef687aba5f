"""Is the exported GGUF the adapter, and does it stop? Checked by loading and running it in llama.cpp.

For each file: the chat template and the EOS token are embedded, and the template's end-of-turn
marker is a token llama.cpp stops on (the cause of models that never stop in Ollama and friends).
Then the same prompts go through the export and through the adapter as the chat runs it (llama.cpp
on the base GGUF with the GGUF LoRA, else transformers with the peft adapter), greedily: the
agreement rate, the replies that differ, and replies that hit the token limit where the adapter
stopped. The result is verify.json next to the files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.engines.base import GenParams

VERIFY_JSON = "verify.json"
DEFAULT_PROMPTS = 16
DEFAULT_MAX_TOKENS = 128
AGREEMENT_TARGET = 0.9
_MARKER = "CHATTUNE-END-OF-TURN-PROBE"
_GREETING = [{"role": "user", "content": "Hello! Who are you?"}]


@dataclass
class Replies:
    texts: list[str]
    finish: list[str | None]  # "stop" or "length" per reply
    engine: str  # what produced them, for the report


# --- which prompts --------------------------------------------------------------------------------


def verification_prompts(db_path: Path, snapshot_dir: Path | None, limit: int) -> tuple[list[list[dict]], str, int]:
    """(prompts, source, how many there were): the store's test split, else the run's training prompts."""
    prompts, source = [], "store test split"
    if Path(db_path).is_file():
        from engine.store import FeedbackStore

        with FeedbackStore(db_path) as store:
            prompts = [example["messages"][:-1] for example in store.sft_examples("test")]
            prompts += [pair["prompt"] for pair in store.dpo_pairs("test")]
    if not prompts and snapshot_dir is not None:
        from engine.train.data import read_jsonl, snapshot_file

        source = "run snapshot (training prompts)"
        prompts = [row["messages"][:-1] for row in read_jsonl(snapshot_file(snapshot_dir, "sft", "train"))]
        prompts += [row["prompt"] for row in read_jsonl(snapshot_file(snapshot_dir, "dpo", "train"))]
    if not prompts:
        prompts, source = [_GREETING], "a greeting (no test split and no training prompts)"
    unique: dict[str, list[dict]] = {}
    for messages in prompts:
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        unique.setdefault(json.dumps(plain, sort_keys=True), plain)
    chosen = list(unique.values())
    return chosen[:limit], source, len(chosen)


# --- static checks --------------------------------------------------------------------------------


def check_gguf(path: Path) -> dict:
    """Template, EOS and end-of-turn of one GGUF, as llama.cpp reads them."""
    from llama_cpp import llama_cpp as lib

    from engine.engines.llamacpp import load_llama
    from engine.templates import render_chat

    llm = load_llama(str(path), n_ctx=512)
    try:
        vocab = llm._model.vocab
        template = llm.metadata.get("tokenizer.chat_template")
        eos = llm.token_eos()
        checks = {"chat_template": bool(template), "template": template,
                  "eos_token": _token_text(llm, eos), "eos_stops": eos >= 0 and bool(lib.llama_vocab_is_eog(vocab, eos)),
                  "end_of_turn": None, "end_of_turn_stops": False}
        if template:
            # What the template writes right after an assistant's words must be a token generation stops on.
            text = render_chat(template, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARKER},
                                          {"role": "user", "content": "Again"}], add_generation_prompt=False)
            after = text.split(_MARKER, 1)[1] if _MARKER in text else ""
            tokens = llm.tokenize(after.encode("utf-8"), add_bos=False, special=True) if after else []
            if tokens:
                checks["end_of_turn"] = _token_text(llm, tokens[0])
                checks["end_of_turn_stops"] = bool(lib.llama_vocab_is_eog(vocab, tokens[0]))
        return checks
    finally:
        llm.close()


def _token_text(llm, token: int) -> str:
    return llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""


# --- replies --------------------------------------------------------------------------------------


def reply_all(engine, prompts: list[list[dict]], params: GenParams, tick: Callable[[], None]) -> tuple[list, list]:
    texts, finish = [], []
    for messages in prompts:
        reply = engine.stream(messages, params)
        texts.append(reply.collect().strip())
        finish.append(reply.finish_reason)
        tick()
    return texts, finish


def adapter_replies(inputs, workspace, lora_gguf: Path | None, prompts, params: GenParams, tick) -> Replies:
    """The adapter as the chat runs it: the fast llama.cpp path when the base is a GGUF and a GGUF
    LoRA exists (the adapter was trained on exactly its dequantized weights), else transformers + peft."""
    from engine.adapters import AdapterRef
    from engine.engines import open_engine

    if inputs.spec.is_gguf and lora_gguf is not None:
        kind, adapter = "llamacpp", AdapterRef(inputs.name, None, Path(lora_gguf))
        what = f"llama.cpp: {inputs.spec.path.name} + GGUF LoRA"
    else:
        kind, adapter = "transformers", AdapterRef(inputs.name, inputs.adapter.need_peft(), None)
        what = "transformers: full-precision base + peft adapter"
    engine = open_engine(kind, inputs.spec, workspace, template=inputs.template)
    try:
        engine.load_adapter(adapter)
        engine.set_adapter(adapter.name)
        return Replies(*reply_all(engine, prompts, params, tick), what)
    finally:
        engine.close()


def export_replies(path: Path, prompts, params: GenParams, tick) -> Replies:
    """The exported file exactly as a user runs it: its own embedded template, no override."""
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.models import resolve_model

    engine = LlamaCppEngine(resolve_model(str(path)))
    try:
        return Replies(*reply_all(engine, prompts, params, tick), f"llama.cpp: {path.name}")
    finally:
        engine.close()


# --- comparing ------------------------------------------------------------------------------------


def same_reply(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def compare(prompts, exported: Replies, adapter: Replies) -> dict:
    differing, not_stopping = [], []
    for messages, ours, theirs, ours_end, theirs_end in zip(prompts, exported.texts, adapter.texts,
                                                            exported.finish, adapter.finish, strict=True):
        question = messages[-1]["content"]
        if not same_reply(ours, theirs):
            differing.append({"prompt": question, "export": ours, "adapter": theirs})
        if ours_end == "length":
            not_stopping.append({"prompt": question, "reply_tail": ours[-120:], "adapter_stopped": theirs_end == "stop"})
    total = len(prompts)
    agree = total - len(differing)
    return {"agreement": round(agree / total, 4), "agree": agree, "total": total,
            "stopped": total - len(not_stopping), "differing": differing, "not_stopping": not_stopping}


def judge(checks: dict, result: dict) -> list[str]:
    """The problems that make a file unfit to ship (an empty list: fine)."""
    problems = []
    if not checks["chat_template"]:
        problems.append("no chat template is embedded: chat apps will format prompts wrongly")
    elif not checks["end_of_turn_stops"]:
        problems.append(f"the template's end of turn ({checks['end_of_turn']!r}) is not a stop token: "
                        "replies will run on")
    if not checks["eos_stops"]:
        problems.append("the EOS token is missing or not a stop token")
    runaway = [item for item in result["not_stopping"] if item["adapter_stopped"]]
    if runaway:
        problems.append(f"{len(runaway)} replies ran to the token limit where the adapter stopped")
    return problems


def verify_exports(files: dict[str, Path], prompts: list[list[dict]], reference: Replies, params: GenParams,
                   tick: Callable[[], None], warn: Callable[[str], None]) -> tuple[dict, str | None]:
    """Check and run every exported file against the adapter's replies: (one entry per quant, the
    chat template embedded in the files)."""
    results, template = {}, None
    for quant, path in files.items():
        started = time.monotonic()
        checks = check_gguf(path)
        exported = export_replies(path, prompts, params, tick)
        result = compare(prompts, exported, reference)
        problems = judge(checks, result)
        embedded = checks.pop("template")
        template = template or embedded
        for problem in problems:
            warn(f"{quant}: {problem}")
        if result["agreement"] < AGREEMENT_TARGET:
            warn(f"{quant}: gives the adapter's reply on {result['agree']} of {result['total']} prompts "
                 f"({result['agreement']:.0%}); see the differing replies in {VERIFY_JSON}")
        for item in result["not_stopping"]:
            if not item["adapter_stopped"]:
                warn(f"{quant}: the reply to {item['prompt'][:60]!r} ran to the token limit (so did the adapter's)")
        results[quant] = {"file": path.name, "ok": not problems, "problems": problems, "checks": checks,
                          **result, "seconds": round(time.monotonic() - started, 2)}
    return results, template


def write_verify(out_dir: Path, *, source: str, available: int, prompts: int, params: GenParams,
                 reference: Replies, results: dict) -> dict:
    report = {"ok": all(r["ok"] for r in results.values()), "prompts": prompts, "prompts_available": available,
              "source": source, "max_tokens": params.max_tokens, "reference": reference.engine,
              "agreement": {quant: r["agreement"] for quant, r in results.items()}, "files": results}
    (out_dir / VERIFY_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report

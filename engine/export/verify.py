"""Is the exported GGUF the adapter, and does it stop? Checked by loading and running it in llama.cpp.

For each file: the chat template and the EOS token are embedded, and the template's end-of-turn
marker is a token llama.cpp stops on (the cause of models that never stop in Ollama and friends).
Then the same prompts go greedily through the export and through the adapter as it was trained (the
full-precision base + the peft adapter, in transformers): the agreement rate, the replies that
differ (each marked a near tie or not, see engine.export.fidelity), how closely the file follows the
adapter token by token (same top token, KL), and replies that hit the token limit where the adapter
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
    tokens: list[list[int]]  # each reply's token ids, without its end token
    prompt_tokens: list[list[int]]  # each prompt as llama.cpp tokenizes it (only from a llama.cpp engine)


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
        from engine.runfolder import read_jsonl, snapshot_file

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


def reply_all(engine, prompts: list[list[dict]], params: GenParams, tick: Callable[[], None]) -> Replies:
    texts, finish, tokens, prompt_tokens = [], [], [], []
    for messages in prompts:
        reply = engine.stream(messages, params)
        texts.append(reply.collect().strip())
        finish.append(reply.finish_reason)
        tokens.append(list(engine.last_tokens))
        if hasattr(engine, "prompt_tokens"):
            prompt_tokens.append(engine.prompt_tokens(messages))
        tick()
    return Replies(texts, finish, "", tokens, prompt_tokens)


class Reference:
    """The adapter as it was trained and evaluated: the full-precision base with the peft adapter, in
    transformers, in fp32 (the near-tie threshold was measured in fp32; see reference_device for where).
    (The chat's llama.cpp path, quantized base + GGUF LoRA, is itself an approximation: it moves token
    log-probabilities by up to ~0.4 nats, so it is no yardstick for the files.)"""

    def __init__(self, inputs, workspace):
        import torch

        from engine.adapters import AdapterRef
        from engine.engines.transformers_engine import TransformersEngine
        from engine.export.fidelity import AdapterScorer

        device, where = reference_device(inputs.spec, workspace)
        self.engine = TransformersEngine(inputs.spec, workspace, template=inputs.template,
                                         placement=(device, torch.float32))
        adapter = AdapterRef(inputs.name, inputs.adapter.need_peft(), None)
        self.engine.load_adapter(adapter)
        self.engine.set_adapter(adapter.name)
        self.scorer = AdapterScorer(self.engine.model, self.engine.device)
        self.what = f"transformers: {inputs.spec.name} full precision + peft adapter {inputs.name}, {where}"

    def replies(self, prompts, params: GenParams, tick) -> Replies:
        replies = reply_all(self.engine, prompts, params, tick)
        replies.engine = self.what
        return replies

    def close(self) -> None:
        self.scorer = None  # it holds the model too
        self.engine.close()


def reference_device(spec, workspace) -> tuple[str, str]:
    """(device, why) for the reference: the GPU when no training run holds it and fp32 fits its free
    memory, else the CPU (engine.hardware.reference_placement)."""
    import torch

    from engine.hardware import reference_placement
    from engine.models import count_parameters

    cuda = torch.cuda.is_available()
    training = cuda and _training_on_gpu(workspace)
    free_mb = torch.cuda.mem_get_info()[0] / 2**20 if cuda and not training else None
    params = count_parameters(spec)
    return reference_placement(cuda=cuda, free_mb=free_mb, weights_mb=params * 4 / 2**20 if params else float("inf"),
                               training_on_gpu=training)


def _training_on_gpu(workspace) -> bool:
    """A run trains in this workspace, on the GPU (or still deciding, and not asked for the CPU)."""
    from engine import runlock
    from engine.errors import ChattuneError
    from engine.runfolder import read_run_config

    holder = runlock.holder_of(workspace.runs_dir)
    if holder is None:
        return False
    try:
        meta = read_run_config(workspace.run_dir(holder.run))
    except ChattuneError:  # a run being set up: assume it will take the GPU, the CPU is always safe
        return True
    return ((meta.runtime.device if meta.runtime else "") or meta.config.get("device")) != "cpu"


def export_replies(path: Path, prompts, params: GenParams, tick) -> Replies:
    """The exported file exactly as a user runs it: its own embedded template, no override."""
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.models import resolve_model

    engine = LlamaCppEngine(resolve_model(str(path)))
    try:
        replies = reply_all(engine, prompts, params, tick)
        replies.engine = f"llama.cpp: {path.name}"
        return replies
    finally:
        engine.close()


# --- comparing ------------------------------------------------------------------------------------


def same_reply(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def score_file(path: Path, exported: Replies, adapter: Replies, reference: Reference) -> dict:
    """Teacher-forced closeness to the adapter, and which differing replies are near ties. The adapter's
    distributions are computed again for each file rather than kept: they are len x vocabulary
    float64s (50 MB for a 128-token reply of SmolLM2), and a forward pass is cheap next to that."""
    from engine.export.fidelity import NEAR_TIE_NATS, GgufScorer, distance, worst_shortfall

    positions = same = 0
    kl = 0.0
    shortfalls: list[float | None] = []
    longest = max((len(p) + max(len(a), len(b)) for p, a, b in zip(exported.prompt_tokens, exported.tokens,
                                                                    adapter.tokens, strict=True)), default=0)
    scorer = GgufScorer(path, longest)
    try:
        for prompt, ours, theirs, ours_text, theirs_text in zip(exported.prompt_tokens, exported.tokens,
                                                                adapter.tokens, exported.texts, adapter.texts,
                                                                strict=True):
            n, top, divergence = distance(reference.scorer.logprobs(prompt, theirs), scorer.logprobs(prompt, theirs))
            positions, same, kl = positions + n, same + top, kl + divergence
            if same_reply(ours_text, theirs_text):
                shortfalls.append(None)
            else:  # could the adapter have said this? Its own log-probabilities along the file's reply
                shortfalls.append(worst_shortfall(reference.scorer.logprobs(prompt, ours), ours))
    finally:
        scorer.close()
    return {"same_top_token": round(same / positions, 4) if positions else 1.0,
            "kl": round(kl / positions, 5) if positions else 0.0, "positions": positions,
            "near_tie_nats": NEAR_TIE_NATS, "shortfalls": shortfalls}


def compare(prompts, exported: Replies, adapter: Replies, fidelity: dict) -> dict:
    differing, not_stopping = [], []
    near_ties = 0
    for messages, ours, theirs, ours_end, theirs_end, shortfall in zip(
            prompts, exported.texts, adapter.texts, exported.finish, adapter.finish, fidelity["shortfalls"],
            strict=True):
        question = messages[-1]["content"]
        if shortfall is not None:
            tie = shortfall <= fidelity["near_tie_nats"]
            near_ties += tie
            differing.append({"prompt": question, "export": ours, "adapter": theirs, "near_tie": tie,
                              "adapter_shortfall_nats": round(shortfall, 3)})
        if ours_end == "length":
            not_stopping.append({"prompt": question, "reply_tail": ours[-120:], "adapter_stopped": theirs_end == "stop"})
    total = len(prompts)
    agree = total - len(differing)
    return {"agreement": round(agree / total, 4), "agree": agree, "total": total,
            "near_ties": near_ties, "agreement_with_ties": round((agree + near_ties) / total, 4),
            "same_top_token": fidelity["same_top_token"], "kl": fidelity["kl"], "positions": fidelity["positions"],
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


def verify_exports(files: dict[str, Path], prompts: list[list[dict]], adapter: Replies, reference: Reference,
                   params: GenParams, tick: Callable[[], None], warn: Callable[[str], None]) -> tuple[dict, str | None]:
    """Check and run every exported file against the adapter's replies: (one entry per quant, the
    chat template embedded in the files)."""
    results, template = {}, None
    for quant, path in files.items():
        started = time.monotonic()
        checks = check_gguf(path)
        exported = export_replies(path, prompts, params, tick)
        result = compare(prompts, exported, adapter, score_file(path, exported, adapter, reference))
        problems = judge(checks, result)
        embedded = checks.pop("template")
        template = template or embedded
        for problem in problems:
            warn(f"{quant}: {problem}")
        if result["agreement_with_ties"] < AGREEMENT_TARGET:
            warn(f"{quant}: gives the adapter's reply on {result['agree']} of {result['total']} prompts "
                 f"({result['agreement']:.0%}; {result['agreement_with_ties']:.0%} counting near ties), "
                 f"same top token {result['same_top_token']:.1%}, KL {result['kl']:.3f}; "
                 f"see the differing replies in {VERIFY_JSON}")
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
              "agreement": {quant: r["agreement"] for quant, r in results.items()},
              "agreement_with_ties": {quant: r["agreement_with_ties"] for quant, r in results.items()},
              "files": results}
    (out_dir / VERIFY_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report

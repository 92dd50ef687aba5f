"""Learning quality: what a run teaches, what it generalises and what it breaks, on a fixed protocol.

Made-up facts (prompts/learn/facts.jsonl, our own) are imported as plain corrections, with no system
prompt and no split pinning, exactly as a user's file would be. Each recipe trains in a fresh
workspace through the same background runner the app uses, then the adapter is asked, under the
app's default system prompt:

- the taught questions (taught recall),
- other wordings of each question that no run ever trains on (reworded recall),
- the forgetting check's general prompts (prompts/eval/general.jsonl): right answers kept, and
  answers the same as the base's.

Ours is the default recipe (rewordings, replay, best epoch by validation); the baseline is the plain
recipe of earlier versions (SFT on the examples as given, no rewordings, no replay).

For a GGUF model the general prompts are also answered by the base's own weights in the transformers
engine and scored like an adapter's answers: the floor of "still right" and "kept", what greedy
answers lose with no change to the weights at all.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from engine.bench.common import Context, PartResult, Row, summarize

REJECTED = "I am not sure about that."  # the reply each correction replaced
GENERAL_MAX_TOKENS = 32  # as the scorecard's forgetting check
FACT_MAX_TOKENS = 48
EVAL_TARGET = 2.0  # the scorecard after a run takes at most half of the run's own time


def load_facts(limit: int | None = None) -> list[dict]:
    from engine.errors import ChattuneError
    from engine.prompts import prompts_dir

    path = prompts_dir() / "learn" / "facts.jsonl"
    try:
        facts = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise ChattuneError(f"cannot read the learning protocol {path} ({err})", "reinstall chattune") from err
    return facts[:limit]


def recipes(precision: str = "auto") -> dict:
    from engine.train.config import TrainConfig

    # The default recipe evaluates after training, as a user's run does (its scorecard's time is a row);
    # the adapter is ready, and timed, before that evaluation starts.
    return {"new": TrainConfig(precision=precision),
            "plain": TrainConfig(augment=0, replay=0, freeze_lower=0, evaluate=False, precision=precision)}


def learn_part(ctx: Context) -> PartResult:
    from engine.prompt_sets import general_prompts

    facts = load_facts(ctx.budget.learn_facts)
    general = general_prompts()[:ctx.budget.learn_general]
    part = PartResult("learn")
    runs = {name: _train(ctx, name, config, facts) for name, config in recipes(ctx.budget.precision).items()}
    ctx.progress("learn: asking base and adapters the taught, reworded and general questions")
    answers = _answers(ctx, runs, facts, general)
    scores = {name: _score(facts, general, answers["base"], answers[name]) for name in runs}
    floor = _floor(ctx, general, answers["base"][2 * len(facts):]) if ctx.spec.is_gguf else None
    new, plain = scores["new"], scores["plain"]
    base_right = scores["new"]["base_general_right"]
    base_wrong = sum(1 for g in general if g.expected) - base_right

    def one(value) -> dict | None:
        return summarize([value]) if value is not None else None

    n = len(facts)
    part.rows = [
        Row(f"taught recall (of {n})", "facts", one(new["taught"]), one(plain["taught"]), better="higher",
            note="the taught question, asked under the default system prompt"),
        Row(f"reworded recall (of {n}, never trained on)", "facts", one(new["reworded"]), one(plain["reworded"]),
            better="higher", note="prompts/learn/facts.jsonl 'reworded': no run trains on them"),
        Row(f"general answers still right (base right on {base_right})", "answers", one(new["general_right_kept"]),
            one(plain["general_right_kept"]), better="higher"),
        Row(f"general answers fixed (base wrong on {base_wrong})", "answers", one(new["general_fixed"]),
            one(plain["general_fixed"]), better="higher", note="a change, so 'kept' counts each one against the run"),
        Row(f"general answers kept (same as base, of {len(general)})", "answers", one(new["kept"]),
            one(plain["kept"]), better="higher", note="the scorecard's 'kept'"),
    ]
    if floor is not None:
        # What greedy answers keep with no change to the weights at all: the base's own weights, dequantized,
        # answered by the other engine (transformers, fp32) instead of llama.cpp's quantized kernels.
        part.rows += [
            Row(f"floor: the base in another engine, still right (of {base_right})", "answers",
                one(floor["general_right_kept"]), better="higher",
                note="the same weights through transformers fp32: no run can be expected to keep more"),
            Row(f"floor: the base in another engine, kept (of {len(general)})", "answers", one(floor["kept"]),
                better="higher", note="the noise floor of 'kept' for this model"),
        ]
    part.rows += [
        Row("time to adapter", "s", one(runs["new"]["adapter_s"]), one(runs["plain"]["adapter_s"]), better="lower",
            note="from the start of the run to its adapter ready (rewordings and replay included)"),
    ]
    if runs["new"]["scorecard_s"] is not None:
        part.rows.append(Row("evaluation after training vs the training", "s", one(runs["new"]["scorecard_s"]),
                             one(runs["new"]["train_s"]), better="lower", target=EVAL_TARGET,
                             note="ours: the default run's scorecard; baseline: that run up to its adapter"))
    part.ours = "the default recipe: rewordings of every question, replay of the base's answers, best epoch kept"
    part.baseline = "the plain recipe: SFT on the examples as given (--no-augment --no-replay)"
    part.notes = [f"{n} made-up facts imported as corrections (no system prompt, no pinning); "
                  f"{len(general)} general prompts; greedy answers through the llama.cpp or transformers engine",
                  f"base: taught {scores['new']['base_taught']}/{n}, general right {base_right}/"
                  f"{sum(1 for g in general if g.expected)}"]
    part.details = {name: {**runs[name], **{k: v for k, v in scores[name].items() if not k.startswith("base_")}}
                    for name in runs}
    part.details["base"] = {k: v for k, v in new.items() if k.startswith("base_")}
    if floor is not None:
        part.details["floor"] = floor
    return part


def _train(ctx: Context, name: str, config, facts: list[dict]) -> dict:
    from engine.events import Done, Scorecard, Start, Status
    from engine.formats import import_file
    from engine.runfolder import read_events
    from engine.store import FeedbackStore
    from engine.train.runner import start_run
    from engine.workspace import Workspace

    workspace = Workspace.open(ctx.scratch / f"learn-{name}")
    # The dequantized base is shared (built once per machine, as for a user); replay answers and
    # rewordings are not, so the time to adapter includes writing them.
    shared_base = Path(ctx.workspace.cache_dir) / "base"
    shared_base.mkdir(parents=True, exist_ok=True)
    workspace.cache_dir.mkdir(parents=True, exist_ok=True)
    if not (workspace.cache_dir / "base").exists():
        os.symlink(shared_base, workspace.cache_dir / "base")
    source = ctx.scratch / f"facts-{name}.jsonl"
    source.write_text("".join(json.dumps({"prompt": f["question"], "chosen": f["answer"], "rejected": REJECTED}) + "\n"
                              for f in facts), encoding="utf-8")
    with FeedbackStore(workspace.db_path) as store:
        import_file(store, source)
    ctx.progress(f"learn: training the {name} recipe on {len(facts)} facts (background run)")
    started = time.monotonic()
    handle = start_run(workspace, config, None if ctx.spec.source == "embedded" else str(ctx.spec.path), name=name)
    adapter_s, last = None, None
    for event in handle.events():
        last = event
        if isinstance(event, Done):
            adapter_s = time.monotonic() - started
        elif isinstance(event, Status):
            ctx.progress(f"learn ({name}): {event.message}")
    handle.wait(timeout=60)
    if adapter_s is None:
        raise RuntimeError(f"the {name} run did not finish: {last}")
    events = read_events(handle.run_dir)
    start = next((e for e in events if isinstance(e, Start)), Start())
    done = next((e for e in events if isinstance(e, Done)), Done())
    card = next((e for e in events if isinstance(e, Scorecard)), Scorecard())
    return {"workspace": workspace, "run": handle.name, "adapter_s": adapter_s, "rows": start.rows,
            "epochs": start.epochs, "steps": done.steps, "precision": start.precision,
            "tokens_per_s": done.tokens_per_s, "train_loss": done.final_loss,
            "eval_loss": done.eval_loss, "train_s": done.elapsed_s,
            "scorecard_s": card.elapsed_s}


def _answers(ctx: Context, runs: dict, facts: list[dict], general) -> dict:
    from engine.adapters import resolve_adapter
    from engine.engines import open_engine
    from engine.engines.base import GenParams
    from engine.prompts import system_prompt

    system = system_prompt()

    jobs = ([(asked(system, f["question"]), FACT_MAX_TOKENS) for f in facts]
            + [(asked(system, f["reworded"][0]), FACT_MAX_TOKENS) for f in facts]
            + [(asked(system, g.prompt), GENERAL_MAX_TOKENS) for g in general])
    kind = "llamacpp" if ctx.spec.is_gguf else "transformers"
    engine = open_engine(kind, ctx.spec, ctx.workspace)
    try:
        for info in runs.values():
            engine.load_adapter(resolve_adapter(info["workspace"], info["run"]))
        found = {}
        for side, adapter in [("base", None)] + [(name, info["run"]) for name, info in runs.items()]:
            engine.set_adapter(adapter)
            found[side] = [engine.stream(m, GenParams(max_tokens=t)).collect().strip() for m, t in jobs]
    finally:
        engine.close()
    for info in runs.values():
        info["workspace"] = str(info["workspace"].root)
    return found


def asked(system: str, question: str) -> list[dict]:
    """A question as the app asks it: under its system prompt."""
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def _floor(ctx: Context, general, base_rest: list[str]) -> dict:
    """The general prompts answered by the base's own weights in the transformers engine (the fp32 folder
    runs train on), scored against llama.cpp's answers as an adapter's would be."""
    from engine.engines import open_engine
    from engine.engines.base import GenParams
    from engine.models import resolve_model, trainable_base
    from engine.prompts import system_prompt

    ctx.progress("learn: the noise floor: the base's general answers in the transformers engine")
    folder = trainable_base(ctx.spec, ctx.workspace, progress=ctx.progress)
    system = system_prompt()
    engine = open_engine("transformers", resolve_model(str(folder)), ctx.workspace)
    try:
        other = [engine.stream(asked(system, g.prompt), GenParams(max_tokens=GENERAL_MAX_TOKENS)).collect().strip()
                 for g in general]
    finally:
        engine.close()
    found = _general_scores(general, base_rest, other)
    return {"engine": "transformers, fp32", **{k: v for k, v in found.items() if k != "general_changed"},
            "changed": found["general_changed"]}


def _score(facts: list[dict], general, base: list[str], ours: list[str]) -> dict:
    n = len(facts)

    def has(reply: str, fact: dict) -> bool:
        return fact["key"].casefold() in reply.casefold()

    taught, reworded = ours[:n], ours[n:2 * n]
    found = _general_scores(general, base[2 * n:], ours[2 * n:])
    return {
        "taught": sum(has(r, f) for r, f in zip(taught, facts, strict=True)),
        "reworded": sum(has(r, f) for r, f in zip(reworded, facts, strict=True)),
        **{k: v for k, v in found.items() if k != "general_changed"},
        "base_taught": sum(has(r, f) for r, f in zip(base[:n], facts, strict=True)),
        "replies": {"taught": taught, "reworded": reworded, "general_changed": found["general_changed"]},
    }


def _general_scores(general, base_rest: list[str], rest: list[str]) -> dict:
    """Right answers kept, fixed, and answers the same as the base's, on the general prompts."""
    from engine.evaluate.scoring import contains_expected, equivalent

    checkable = [i for i, g in enumerate(general) if g.expected]
    base_right = [i for i in checkable if contains_expected(base_rest[i], list(general[i].expected))]
    return {
        "general_right": sum(contains_expected(rest[i], list(general[i].expected)) for i in checkable),
        "general_right_kept": sum(contains_expected(rest[i], list(general[i].expected)) for i in base_right),
        "general_fixed": sum(contains_expected(rest[i], list(general[i].expected))
                             for i in checkable if i not in base_right),
        "kept": sum(equivalent(b, a, list(g.expected)) for b, a, g in zip(base_rest, rest, general, strict=True)),
        "base_general_right": len(base_right),
        "general_changed": [{"prompt": g.prompt, "base": b, "adapter": a}
                            for b, a, g in zip(base_rest, rest, general, strict=True)
                            if not equivalent(b, a, list(g.expected))],
    }

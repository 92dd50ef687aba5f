"""A run's scorecard: held-out score, forgetting, training health and A/B votes, in scorecard.json and
scorecard.md in the run folder.

    card = evaluate_run(workspace, run_dir, progress=print)   # about a minute or two on the embedded model
    rows = summary_rows(workspace)                             # what a runs table shows (no torch imported)

The files themselves (load_scorecard, write_scorecard, the markdown) are engine.scorecard_format's, which
export and the command line read too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from engine.adapters import GGUF_FILE, PEFT_DIR
from engine.evaluate.ab import ab_summary
from engine.evaluate.answers import (
    GENERAL_MAX_TOKENS,
    answer_adapter,
    answer_both,
    engine_kind_for,
    heldout_max_tokens,
)
from engine.evaluate.base_cache import BaseAnswers
from engine.evaluate.forgetting import forgetting_report
from engine.evaluate.heldout import heldout_items, score_heldout
from engine.evaluate.recall import recall_items, score_recall
from engine.evaluate.verdict import training_verdict
from engine.prompt_sets import general_prompts, general_text
from engine.prompts import system_prompt
from engine.run_inputs import RunInputs, read_run
from engine.runfolder import fingerprint
from engine.scorecard_format import SCORECARD_MD, VERSION, load_scorecard, summary_row, write_scorecard
from engine.store import FeedbackStore
from engine.workspace import Workspace


def evaluate_run(workspace: Workspace, run_dir: Path, progress: Callable[[str], None] | None = None, *,
                 general_limit: int | None = None) -> dict:
    """Evaluate the run's adapter against its base, write the scorecard files and return the card.

    `general_limit` uses only the first N general prompts (quick checks and tests)."""
    started = time.monotonic()
    say = progress or (lambda _message: None)
    run = read_run(run_dir)
    verdict = training_verdict(run.train_curve, run.eval_curve, run.examples)
    items, source, total = heldout_items(workspace.db_path, run.snapshot_dir)
    prompts = general_prompts()[:general_limit]
    taught, reworded = recall_items(run.run_dir, system_prompt())
    kind = engine_kind_for(run.spec, run.adapter)

    say(f"loading {run.spec.name} ({kind}) with adapter {run.name}")
    timings = {}
    clock = time.monotonic()
    held_base, held_adapter, general_base, general_adapter, taught_replies, reworded_replies = _answers(
        workspace, run, kind, items, prompts, taught, reworded, say)
    timings["answers_s"] = time.monotonic() - clock
    clock = time.monotonic()
    logliks, perplexity = _likelihoods(workspace, run, items, say)
    timings["likelihood_s"] = time.monotonic() - clock

    heldout = score_heldout(items, held_base, held_adapter, logliks)
    heldout.update(source=source, total=total)
    card = {
        "version": VERSION,
        "run": run.name,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": run.spec.name,
        "engine": kind,
        "adapter_fingerprint": adapter_fingerprint(run),
        "training": {"method": run.method, "examples": run.examples,
                     "final_loss": run.train_curve[-1][1] if run.train_curve else None,
                     "eval_loss": run.eval_curve[-1][1] if run.eval_curve else None},
        "verdict": verdict.to_dict(),
        "learning": {"taught": score_recall(taught, taught_replies),
                     "reworded": score_recall(reworded, reworded_replies)},
        "heldout": heldout,
        "forgetting": forgetting_report(prompts, general_base, general_adapter, perplexity),
        "ab": current_ab(workspace, run.name),
        "timings": timings,
    }
    card["elapsed_s"] = time.monotonic() - started
    write_scorecard(run.run_dir, card)
    say(f"scorecard written to {run.run_dir / SCORECARD_MD}")
    return card


def is_current(card: dict | None, run_dir: Path) -> bool:
    """The card describes the adapter now in the run folder (a resumed run replaces it)."""
    if card is None:
        return False
    # Straight from the adapter files: read_run would also check the base model, and a moved base
    # says nothing about whether this card describes this adapter.
    peft, gguf = Path(run_dir) / PEFT_DIR, Path(run_dir) / GGUF_FILE
    adapter = peft if (peft / "adapter_config.json").is_file() else gguf
    return adapter.exists() and card.get("adapter_fingerprint") == fingerprint(adapter)


def summary_rows(workspace: Workspace) -> list[dict]:
    """report.summary_row for every run that has a scorecard, oldest run first, with fresh A/B votes."""
    from engine.runfolder import list_runs

    rows = []
    for run in list_runs(workspace):
        card = load_scorecard(run.run_dir)
        if card is not None:
            rows.append({**summary_row(card, current_ab(workspace, card["run"])),
                         "current": is_current(card, run.run_dir)})
    return rows


def current_ab(workspace: Workspace, run: str) -> dict:
    """A/B votes change after evaluation, so they are read fresh from the store when shown."""
    if not workspace.db_path.is_file():
        return {"votes": 0, "wins": 0, "losses": 0, "blind": 0, "win_rate": None}
    with FeedbackStore(workspace.db_path) as store:
        return ab_summary(store, run)


def adapter_fingerprint(run: RunInputs) -> str:
    return fingerprint(run.adapter.peft_dir or run.adapter.gguf_path)


def _answers(workspace, run: RunInputs, kind: str, items, prompts, taught, reworded, say):
    from engine.engines import open_engine

    system = system_prompt()  # the chat's default, so general prompts are asked the way users ask
    general_jobs = [([{"role": "system", "content": system}, {"role": "user", "content": p.prompt}],
                     GENERAL_MAX_TOKENS) for p in prompts]
    held_jobs = [(item.messages, heldout_max_tokens(item.reference)) for item in items]
    cache = BaseAnswers(workspace, run.spec, run.template)  # the base under the run's template
    engine = open_engine(kind, run.spec, workspace, template=run.template)
    try:
        engine.load_adapter(run.adapter)
        held = answer_both(engine, kind, run.name, held_jobs, cache, say, "held-out")
        general = answer_both(engine, kind, run.name, general_jobs, cache, say, "general prompts")
        learned = [answer_adapter(engine, [(i.messages, heldout_max_tokens(i.reference)) for i in group], say, what)
                   for group, what in ((taught, "taught examples"), (reworded, "rewordings never trained on"))]
    finally:
        cache.save()  # base answers made so far are kept even when a later step fails
        engine.close()
    return (*held, *general, *learned)


def _likelihoods(workspace, run: RunInputs, items, say):
    """Per item (base, adapter) log-likelihood of the reference, and the general text's perplexity;
    None without a peft adapter (a run folder holding only the GGUF LoRA)."""
    if run.adapter.peft_dir is None:
        return [(None, None)] * len(items), None
    from engine.evaluate.likelihood import ScoringModel
    from engine.models import trainable_base

    say("scoring reference answers and the general text (log-likelihood)")
    scorer = ScoringModel(trainable_base(run.spec, workspace, progress=say), run.adapter.peft_dir, run.template)
    try:
        logliks = [scorer.answer_loglik(item.messages, item.reference) for item in items]
        return logliks, scorer.perplexity(general_text())
    finally:
        scorer.close()

"""Held-out score: base and adapter answers to the test split, scored against the user's reference answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.evaluate.scoring import exact_match, token_f1
from engine.splits import split_key
from engine.store import FeedbackStore

MAX_ITEMS = 100  # generation dominates the cost; a bigger test split is sampled in store order
CHANGE_F1 = 0.1  # an example got better or worse when its F1 moved at least this much


@dataclass(frozen=True)
class HeldOutItem:
    messages: list[dict]  # the context, ending with the user's question
    reference: str  # the approved reply or the correction

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"]


def heldout_items(db_path: Path, snapshot_dir: Path | None) -> tuple[list[HeldOutItem], str, int]:
    """(items, source, total): the store's test split now, else the run snapshot's sft-test.jsonl.

    The store's split is the current one, so runs are compared on the same items; any prompt the run
    trained on (its snapshot's sft-train) is left out, so a re-pinned record can never leak in."""
    rows, source = [], "store test split"
    if db_path.is_file():
        with FeedbackStore(db_path) as store:
            rows = store.sft_examples("test")
    if not rows and snapshot_dir is not None:
        rows, source = _jsonl(snapshot_dir / "sft-test.jsonl"), "run snapshot (sft-test.jsonl)"
    trained = {split_key(row["messages"][-2]["content"])
               for row in (_jsonl(snapshot_dir / "sft-train.jsonl") if snapshot_dir else [])}
    items = [HeldOutItem(row["messages"][:-1], row["messages"][-1]["content"]) for row in rows
             if split_key(row["messages"][-2]["content"]) not in trained]
    return items[:MAX_ITEMS], source, len(items)


def score_heldout(items: list[HeldOutItem], base: list[str], adapter: list[str],
                  logliks: list[tuple[float | None, float | None]]) -> dict:
    """Per-side means of exact match, token F1 and the reference's log-likelihood per token, plus each
    example with the change it saw ("better", "worse" or "same" by F1)."""
    examples = []
    for item, base_answer, adapter_answer, (base_ll, adapter_ll) in zip(items, base, adapter, logliks, strict=True):
        scores = {side: {"exact_match": exact_match(answer, item.reference), "f1": token_f1(answer, item.reference),
                         "loglik": loglik}
                  for side, answer, loglik in (("base", base_answer, base_ll), ("adapter", adapter_answer, adapter_ll))}
        delta = scores["adapter"]["f1"] - scores["base"]["f1"]
        examples.append({"prompt": item.prompt, "reference": item.reference, "base_answer": base_answer,
                         "adapter_answer": adapter_answer, "base": scores["base"], "adapter": scores["adapter"],
                         "change": "better" if delta >= CHANGE_F1 else "worse" if delta <= -CHANGE_F1 else "same"})
    return {"n": len(examples), "base": _means(examples, "base"), "adapter": _means(examples, "adapter"),
            "better": sum(e["change"] == "better" for e in examples),
            "worse": sum(e["change"] == "worse" for e in examples), "examples": examples}


def _means(examples: list[dict], side: str) -> dict:
    """None where nothing was measured (no examples, or no peft adapter for the log-likelihood)."""
    means = {}
    for metric in ("exact_match", "f1", "loglik"):
        values = [float(e[side][metric]) for e in examples if e[side][metric] is not None]
        means[metric] = sum(values) / len(values) if values else None
    return means


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

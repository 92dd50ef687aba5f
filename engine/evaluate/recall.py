"""Did the run learn what it was taught? Taught recall on the run's own examples, and recall on
rewordings of them that it never trained on (the ones engine.train.mix held out for validation).

Both are asked under the app's default system prompt, the way the chat asks: an example taught
without a system prompt must still be answered with one. A reply recalls its reference when it
holds most of the reference's own words, those the question does not already contain ("Lunquist"
for "What is the capital of Moravelle?" -> "The capital of Moravelle is Lunquist.").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.evaluate.scoring import normalise, token_f1

MAX_ITEMS = 60  # per set: generation dominates the evaluation's cost
RECALL_SHARE = 0.7  # of the reference's own words a reply must hold
_FILLER = frozenset("""a an the of in on at to for from by with and or is are was were be been it its this that
these those there their they he she his her i you your my we our me what which who whom whose when where why how
do does did has have had can could will would should not no yes as so""".split())


@dataclass(frozen=True)
class RecallItem:
    messages: list[dict]  # the question under the default system prompt
    reference: str  # the answer the run taught


def key_words(reference: str, question: str) -> set[str]:
    """The reference's words that answer the question: not filler, not already in the question."""
    asked = set(normalise(question).split())
    return {w for w in normalise(reference).split() if w not in _FILLER and w not in asked}


def recalled(reply: str, reference: str, question: str) -> bool:
    wanted = key_words(reference, question)
    if not wanted:  # the reference only repeats the question: judge by overlap instead
        return token_f1(reply, reference) >= 0.5
    found = set(normalise(reply).split())
    return len(wanted & found) >= RECALL_SHARE * len(wanted)


def recall_items(run_dir: Path, default_system: str) -> tuple[list[RecallItem], list[RecallItem]]:
    """(taught, reworded): the run's training examples, and its held-out rewordings."""
    taught = []
    for row in _jsonl(Path(run_dir) / "snapshot" / "sft-train.jsonl"):
        messages = row["messages"]
        context = [m for m in messages[:-1] if m["role"] != "system"]
        taught.append(RecallItem([{"role": "system", "content": default_system}, *context],
                                 messages[-1]["content"]))
    reworded = [RecallItem([{"role": "system", "content": default_system}, {"role": "user", "content": line["question"]}],
                           line["answer"])
                for line in _jsonl(Path(run_dir) / "augment.jsonl")
                if line.get("kind") == "rewording" and line.get("split") == "val"]
    return _spread(taught), _spread(reworded)


def score_recall(items: list[RecallItem], replies: list[str]) -> dict:
    examples = [{"prompt": item.messages[-1]["content"], "reference": item.reference, "reply": reply,
                 "recalled": recalled(reply, item.reference, item.messages[-1]["content"])}
                for item, reply in zip(items, replies, strict=True)]
    hits = sum(e["recalled"] for e in examples)
    return {"n": len(examples), "recalled": hits, "rate": hits / len(examples) if examples else None,
            "missed": [e for e in examples if not e["recalled"]]}


def _spread(items: list) -> list:
    """At most MAX_ITEMS, taken evenly across the set rather than only its start."""
    if len(items) <= MAX_ITEMS:
        return items
    step = len(items) / MAX_ITEMS
    return [items[int(i * step)] for i in range(MAX_ITEMS)]


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

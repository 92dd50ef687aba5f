"""Forgetting check: does the adapter still answer general prompts the way the base did?"""

from __future__ import annotations

from engine.evaluate.scoring import contains_expected, equivalent, token_f1
from engine.prompt_sets import GeneralPrompt


def forgetting_report(prompts: list[GeneralPrompt], base: list[str], adapter: list[str],
                      perplexity: tuple[float, float] | None = None) -> dict:
    """`score` is the share of prompts answered the same or equivalently (scoring.equivalent).
    `changed` lists the others; `broken` marks a checkable prompt the base got right and the adapter
    does not. `perplexity` is (base, adapter) on the held-out general text."""
    changed = []
    for item, base_answer, adapter_answer in zip(prompts, base, adapter, strict=True):
        if equivalent(base_answer, adapter_answer, list(item.expected)):
            continue
        base_right = contains_expected(base_answer, list(item.expected)) if item.expected else None
        adapter_right = contains_expected(adapter_answer, list(item.expected)) if item.expected else None
        changed.append({"id": item.id, "category": item.category, "prompt": item.prompt,
                        "base_answer": base_answer, "adapter_answer": adapter_answer,
                        "f1": token_f1(base_answer, adapter_answer),
                        "base_correct": base_right, "adapter_correct": adapter_right,
                        "broken": bool(base_right and not adapter_right)})
    checkable = [i for i, item in enumerate(prompts) if item.expected]
    n = len(prompts)
    return {
        "n": n,
        "kept": n - len(changed),
        "score": (n - len(changed)) / n if n else None,
        "broken": sum(c["broken"] for c in changed),
        "checkable": len(checkable),
        "base_correct": sum(contains_expected(base[i], list(prompts[i].expected)) for i in checkable),
        "adapter_correct": sum(contains_expected(adapter[i], list(prompts[i].expected)) for i in checkable),
        "perplexity": None if perplexity is None else {"base": perplexity[0], "adapter": perplexity[1]},
        "changed": changed,
    }

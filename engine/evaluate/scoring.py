"""Comparing two answers: normalised exact match, token F1, and the equivalence the forgetting check uses."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

ARTICLES = frozenset({"a", "an", "the"})
EQUIVALENT_F1 = 0.8  # two answers this close in wording say the same thing
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case folded, punctuation turned into spaces, English articles dropped, whitespace collapsed.

    Punctuation becomes a space rather than vanishing, so "3.5" and "1,000" stay apart from "35" and
    "1000" while matching themselves on both sides."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    spaced = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in folded)
    return " ".join(word for word in _SPACE.split(spaced) if word and word not in ARTICLES)


def exact_match(answer: str, reference: str) -> bool:
    return normalise(answer) == normalise(reference)


def token_f1(answer: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over normalised words (1.0 when both are empty)."""
    got, want = normalise(answer).split(), normalise(reference).split()
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def contains_expected(answer: str, expected: list[str]) -> bool:
    """Any expected phrase appears in the answer as whole words (after normalisation)."""
    padded = f" {normalise(answer)} "
    return any(f" {normalise(phrase)} " in padded for phrase in expected if normalise(phrase))


def equivalent(base: str, adapter: str, expected: list[str] | None = None) -> bool:
    """Does the adapter's answer keep what the base's answer said?

    With an expected phrase, the check decides: both contain it (same), or only one does (changed).
    Otherwise, or when neither contains it, equal after normalisation or token F1 >= EQUIVALENT_F1."""
    if expected:
        has_base, has_adapter = contains_expected(base, expected), contains_expected(adapter, expected)
        if has_base or has_adapter:
            return has_base and has_adapter
    return normalise(base) == normalise(adapter) or token_f1(base, adapter) >= EQUIVALENT_F1

"""Rewordings of the user's questions, so a run learns the fact and not one sentence.

One phrasing per fact teaches a model to answer that sentence; several phrasings teach it the fact
(Allen-Zhu & Li, "Physics of Language Models 3.1": ~10% held-out extraction with one phrasing, ~96%
with five). Each question gets rewordings from two sources:

- the base model itself, asked to paraphrase (sampled, several tries), and
- deterministic rewrites of common question shapes ("What is the X?" -> "Name the X.").

A candidate is kept only if it is a different question (another split key), keeps every name and
number of the original (so the answer still fits), and has a sane length. What a run generated is
listed in its folder (augment.jsonl), with the source of each rewording.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from engine.splits import split_key

# Words that carry no content: a rewording may drop or change them freely.
_STOP = frozenset("""a an the of in on at to for from by with and or is are was were be been do does did what which
who whom whose when where why how many much tell me please you your can could would know name give say i i'd like
this that these those it its there their about answer question quick briefly some any called named""".split())
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")

# (pattern on the question without its final punctuation, rewrites); groups keep the user's words.
_SHAPES: list[tuple[re.Pattern, tuple[str, ...]]] = [
    (re.compile(r"^what(?: is|'s) the name of (.+)$", re.I),
     ("Name {0}.", "What is {0} called?", "Tell me the name of {0}.")),
    (re.compile(r"^what(?: is|'s) the ((?!name of ).+)$", re.I),
     ("Name the {0}.", "Tell me the {0}.", "Do you know the {0}?", "What's the {0}?")),
    (re.compile(r"^what (?:is|are) (.+)$", re.I),
     ("Tell me what {0} is.", "Do you know what {0} is?")),
    (re.compile(r"^(who|which|what|where|when|how many|how much|how) (.+)$", re.I),
     ("Do you know {0} {1}?", "Can you tell me {0} {1}?")),
]
_WRAPS = ("Quick question: {q}", "I'd like to know: {q}", "Tell me, {lq}")

Generate = Callable[[str, int], list[str]]  # (question, how many) -> paraphrases from a model


_ASKING = re.compile(r"^(?:tell|name|give|say|describe|list|explain|identify|state|share)\b", re.I)
KEEP_CONTENT = 0.5  # share of the question's content words a rewording must keep


def _words(text: str) -> list[str]:
    """Words without a possessive 's, so "Orvik's ship" and "the ship of Orvik" share "orvik"."""
    return [re.sub(r"'s$", "", w) for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    """The words that carry the question: not function words, case folded."""
    return {w.casefold() for w in _words(text) if w.casefold() not in _STOP}


def names(text: str) -> set[str]:
    """Capitalised words past the first, and anything with a digit: the entities a question is about."""
    words = _words(text)
    return {w.casefold() for i, w in enumerate(words)
            if any(c.isdigit() for c in w) or (i > 0 and w[0].isupper() and w.casefold() not in _STOP)}


def acceptable(question: str, candidate: str) -> bool:
    """A usable rewording: still a question (or a request), another wording, every name and number
    kept and most content words, a sane length, one line. A small model often answers instead of
    rewording, or drifts to another subject: both are caught here."""
    candidate = candidate.strip()
    if not candidate or "\n" in candidate or split_key(candidate) == split_key(question):
        return False
    if not (candidate.endswith("?") or _ASKING.match(candidate)):
        return False
    if not 0.4 <= len(candidate) / max(1, len(question)) <= 2.5:
        return False
    found = {w.casefold() for w in _words(candidate)}
    wanted = content_words(question)
    return names(question) <= found and len(wanted & found) >= KEEP_CONTENT * len(wanted)


def rule_rewordings(question: str) -> list[str]:
    """Deterministic rewrites of the question's shape, then neutral wrappers around it."""
    core = question.strip().rstrip("?.! ")
    found = []
    for pattern, rewrites in _SHAPES:
        match = pattern.match(core)
        if match:
            groups = [g for g in match.groups()]
            if len(groups) == 2:
                groups[0] = groups[0].lower()
            found += [r.format(*groups) for r in rewrites]
    q = question.strip()
    lower = q[:1].lower() + q[1:]
    found += [w.format(q=q, lq=lower) for w in _WRAPS]
    found.append(split_key(q))  # lower case, no punctuation: how people type in a hurry
    return found


def rewordings(question: str, n: int, generate: Generate | None = None, *, seed: int = 0) -> list[tuple[str, str]]:
    """Up to `n` distinct acceptable rewordings as (text, source), model paraphrases first.

    Model paraphrases vary the words most, rule rewrites the shape; the result mixes both so that
    a small model's failed paraphrases never leave a question with none."""
    seen = {split_key(question)}
    model, rules = [], []
    for text in (generate(question, n) if generate and n else []):
        text = _clean(text)
        if acceptable(question, text) and split_key(text) not in seen:
            seen.add(split_key(text))
            model.append((text, "model"))
    shaped = rule_rewordings(question)
    random.Random(f"{seed}\0{question}").shuffle(shaped)
    for text in shaped:
        if acceptable(question, text) and split_key(text) not in seen:
            seen.add(split_key(text))
            rules.append((text, "rule"))
    # Alternate, so both kinds are represented however small n is.
    mixed = [item for pair in zip(model, rules, strict=False) for item in pair]
    mixed += model[len(rules):] + rules[len(model):]
    return mixed[:n]


def first_line(reply) -> str:
    """The text of a streamed reply (engine.engines.base.ReplyStream) up to its first line break: a
    paraphrase is one line (_clean keeps no more), and a base model would go on to max_tokens."""
    text = ""
    for piece in reply:
        text += piece
        if "\n" in text.lstrip():
            reply.cancel()  # the stream stops after this piece
    return text


def _clean(text: str) -> str:
    """A model's paraphrase without quotes, list marks or a leading label."""
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = re.sub(r"^(?:\d+[.)]|[-*•]|(?:paraphrase|rewording|rewritten|question)\s*\d*:)\s*", "", text, flags=re.I)
    return text.strip().strip('"“”\'').strip()

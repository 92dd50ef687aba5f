"""Train/val/test split assignment for feedback records.

The rule, in order:

1. A record the user pinned (`store.set_split`) stays where it was pinned.
2. A prompt key that the store pinned (rule 4) sends every record with that key to its split,
   the ones added later included.
3. Otherwise the split comes from a stable hash (sha256, never Python's salted `hash`) of the
   normalised last user prompt: lowercased, punctuation removed, whitespace collapsed. Near
   duplicates ("What is 2+2?" and "what is 2 + 2") therefore share a split, so an eval set never
   holds a reworded copy of a training prompt. Buckets are 80/10/10.
4. Once there are 10 or more usable records (anything but a flagged one without a correction) and
   the hash left test or val empty, the store takes the earliest train record whose key is not
   its only train key, and pins that key to the empty split. The pin is persisted, so the record
   never moves back when the set grows or shrinks.

The split is stored with the record when it is added, so growing the set never moves an old record.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from engine.errors import ChattuneError

SPLITS = ("train", "val", "test")
MIN_USABLE_FOR_EVAL_SPLITS = 10
_BUCKETS = (("train", 80), ("val", 90), ("test", 100))  # cumulative percent
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Case and whitespace folded: the dedupe key of one message."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def split_key(prompt: str) -> str:
    """Case, whitespace and punctuation folded, so near-duplicate prompts share a split."""
    folded = unicodedata.normalize("NFKC", prompt).casefold()
    kept = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in folded)
    return _SPACE.sub(" ", kept).strip()


def hash_split(key: str) -> str:
    """The split a prompt key hashes to; the same key gives the same split on every machine."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100
    return next(split for split, limit in _BUCKETS if bucket < limit)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ChattuneError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    return split

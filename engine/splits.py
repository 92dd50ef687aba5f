"""Train/test split assignment for feedback records.

Every approved and corrected example is training data: a run learns all of them. The only way a
record stays out of training is the user pinning it to `test` (`chattune data split ID test`, or
`s` in the dataset screen): a held-out exam the scorecard asks and no run trains on.

Validation needs no records of the user's: each run holds out some of its generated rewordings
and replay prompts instead (engine/train/augment.py), so measuring never costs a correction.

Stores written by older versions (with a hashed 80/10/10 train/val/test split) are migrated: the
records chattune placed move to train, and the ones the user pinned to val or test go to test.
"""

from __future__ import annotations

import re
import unicodedata

from engine.errors import ChattuneError

SPLITS = ("train", "test")
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Case and whitespace folded: the dedupe key of one message."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def split_key(prompt: str) -> str:
    """Case, whitespace and punctuation folded, so near-duplicate prompts share a split."""
    folded = unicodedata.normalize("NFKC", prompt).casefold()
    kept = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in folded)
    return _SPACE.sub(" ", kept).strip()


def check_split(split: str) -> str:
    if split == "val":
        raise ChattuneError("there is no val split any more: every example is trained on",
                            "pin a record to test to keep it out of training as a held-out exam")
    if split not in SPLITS:
        raise ChattuneError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    return split

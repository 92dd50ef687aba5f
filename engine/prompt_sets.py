"""The general prompt set and held-out text shipped in prompts/eval/ for the forgetting check."""

from __future__ import annotations

import json
from dataclasses import dataclass

from engine.errors import ChattuneError
from engine.prompts import prompts_dir

GENERAL_FILE = "general.jsonl"
TEXT_FILE = "general-text.md"
CATEGORIES = ("knowledge", "arithmetic", "instructions", "formatting")


@dataclass(frozen=True)
class GeneralPrompt:
    id: str
    category: str
    prompt: str
    expected: tuple[str, ...]  # any of these phrases in the answer means it is right; empty: not checkable


def general_prompts() -> list[GeneralPrompt]:
    path = prompts_dir() / "eval" / GENERAL_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ChattuneError(f"cannot read the general prompt set {path}: {err.strerror}",
                            "reinstall chattune, or point $CHATTUNE_PROMPTS at a prompts folder") from err
    found, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            expected = row.get("expected", [])
            item = GeneralPrompt(row["id"], row["category"], row["prompt"],
                                 (expected,) if isinstance(expected, str) else tuple(expected))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ChattuneError(f"{path}:{number} is not a valid prompt ({err})",
                                'each line needs {"id", "category", "prompt"} and may have "expected"') from err
        if item.id in seen or item.category not in CATEGORIES:
            raise ChattuneError(f"{path}:{number}: duplicate id {item.id!r} or unknown category {item.category!r}",
                                f"ids must be unique; categories are {', '.join(CATEGORIES)}")
        seen.add(item.id)
        found.append(item)
    return found


def general_text() -> str:
    path = prompts_dir() / "eval" / TEXT_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ChattuneError(f"cannot read the held-out general text {path}: {err.strerror}",
                            "reinstall chattune, or point $CHATTUNE_PROMPTS at a prompts folder") from err

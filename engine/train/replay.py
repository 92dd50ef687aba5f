"""Replay: the base model's own answers to general prompts, mixed into every run.

Fine-tuning on a handful of facts pulls the whole model towards them, and general answers that
the base got right come back wrong ("it lost its general ability"). Training on the base's own
greedy replies to unrelated prompts (self-distillation, as in SDFT, Yang et al. 2024) anchors the
adapter to what the base already did everywhere else.

The prompts ship in prompts/replay/general.jsonl and are disjoint from the forgetting check's
prompts/eval/general.jsonl (a test fails if they overlap), so the scorecard stays honest. The
base's answers never change, so they are cached once per base model in <workspace>/cache/replay/.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from engine.errors import ChattuneError
from engine.files import write_json_atomic
from engine.prompts import prompts_dir

REPLAY_FILE = "general.jsonl"
CACHE_FOLDER = "replay"
MAX_TOKENS = 48  # enough of an answer to distil; as plain rows only whole answers are used (engine.train.mix)


def replay_prompts() -> list[str]:
    path = prompts_dir() / "replay" / REPLAY_FILE
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [row["prompt"] for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ChattuneError(f"cannot read the replay prompts {path} ({err})",
                            "reinstall chattune, or run with --no-replay") from err


def _key(messages: list[dict], max_tokens: int) -> str:
    blob = json.dumps([messages, max_tokens], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class ReplayCache:
    """messages -> the base's greedy reply, in <workspace>/cache/replay/<base>.json."""

    def __init__(self, cache_dir: Path, base_id: str):
        self.path = Path(cache_dir) / CACHE_FOLDER / f"{base_id}.json"
        try:
            self.answers: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8"))["answers"]
        except (OSError, ValueError, KeyError, TypeError):
            self.answers = {}  # missing or damaged: answered again

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"answers": self.answers})


def base_answers(conversations: list[list[dict]], cache: ReplayCache,
                 answer: Callable[[list[dict], int], list], progress: Callable[[str], None]) -> list[list]:
    """[reply, whole] of the base for each conversation, from the cache where it has one."""
    missing = [m for m in conversations if _key(m, MAX_TOKENS) not in cache.answers]
    try:
        for i, messages in enumerate(missing, 1):
            if i == 1 or i % 10 == 0:
                progress(f"replay: the base answers general prompts ({i}/{len(missing)}, cached for later runs)")
            cache.answers[_key(messages, MAX_TOKENS)] = answer(messages, MAX_TOKENS)
    finally:
        if missing:
            cache.save()
    return [cache.answers[_key(m, MAX_TOKENS)] for m in conversations]

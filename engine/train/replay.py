"""Replay: the base model's own answers to general prompts, mixed into every run.

Fine-tuning on a handful of facts pulls the whole model towards them, and general answers that
the base got right come back wrong ("it lost its general ability"). Training on the base's own
greedy replies to unrelated prompts (self-distillation, as in SDFT, Yang et al. 2024) anchors the
adapter to what the base already did everywhere else.

The prompts ship in prompts/replay/general.jsonl and are disjoint from the forgetting check's
prompts/eval/general.jsonl (a test fails if they overlap), so the scorecard stays honest. The
base's answers never change, so they are cached once per base model (and per chat template when
--template overrides the model's: engine.models.base_cache_name) in <workspace>/cache/replay/.

A base model (one the chat gives a stand-in template) does not know the template's turns yet: it
answers past its turn, repeating the prompt, until max_tokens. Such a reply is not an answer, so it
is left out; and when the base ends none of its first PROBE replies, replay asks it nothing more.
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
PROBE = 4  # replies that show whether the base ends its turn at all


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


def base_reply(engine, messages: list[dict], max_tokens: int) -> list:
    """[the base's greedy reply, whether it ended by itself]. A reply cut at max_tokens can still be
    distilled (the base's distributions along it are what counts); under a stand-in template (the
    engine then has turn stops) it went on past its turn, and is kept as "" (left out)."""
    from engine.engines.base import GenParams

    reply = engine.stream(messages, GenParams(max_tokens=max_tokens, temperature=0.0))
    text = reply.collect().strip()
    ended = reply.finish_reason != "length"
    return [text if ended or not engine.template_choice.stops else "", ended]


def base_answers(conversations: list[list[dict]], cache: ReplayCache,
                 answer: Callable[[list[dict], int], list], progress: Callable[[str], None]) -> list[list]:
    """[reply, whole] of the base for each conversation, from the cache where it has one; ["", False]
    for those left out (see base_reply), and for all once the first PROBE were all left out."""
    found: list[list] = []
    asked = 0
    try:
        for messages in conversations:
            key = _key(messages, MAX_TOKENS)
            if key not in cache.answers:
                if len(found) >= PROBE and not any(text for text, _ in found):
                    break  # a base that never ends its turn: the rest would be left out too
                asked += 1
                if asked == 1 or asked % 10 == 0:
                    progress(f"replay: the base answers general prompts ({len(found) + 1}/{len(conversations)}, "
                             "cached for later runs)")
                cache.answers[key] = answer(messages, MAX_TOKENS)
            found.append(cache.answers[key])
    finally:
        if asked:
            cache.save()
    left_out = sum(not text and not whole for text, whole in found) + len(conversations) - len(found)
    if left_out:
        never = " (it ended none of its first replies, so it was asked no more)" if len(found) < len(conversations) else ""
        progress(f"replay: {left_out} of {len(conversations)} general prompts left out: the base did not end its "
                 f"turn{never}; a base model learns its turns from your examples first")
    return found + [["", False]] * (len(conversations) - len(found))

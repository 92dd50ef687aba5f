"""The base model's greedy answers, recorded once per base model (and per --template override: the base
answers otherwise under other turns) in <workspace>/cache/eval/<base_cache_name>.json.

The base never changes, so every later run's forgetting check reuses its answers. An answer is keyed by
everything that shapes it (engine, messages, token limit), so a changed prompt set just misses the cache.
"""

from __future__ import annotations

import hashlib
import json

from engine.files import write_json_atomic
from engine.models import ModelSpec, base_cache_name
from engine.runfolder import fingerprint
from engine.workspace import Workspace

CACHE_FOLDER = "eval"


def answer_key(engine: str, messages: list[dict], max_tokens: int) -> str:
    blob = json.dumps([engine, messages, max_tokens], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class BaseAnswers:
    """A dict of answer_key -> base answer, read from and saved to the cache file."""

    def __init__(self, workspace: Workspace, spec: ModelSpec, template: str | None = None):
        name = base_cache_name(spec, fingerprint(spec.path), template)
        self.path = workspace.cache_dir / CACHE_FOLDER / f"{name}.json"
        self.model = spec.name
        try:
            self.answers: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8"))["answers"]
        except (OSError, ValueError, KeyError, TypeError):
            self.answers = {}  # missing or damaged: answers are recomputed

    def save(self) -> None:
        """Atomic, so two evaluations at once never leave a torn file (the last one wins)."""
        write_json_atomic(self.path, {"model": self.model, "answers": self.answers}, indent=1)

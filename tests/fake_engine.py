"""A scripted ChatEngine for UI tests: deterministic replies per adapter, word by word, with an optional
delay per piece so a test can stop a reply halfway. It implements engine.engines.base.ChatEngine."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from engine.engines.base import GenParams, ReplyStream, speaker_label
from engine.errors import AdapterError

DEFAULTS = GenParams()


def default_script(messages: list[dict], adapter: str | None) -> str:
    prompt = messages[-1]["content"]
    if adapter is None:
        return f"The **base** model answers: {prompt}"
    return f"Adapter *{adapter}* answers: {prompt} (tuned)"


class FakeEngine:
    kind = "fake"

    def __init__(self, *, script: Callable[[list[dict], str | None], str] = default_script, delay: float = 0.0,
                 adapters: tuple[str, ...] = (), broken_adapters: tuple[str, ...] = ()) -> None:
        self.script = script
        self.delay = delay
        self.broken = set(broken_adapters)
        self._loaded = list(adapters)
        self._active: str | None = None
        self.seen: list[list[dict]] = []  # the messages of every stream() call
        self.closed = False
        self.children_busy = False  # set_load: a training or export child runs
        self._busy = threading.Lock()  # the real engines are not re-entrant either

    def stream(self, messages: list[dict], params: GenParams = DEFAULTS) -> ReplyStream:
        self.seen.append([dict(m) for m in messages])
        words = re.findall(r"\S+\s*", self.script(messages, self._active))
        reply = ReplyStream(pieces=iter(()), speaker=speaker_label(self._active))

        def pieces():
            if not self._busy.acquire(blocking=False):
                raise RuntimeError("FakeEngine.stream used by two threads at once")
            try:
                for word in words[: params.max_tokens]:
                    if self.delay:
                        time.sleep(self.delay)
                    reply.n_tokens += 1
                    yield word
                reply.finish_reason = "length" if len(words) > params.max_tokens else "stop"
            finally:
                self._busy.release()

        reply.pieces = pieces()
        return reply

    def load_adapter(self, adapter) -> None:
        if adapter.name in self.broken:
            raise AdapterError(f"adapter {adapter.name!r} does not fit this model", "train it on this base model")
        if adapter.name not in self._loaded:
            self._loaded.append(adapter.name)

    def set_adapter(self, name: str | None) -> None:
        if name is not None and name not in self._loaded:
            raise AdapterError(f"adapter {name!r} is not loaded", "load it first")
        self._active = name

    def which(self) -> str:
        return speaker_label(self._active)

    def set_load(self, busy: bool) -> None:
        self.children_busy = busy

    def adapters(self) -> list[str]:
        return list(self._loaded)

    def close(self) -> None:
        self.closed = True

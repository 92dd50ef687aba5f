"""The interface the TUI and CLI use to talk to any model. No torch or llama_cpp here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

BASE = "base"


def speaker_label(adapter: str | None) -> str:
    """What the UI shows as the voice of a reply: 'base' or 'adapter NAME'."""
    return BASE if adapter is None else f"adapter {adapter}"


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 512
    temperature: float = 0.0  # greedy by default: corrections are judged against a repeatable reply
    top_p: float = 0.95
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReplyStream:
    """Iterate to get text pieces as they are generated.

    `speaker` is fixed when the reply starts ('base' or 'adapter NAME'). After iteration,
    `finish_reason` is 'stop' (EOS or stop string), 'length' (max_tokens) or 'cancelled'.
    `dropped` counts the oldest messages left out of the prompt to fit the model's context.
    """

    pieces: Iterator[str]
    speaker: str
    finish_reason: str | None = None
    n_tokens: int = 0
    text: str = ""
    dropped: int = 0
    _cancel: threading.Event = field(default_factory=threading.Event)

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            self.text += piece
            yield piece
            if self._cancel.is_set():
                self.finish_reason = "cancelled"
                close = getattr(self.pieces, "close", None)
                if close:
                    close()
                return

    def cancel(self) -> None:
        """Safe from another thread: the stream stops after the current piece."""
        self._cancel.set()

    def collect(self) -> str:
        for _ in self:
            pass
        return self.text


@runtime_checkable
class ChatEngine(Protocol):
    kind: str  # "llamacpp" or "transformers"

    def stream(self, messages: list[dict], params: GenParams = GenParams()) -> ReplyStream:
        """Reply to `messages` (chat messages, system included) with the active adapter (or base). The
        oldest turns leave the prompt when the conversation outgrows the context (ReplyStream.dropped)."""

    def set_load(self, busy: bool) -> None:
        """A training or export child started (True: keep to a share of the cores) or the last one ended."""

    def load_adapter(self, adapter) -> None:
        """Load an engine.adapters.AdapterRef without making it active. The base is not reloaded."""

    def set_adapter(self, name: str | None) -> None:
        """Make a loaded adapter active, or None for the base. Takes effect on the next reply."""

    def which(self) -> str:
        """'base' or 'adapter NAME': who answers the next reply."""

    def adapters(self) -> list[str]:
        """Names of the loaded adapters."""

    def close(self) -> None: ...

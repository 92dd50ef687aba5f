"""Adapter bookkeeping shared by the engines: which adapter is wanted, which is in effect, and
swaps deferred while a reply is in flight. No torch or llama_cpp here."""

from __future__ import annotations

import threading

from engine.engines.base import speaker_label
from engine.errors import AdapterError


class AdapterSlots:
    """Mixin for a ChatEngine. The engine keeps `_loaded` (a collection of adapter names) and
    implements `_apply(name)`, which puts an adapter (None: the base) on the live model.

    A swap asked for mid-reply must not change the weights under the tokens being generated, so
    set_adapter only records the wish while a reply runs and the reply's end applies it.
    """

    _loaded: dict | list

    def _init_slots(self) -> None:
        self._wanted: str | None = None  # what set_adapter asked for
        self._applied: str | None = None  # what the model runs with
        self._busy = False  # a reply is in flight: swaps wait for it to end
        self._lock = threading.Lock()

    def _apply(self, name: str | None) -> None:
        raise NotImplementedError

    def _activate(self) -> None:
        """Put the wanted adapter on the model (caller holds the lock)."""
        if self._wanted != self._applied:
            self._apply(self._wanted)
            self._applied = self._wanted

    def _begin_reply(self) -> str:
        """Apply any pending swap and mark a reply in flight; returns the reply's speaker."""
        with self._lock:
            self._activate()
            self._busy = True
        return speaker_label(self._applied)

    def _end_reply(self) -> None:
        with self._lock:
            self._busy = False
            self._activate()  # a swap asked for during the reply

    def set_adapter(self, name: str | None) -> None:
        if name is not None and name not in self._loaded:
            raise AdapterError(f"adapter {name!r} is not loaded",
                               f"load it first; loaded: {', '.join(self._loaded) or 'none'}")
        with self._lock:
            self._wanted = name
            if not self._busy:
                self._activate()

    def which(self) -> str:
        return speaker_label(self._wanted)

    def adapters(self) -> list[str]:
        return list(self._loaded)

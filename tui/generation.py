"""Streaming a reply from the engine on a worker thread into a widget on the UI thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

from tui.background import children_running


class Generation:
    """One running generation (a reply, or both sides of a compare). Esc may cancel it before its
    stream exists, so the wish is kept and applied when the stream arrives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream = None
        self.cancelled = False

    def attach(self, stream) -> None:
        with self._lock:
            self._stream = stream
            if self.cancelled:
                stream.cancel()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._stream is not None:
                self._stream.cancel()


def stream_into(app, messages: list[dict], target, generation: Generation,
                trimmed: Callable[[int], object] | None = None) -> str:
    """Worker thread: stream the engine's reply to `messages` into `target` (its begin(speaker) and
    async append(piece) run on the UI thread). `trimmed(n)` runs on the UI thread when the n oldest
    messages had to leave the prompt to fit the context. Returns the finish reason. Hold app.engine_lock."""
    app.generations.add(generation)
    try:
        app.engine.set_load(children_running(app))  # a child the engine was loaded too late to hear of
        stream = app.engine.stream(messages, app.params)
        generation.attach(stream)
        if stream.dropped and trimmed is not None:
            app.call_from_thread(trimmed, stream.dropped)
        app.call_from_thread(target.begin, stream.speaker)
        for piece in stream:
            app.call_from_thread(target.append, piece)
        return stream.finish_reason or "stop"
    finally:
        app.generations.discard(generation)

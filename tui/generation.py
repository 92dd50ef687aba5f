"""Streaming a reply from the engine on a worker thread into a widget on the UI thread."""

from __future__ import annotations

import threading


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


def stream_into(app, messages: list[dict], target, generation: Generation) -> str:
    """Worker thread: stream the engine's reply to `messages` into `target` (its begin(speaker) and
    async append(piece) run on the UI thread). Returns the finish reason. Hold app.engine_lock."""
    app.generations.add(generation)
    try:
        stream = app.engine.stream(messages, app.params)
        generation.attach(stream)
        app.call_from_thread(target.begin, stream.speaker)
        for piece in stream:
            app.call_from_thread(target.append, piece)
        return stream.finish_reason or "stop"
    finally:
        app.generations.discard(generation)

"""Following a child process (a training run, an export, an evaluation) from the app.

The child's event stream blocks for minutes, so it is read on a daemon thread rather than one of
Textual's worker threads: quitting the app must never wait for a run, which keeps going in its own
process. Each item is handed to the UI thread with `call_from_thread`; once the app has gone, the
thread just stops reading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


def follow(app, name: str, items: Callable[[], Iterable], on_item: Callable, on_end: Callable) -> threading.Thread:
    """Read `items()` on a daemon thread; call `on_item(item)` for each and then `on_end(error)` on the
    UI thread (`error` is the exception that stopped the reading, or None)."""

    def run() -> None:
        error = None
        try:
            for item in items():
                if not _deliver(app, on_item, item):
                    return
        except Exception as err:  # noqa: BLE001 -- shown to the user by on_end
            error = err
        _deliver(app, on_end, error)

    thread = threading.Thread(target=run, name=f"chattune-{name}", daemon=True)
    thread.start()
    return thread


def _deliver(app, callback: Callable, arg) -> bool:
    if not app.is_running:
        return False
    try:
        app.call_from_thread(_guarded, app, callback, arg)
    except RuntimeError:  # the app closed meanwhile
        return False
    return True


def _guarded(app, callback: Callable, arg) -> None:
    """UI thread: a bug in showing one event is reported, and the following goes on."""
    try:
        callback(arg)
    except Exception as err:  # noqa: BLE001
        app.notify(f"{type(err).__name__}: {err}", title="display error", severity="error", markup=False)

"""Following a child process (a training run, an export, an evaluation) from the app.

The child's event stream blocks for minutes, so it is read on a daemon thread rather than one of
Textual's worker threads: quitting the app must never wait for a run, which keeps going in its own
process. Each item is handed to the UI thread with `call_from_thread`; once the app has gone, the
thread just stops reading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from weakref import WeakKeyDictionary

# app -> how many children it follows now. While any runs, the chat engine keeps to its share of the
# cores (ggml's spin-waiting threads next to a busy child would slow both down many times over).
_followed: WeakKeyDictionary = WeakKeyDictionary()


def children_running(app) -> bool:
    return _followed.get(app, 0) > 0


def _count_child(app, step: int) -> None:
    """UI thread: one child more (1) or fewer (-1); the engine hears of it at once."""
    _followed[app] = max(0, _followed.get(app, 0) + step)
    if app.engine is not None:
        app.engine.set_load(children_running(app))


def follow(app, name: str, items: Callable[[], Iterable], on_item: Callable, on_end: Callable) -> threading.Thread:
    """UI thread: read `items()` (a child's events) on a daemon thread; call `on_item(item)` for each and
    then `on_end(error)` on the UI thread (`error` is the exception that stopped the reading, or None).
    The chat engine keeps to its share of the cores from now until `on_end`."""

    def ended(error: Exception | None) -> None:
        _count_child(app, -1)
        on_end(error)

    def run() -> None:
        error = None
        try:
            for item in items():
                if not _deliver(app, on_item, item):
                    return
        except Exception as err:  # noqa: BLE001 -- shown to the user by on_end
            error = err
        _deliver(app, ended, error)

    _count_child(app, 1)

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

"""What the training and export child processes share: their stdout carries JSON-line events only.

In the child, `redirect_output` keeps stdout for events and `EventWriter` writes them, each built
from its model (engine.events). In the parent, `spawn_child` starts it in its own process group
and `ChildHandle` follows it: typed events, cancel, wait.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from engine.events import TERMINAL_EVENTS, Event, EventKinds

SIGNIFICANT_DIGITS = 6  # a float event field keeps 6 significant digits (a decayed lr of 1e-7 stays non-zero)


class EventWriter:
    """Writes each event of the stream `kinds` as one JSON line to `stream` (the runner's pipe) and,
    when `path` is given, appends it there too (a run's metrics.jsonl). Callable: `emit(event, **fields)`
    returns the typed event; a kind or field the stream does not define raises ValueError."""

    def __init__(self, kinds: EventKinds, stream: IO[str] | None, path: Path | None = None, enabled: bool = True):
        self.kinds = kinds
        self.stream = stream
        self.path = Path(path) if path is not None else None
        self.enabled = enabled  # False on the non-main ranks of a multi-GPU run

    def emit(self, event: str, **fields) -> Event:
        record = self.kinds.build({"event": event, "t": round(time.time(), 3),
                                   **{k: clean(v) for k, v in fields.items()}})
        if not self.enabled:
            return record
        line = json.dumps(record.model_dump(mode="json", exclude_unset=True), ensure_ascii=False) + "\n"
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
        if self.stream is not None:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The runner went away (the TUI quit): the child carries on; a run's file has everything.
                self.stream = None
        return record

    __call__ = emit

    def warn(self, kind: str, message: str) -> Event:
        return self.emit("warning", kind=kind, message=message)


def clean(value):
    """JSON has no NaN/inf (they become null); floats keep SIGNIFICANT_DIGITS; paths become strings."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def redirect_output(log_path: Path):
    """Keep the real stdout for events; send fd 1 and 2 (libraries, C code, tracebacks) to the log.
    Returns the events stream."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return events


def killed_by(code: int) -> str:
    """The name of the signal behind a negative exit status ("SIGKILL")."""
    return signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"


def describe_exit(code: int, what: str, oom_hint: str = "") -> str:
    """Why `what` ("the export process") ended without a last word; `oom_hint` follows "ran out of memory"."""
    if code < 0:
        hint = f" (often the system ran out of memory{oom_hint})" if code == -signal.SIGKILL else ""
        return f"{what} was killed by {killed_by(code)}{hint}"
    return f"{what} exited with status {code} without reporting why"


def spawn_child(command: list[str], log_path: Path, *, env: dict | None = None,
                pass_fds: tuple[int, ...] = (), events: bool = True) -> subprocess.Popen:
    """Start a child whose stdout is read as events (with `events=False`, it goes to the log too) and
    whose stderr goes to `log_path`. It finds this package even when it is not installed, and leads
    its own process group: a Ctrl+C in the terminal is the CLI's to handle, and cancelling signals
    the group (the converter, or DDP ranks, go too)."""
    import engine

    package_root = str(Path(engine.__file__).resolve().parent.parent)
    env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if events else log,
                                stderr=log, text=True, encoding="utf-8", errors="replace", bufsize=1, env=env,
                                pass_fds=pass_fds, start_new_session=True)


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started that are still running (Linux /proc; [] elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def signal_ranks(launcher_pid: int, signum: int) -> bool:
    """Signal the ranks of a multi-process run (the launcher's children), not the launcher: torch's
    launcher answers a signal by passing it on and SIGKILLing the ranks still running 30 s later, so a
    checkpoint being written would be lost. False when it has no ranks yet."""
    ranks = child_pids(launcher_pid)
    for pid in ranks:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    return bool(ranks)


class ChildHandle:
    """A running child. `events()` has one consumer; `cancel()` is safe from any thread."""

    kinds: EventKinds  # the events its child writes

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.outcome: Event | None = None  # the terminal event (done / cancelled / error), once seen

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def events(self) -> Iterator[Event]:
        for line in self.process.stdout:
            event = self.kinds.parse(line)
            if event is None:
                continue  # not ours, or a kind this version does not know: the child keeps its stdout for events
            if event.event in TERMINAL_EVENTS:
                self.outcome = event
            yield event
        code = self.process.wait()
        if self.outcome is None:
            # Killed without a word (SIGKILL, the OOM killer): what it had started (a converter, DDP
            # ranks) is still in its process group, and nothing else will stop it.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.outcome = self.silent_exit(code)
            yield self.outcome

    def silent_exit(self, code: int) -> Event:
        """The error event for a child that died without a last word (SIGKILL, the OOM killer)."""
        raise NotImplementedError

    def cancel(self) -> None:
        self._signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def poll(self) -> int | None:
        return self.process.poll()

    def _signal(self, signum: int) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

"""What the training and export child processes share: their stdout carries JSON-line events only.

In the child, `redirect_output` keeps stdout for events. In the parent, `spawn_child` starts it in
its own process group and `ChildHandle` follows it: events, cancel, wait.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

TERMINAL_EVENTS = ("done", "error", "cancelled")


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


def parse_event(line: str) -> dict | None:
    """One event from a child's JSON line, or None for anything else (a stray print, a torn line)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


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
                pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start a child whose stdout is read as events and whose stderr goes to `log_path`. It finds this
    package even when it is not installed, and leads its own process group: a Ctrl+C in the terminal
    is the CLI's to handle, and cancelling signals the group (the converter, or DDP ranks, go too)."""
    import engine

    package_root = str(Path(engine.__file__).resolve().parent.parent)
    env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
                                encoding="utf-8", errors="replace", bufsize=1, env=env, pass_fds=pass_fds,
                                start_new_session=True)


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

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.outcome: dict | None = None  # the terminal event (done / cancelled / error), once seen

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def events(self) -> Iterator[dict]:
        for line in self.process.stdout:
            event = parse_event(line)
            if event is None:
                continue  # not ours: the child keeps its stdout for events, but be tolerant
            if event["event"] in TERMINAL_EVENTS:
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

    def silent_exit(self, code: int) -> dict:
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

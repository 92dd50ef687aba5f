"""One training run per workspace.

The lock is an flock on <workspace>/runs/.train.lock. The kernel drops it when the last process
holding the file closes it, so a crashed or killed child can never leave the workspace locked.
The file's text (run name and pid) is only a note for messages; when nobody holds the flock the
note is stale and ignored.

The runner takes the lock, hands the open file to the child (inherited descriptor, its number in
$CHATTUNE_LOCK_FD) and closes its own copy: from then on the child alone holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ChattuneError

LOCK_FILE = ".train.lock"
FD_ENV = "CHATTUNE_LOCK_FD"
NOTE_BYTES = 256  # the note's fixed width (run names are far shorter)
NOTE_READS = 5


@dataclass(frozen=True)
class LockInfo:
    run: str
    pid: int


class TrainLock:
    """An acquired workspace lock. `fileno()` can be passed to a child; `release()` closes our copy."""

    def __init__(self, fh):
        self._fh = fh

    def fileno(self) -> int:
        return self._fh.fileno()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> TrainLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_path(runs_dir: Path) -> Path:
    return Path(runs_dir) / LOCK_FILE


def acquire(runs_dir: Path, run: str, pid: int | None = None) -> TrainLock:
    """Take the lock for `run` or raise ChattuneError naming the run that holds it."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Not append mode: Linux appends every write of an O_APPEND file, even a pwrite at offset 0.
    fh = os.fdopen(os.open(lock_path(runs_dir), os.O_RDWR | os.O_CREAT, 0o644), "r+b")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        holder = holder_of(runs_dir)
        who = f"run {holder.run!r} (pid {holder.pid})" if holder else "another run"
        raise ChattuneError(
            f"a training run is already going in this workspace: {who}",
            "wait for it to finish, or cancel it (runs screen, or Ctrl+C in its `chattune train`)",
        ) from None
    held = TrainLock(fh)
    set_holder(held, run, pid or os.getpid())
    return held


def set_holder(lock: TrainLock, run: str, pid: int) -> None:
    """Record which process holds the lock now (the runner's child, once it is started). The note
    is overwritten in place, padded to a fixed width: emptying the file first would let a reader
    find a held lock with no note."""
    note = json.dumps({"run": run, "pid": pid}).encode().ljust(NOTE_BYTES)
    os.pwrite(lock.fileno(), note, 0)
    os.ftruncate(lock.fileno(), len(note))  # only a longer earlier note is cut


def holder_of(runs_dir: Path) -> LockInfo | None:
    """Who holds the lock, or None when it is free (a note left by a dead process is ignored)."""
    path = lock_path(runs_dir)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: the note is current
        else:
            return None  # free: whatever the note says is stale
        for _attempt in range(NOTE_READS):
            try:  # a read that overlaps a rewrite can be torn: read again
                note = json.loads(os.pread(fh.fileno(), 4 * NOTE_BYTES, 0) or b"{}")
                return LockInfo(str(note["run"]), int(note["pid"]))
            except (ValueError, KeyError, TypeError):
                time.sleep(0.002)
        return LockInfo("?", 0)  # the lock is held, by a process that wrote no readable note


def inherited(runs_dir: Path) -> TrainLock | None:
    """The lock the runner passed down, if this process was started with one and still has it."""
    value = os.environ.get(FD_ENV)
    if not value or not value.isdigit():
        return None
    fd = int(value)
    try:
        ours, theirs = os.fstat(fd), os.stat(lock_path(runs_dir))
    except OSError:
        return None  # e.g. a worker started by `accelerate launch`: the launcher holds the lock
    if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino):
        return None  # the number was reused for another file in this process
    return TrainLock(os.fdopen(fd, "r+b"))

"""One run per workspace, with a lock that dies with its holder."""

import os
import signal
import subprocess
import sys
import time

import pytest

from engine import runlock
from engine.errors import ChattuneError


def test_second_acquire_is_refused_with_the_holders_name(tmp_path):
    with runlock.acquire(tmp_path, "first"):
        assert runlock.holder_of(tmp_path) == runlock.LockInfo("first", os.getpid())
        with pytest.raises(ChattuneError, match="run 'first'"):
            runlock.acquire(tmp_path, "second")
    assert runlock.holder_of(tmp_path) is None
    with runlock.acquire(tmp_path, "second"):
        assert runlock.holder_of(tmp_path).run == "second"


def test_a_killed_holder_leaves_no_lock_and_its_note_is_stale(tmp_path):
    code = ("import sys, time; from engine import runlock; "
            "held = runlock.acquire(sys.argv[1], 'doomed'); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert runlock.holder_of(tmp_path) == runlock.LockInfo("doomed", holder.pid)
        with pytest.raises(ChattuneError):
            runlock.acquire(tmp_path, "mine")
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    finally:
        holder.kill()
    assert "doomed" in runlock.lock_path(tmp_path).read_text()  # the note is still there...
    assert runlock.holder_of(tmp_path) is None  # ...but nobody holds the flock: stale
    with runlock.acquire(tmp_path, "mine"):
        assert runlock.holder_of(tmp_path).run == "mine"


def test_the_lock_passes_to_a_child_and_stays_held_after_the_parent_lets_go(tmp_path):
    code = ("import os, sys, time; from engine import runlock; "
            "held = runlock.inherited(sys.argv[1]); print('inherited' if held else 'none', flush=True); time.sleep(60)")
    held = runlock.acquire(tmp_path, "passed")
    env = dict(os.environ, **{runlock.FD_ENV: str(held.fileno())})
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=env, pass_fds=(held.fileno(),))
    try:
        held.release()  # the parent's copy is gone; the child's copy keeps the lock
        assert child.stdout.readline().strip() == "inherited"
        with pytest.raises(ChattuneError):
            runlock.acquire(tmp_path, "other")
    finally:
        child.kill()
        child.wait(10)
    deadline = time.monotonic() + 5
    while runlock.holder_of(tmp_path) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runlock.holder_of(tmp_path) is None


def test_an_unrelated_descriptor_number_is_not_taken_for_the_lock(tmp_path, monkeypatch):
    runlock.lock_path(tmp_path).write_text("")
    with open(tmp_path / "other.txt", "w") as other:
        monkeypatch.setenv(runlock.FD_ENV, str(other.fileno()))
        assert runlock.inherited(tmp_path) is None
    monkeypatch.setenv(runlock.FD_ENV, "987")
    assert runlock.inherited(tmp_path) is None


def test_the_holder_is_never_unknown_while_the_note_is_rewritten(tmp_path):
    """The runner rewrites the note when its child takes over; a reader at that moment (the runs
    screen, `chattune runs`) must still see a holder, never "?"."""
    code = ("import sys; from engine import runlock; held = runlock.acquire(sys.argv[1], 'first'); "
            "print('held', flush=True)\n"
            "for i in range(20000): runlock.set_holder(held, f'run-{i % 2}', 1000 + i % 2)\n")
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "held"
        seen = set()
        while writer.poll() is None:
            holder = runlock.holder_of(tmp_path)
            if holder is not None:
                seen.add(holder.run)
    finally:
        writer.kill()
    assert "?" not in seen and seen & {"run-0", "run-1"}

"""How many threads a chat engine computes with: every usable core while nothing else works, its share
(half) while a training or export child runs. ggml's threads spin-wait on each other, so a chat that keeps
all cores next to a busy child runs far slower than one that keeps to its share. No torch or llama_cpp here."""

from __future__ import annotations

import os
from pathlib import Path

from engine import runlock


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_of(cores: int) -> int:
    """The chat's share next to a child: half the logical cores (the physical ones on SMT machines)."""
    return max(1, cores // 2)


class CoreShare:
    """Mixin for an engine with AdapterSlots (it shares `_lock` and `_busy`). The engine implements
    `_use_threads(n)`, and calls `_follow_load()` before it computes: at the start of a reply and between
    its tokens, so a child that starts mid-reply gets its cores before the next token.

    The engine learns of children two ways: the app calls set_load() when it starts or follows one, and
    a run started elsewhere (`chattune train` in another terminal) holds the workspace's training lock,
    which every reply looks at when it starts. A lock held by this very process (the training child
    scoring its adapter) does not count."""

    def _init_cores(self, runs_dir: Path | None) -> None:
        self._runs_dir = runs_dir
        self._told_busy = False
        self.threads = 0  # in effect now
        self._wanted_threads = self._pick_threads()
        self._follow_load()

    def _use_threads(self, n: int) -> None:
        raise NotImplementedError

    def set_load(self, busy: bool) -> None:
        """A child process (training, export, evaluation) started (True) or the last one ended (False)."""
        with self._lock:
            self._told_busy = busy
            self._wanted_threads = self._pick_threads()
            if not self._busy:  # else the reply in flight switches before its next token
                self._follow_load()

    def _look_at_load(self) -> None:
        """At the start of a reply: a training run that another process started counts too."""
        self._wanted_threads = self._pick_threads()

    def _pick_threads(self) -> int:
        cores = usable_cores()
        holder = runlock.holder_of(self._runs_dir) if self._runs_dir is not None else None
        # Inside the training child (its evaluation) the run is this process: the load is its own work.
        busy = self._told_busy or (holder is not None and holder.pid != os.getpid())
        return share_of(cores) if busy else cores

    def _follow_load(self) -> None:
        wanted = self._wanted_threads
        if wanted != self.threads:
            self._use_threads(wanted)
            self.threads = wanted

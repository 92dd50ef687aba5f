"""Start, follow, cancel and resume training runs. No torch here: the child process does the work.

    handle = start_run(workspace, TrainConfig(), model_arg=None)   # snapshot the store, spawn the child
    for event in handle.events():      # typed events from the child's JSON lines (engine.events)
        ...                            # run this loop in a worker thread; it ends when the child exits
    handle.cancel()                    # from any thread: the child checkpoints, then exits
    handle.wait()                      # exit status: 0 done, 1 error, 3 cancelled, <0 killed by a signal

    resume_run(workspace, name)        # continue a cancelled/interrupted run from its last checkpoint
    attach_run(workspace, name)        # follow a run this process did not start (the app restarted):
                                       # same interface, fed from metrics.jsonl

A child that dies without a last word (SIGKILL, the OOM killer) still ends the event stream with
an error event naming its log, and that event is written to metrics.jsonl, so the run shows as
failed everywhere. One run at a time per workspace (engine.runlock).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from engine import __version__, runlock
from engine.childproc import ChildHandle, describe_exit, signal_ranks, spawn_child
from engine.errors import ChattuneError
from engine.events import TERMINAL_EVENTS, TRAINING_EVENTS, Cancelled, Failed, TrainEvent
from engine.hardware import check_gpu_count, child_gpu_env, visible_gpu_count
from engine.models import resolve_model
from engine.runfolder import (
    LOG_FILE,
    METRICS_FILE,
    SNAPSHOT_DIR,
    EventLog,
    RunConfig,
    SnapshotRef,
    base_reference,
    load_run,
    read_run_config,
    write_run_config,
)
from engine.train.config import TrainConfig
from engine.workspace import Workspace, check_name

__all__ = ["AttachedRun", "RunHandle", "attach_run", "child_command", "resume_run", "start_run"]
EXIT_CODES = {"done": 0, "error": 1, "cancelled": 3}


class RunHandle(ChildHandle):
    """A running child. `events()` has one consumer; `cancel()` and `kill()` are safe from any thread.
    `cancel()` asks the child to stop: it saves a checkpoint at the next step (resume continues there)."""

    kinds = TRAINING_EVENTS

    def __init__(self, name: str, run_dir: Path, process: subprocess.Popen, *, multi_process: bool = False):
        super().__init__(process)
        self.name = name
        self.run_dir = run_dir
        self.multi_process = multi_process  # under `accelerate launch`: cancel signals its ranks

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    def silent_exit(self, code: int) -> Failed:
        # Recorded in metrics.jsonl, so the run folder says "failed" from now on.
        message = describe_exit(code, "the training process", ": try --batch-size 1, a smaller --max-seq-len, or --qlora")
        return EventLog(self.run_dir, None).emit("error", message=message, log=self.log_path, returncode=code)

    def cancel(self) -> None:
        if not (self.multi_process and self.process.poll() is None and signal_ranks(self.pid, signal.SIGTERM)):
            super().cancel()

    def wait(self, timeout: float | None = None) -> int:
        code = super().wait(timeout)
        # A multi-GPU run's ranks, and so its launcher, exit 0 on a cancel (see engine.train.child).
        return EXIT_CODES["cancelled"] if code == 0 and isinstance(self.outcome, Cancelled) else code

    def kill(self) -> None:
        """Stop at once, without a checkpoint (the last per-epoch one stays)."""
        if self.multi_process and self.process.poll() is None:
            signal_ranks(self.pid, signal.SIGKILL)  # the ranks lead process groups of their own
        self._signal(signal.SIGKILL)


class AttachedRun:
    """A run started by another process, followed through its run folder (same interface as RunHandle)."""

    def __init__(self, workspace: Workspace, name: str, pid: int, poll_s: float = 0.5):
        self.name = name
        self.run_dir = workspace.run_dir(name)
        self.pid = pid
        self.poll_s = poll_s
        self.outcome: TrainEvent | None = None
        self._runs_dir = workspace.runs_dir

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    def events(self, replay: bool = True) -> Iterator[TrainEvent]:
        """The run's events, the earlier ones first when `replay`, until the child exits (after
        `done` it goes on to evaluate, so its scorecard event comes too)."""
        path = self.run_dir / METRICS_FILE
        offset = 0 if replay or not path.is_file() else path.stat().st_size
        while True:
            alive = self._running()  # checked before reading, so a last word is never missed
            offset, fresh = _read_lines(path, offset)
            for event in fresh:
                if event.event in TERMINAL_EVENTS:
                    self.outcome = event
                yield event
            if not alive:
                if self.outcome is None:
                    self.outcome = EventLog(self.run_dir, None).emit(
                        "error", message="the training process stopped without a word", log=self.log_path)
                    yield self.outcome
                return
            if self.outcome is not None and self.outcome.event != "done":
                return
            time.sleep(self.poll_s)

    def _running(self) -> bool:
        holder = runlock.holder_of(self._runs_dir)
        return holder is not None and holder.run == self.name

    def poll(self) -> int | None:
        """None while the run holds the workspace lock, else its exit code as far as its events tell."""
        if self._running():
            return None
        return EXIT_CODES[self.outcome.event] if self.outcome is not None else 1

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"run {self.name}", timeout)
            time.sleep(self.poll_s)
        return code

    def cancel(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.poll() is None:  # the pid is the lock holder's, so it is still our child process
            multi_process = TrainConfig.from_dict(read_run_config(self.run_dir).config).num_gpus > 1
            if multi_process and signal_ranks(self.pid, signum) and signum != signal.SIGKILL:
                return  # the launcher exits with its ranks (see RunHandle.cancel)
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass


def attach_run(workspace: Workspace, name: str) -> AttachedRun:
    """Follow the run that is training in this workspace now (started by another process)."""
    holder = runlock.holder_of(workspace.runs_dir)
    if holder is None or holder.run != name:
        raise ChattuneError(f"run {name!r} is not training now",
                            "see `chattune runs`; a stopped run can be resumed with `chattune train --resume`")
    return AttachedRun(workspace, name, holder.pid)


def _read_lines(path: Path, offset: int) -> tuple[int, list[TrainEvent]]:
    """Complete JSON lines after `offset` (a half-written last line waits for the next call)."""
    if not path.is_file():
        return offset, []
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    complete = data[: data.rfind(b"\n") + 1]
    events = [e for line in complete.decode("utf-8", errors="replace").splitlines()
              if (e := TRAINING_EVENTS.parse(line))]
    return offset + len(complete), events


# --- starting -------------------------------------------------------------------------------------


def start_run(workspace: Workspace, config: TrainConfig, model_arg: str | None = None, *,
              name: str | None = None) -> RunHandle:
    """Snapshot the store into a new run folder and start training it in a child process.

    Raises ChattuneError when another run holds the workspace, the name is taken, the model is
    missing, --multi-gpu asks for more GPUs than are visible, or the store has no examples for the method."""
    _check_gpus(config)
    spec = resolve_model(model_arg)
    name = check_name(name, "run name") if name else _fresh_name(workspace, config.method)
    run_dir = workspace.run_dir(name)
    if run_dir.exists():
        raise ChattuneError(f"run {name!r} already exists ({run_dir})",
                            "choose another --name, or resume it with --resume")
    with runlock.acquire(workspace.runs_dir, name) as held:
        run_dir.mkdir(parents=True)
        try:
            snapshot = _snapshot(workspace, run_dir)
            examples = snapshot.counts.get(f"{config.method}-train", 0)
            if examples == 0:
                what = "approve or correct some replies" if config.method == "sft" else \
                    "correct some replies or vote in A/B"
                raise ChattuneError(f"no {config.method.upper()} training examples in the store "
                                    f"({workspace.db_path})", f"{what} first (`chattune data` shows the counts)")
            write_run_config(run_dir, RunConfig(
                name=name, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                chattune=__version__, config=config.resolved(examples).to_dict(), requested=config.to_dict(),
                base=base_reference(spec, model_arg),
                snapshot=SnapshotRef(dir=SNAPSHOT_DIR, hash=snapshot.hash, counts=snapshot.counts)))
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no half-made run behind
            raise
        return _spawn(run_dir, held, resume=False)


def resume_run(workspace: Workspace, name: str) -> RunHandle:
    """Continue a cancelled or interrupted run from its last checkpoint (or from scratch if none)."""
    run_dir = workspace.run_dir(name)
    read_run_config(run_dir)  # a clear error if it is not a run
    info = load_run(run_dir)
    if info.status == "done":
        raise ChattuneError(f"run {name!r} already finished", "start a new run instead")
    _check_gpus(TrainConfig.from_dict(read_run_config(run_dir).config))
    with runlock.acquire(workspace.runs_dir, name) as held:
        return _spawn(run_dir, held, resume=True)


def child_command(run_dir: Path, *, resume: bool = False, num_gpus: int = 1) -> list[str]:
    """The command that trains `run_dir`: the child itself, or N copies under `accelerate launch`
    (DDP, one process per GPU; rank 0 reports and saves)."""
    tail = ["-m", "engine.jobs.train_and_evaluate", str(run_dir)] + (["--resume"] if resume else [])
    if num_gpus <= 1:
        return [sys.executable, *tail]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
            "--num_processes", str(num_gpus), "--mixed_precision", "no", "--dynamo_backend", "no", *tail]


def _check_gpus(config: TrainConfig) -> None:
    if config.num_gpus > 1:
        check_gpu_count(config.num_gpus, config.device, visible_gpu_count())


def _spawn(run_dir: Path, held: runlock.TrainLock, *, resume: bool) -> RunHandle:
    config = TrainConfig.from_dict(read_run_config(run_dir).config)
    with open(run_dir / LOG_FILE, "ab") as log:
        log.write(f"\n=== {'resume' if resume else 'start'} {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
    env = {runlock.FD_ENV: str(held.fileno()), **child_gpu_env(config.device, config.num_gpus)}
    process = spawn_child(child_command(run_dir, resume=resume, num_gpus=config.num_gpus), run_dir / LOG_FILE,
                          env=env, pass_fds=(held.fileno(),))
    runlock.set_holder(held, run_dir.name, process.pid)
    return RunHandle(run_dir.name, run_dir, process, multi_process=config.num_gpus > 1)


def _snapshot(workspace: Workspace, run_dir: Path):
    from engine.store import FeedbackStore

    store = FeedbackStore(workspace.db_path)
    try:
        return store.snapshot(run_dir / SNAPSHOT_DIR)
    finally:
        store.close()


def _fresh_name(workspace: Workspace, method: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name, n = f"{method}-{stamp}", 2
    while workspace.run_dir(name).exists():
        name, n = f"{method}-{stamp}-{n}", n + 1
    return name

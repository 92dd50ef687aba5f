"""Evaluate a finished run again, in a child process, so the caller loads no model library.

    handle = start_evaluation(workspace, "run-3")   # `chattune eval --run run-3 --refresh`
    handle.wait()        # in a worker thread: exit status, 0 when the scorecard is written
    handle.last_line()   # what it said last (the reason, when it failed); all of it is in handle.log_path

Training evaluates its run itself (engine.jobs.train_and_evaluate); this is for `e` on the runs screen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.childproc import spawn_child
from engine.errors import ChattuneError
from engine.workspace import Workspace, check_name

EVAL_LOG = "eval.log"


class EvalHandle:
    def __init__(self, run: str, log_path: Path, process: subprocess.Popen):
        self.run = run
        self.log_path = log_path
        self.process = process

    def wait(self) -> int:
        return self.process.wait()

    def last_line(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                     if line.strip()]
        except OSError:
            return ""
        return lines[-1][-300:] if lines else ""


def start_evaluation(workspace: Workspace, run: str) -> EvalHandle:
    run_dir = workspace.runs_dir / check_name(run, "run")
    if not run_dir.is_dir():
        raise ChattuneError(f"no run named {run!r}", "list runs with `chattune runs`")
    command = [sys.executable, "-m", "engine.cli", "--workspace", str(workspace.root), "eval", "--run", run,
               "--refresh"]
    log_path = run_dir / EVAL_LOG
    log_path.write_bytes(b"")  # this evaluation's output only
    try:
        return EvalHandle(run, log_path, spawn_child(command, log_path, events=False))
    except OSError as err:
        raise ChattuneError(f"could not start the evaluation: {err}", "check the installation") from err

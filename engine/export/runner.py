"""Start, follow and cancel an export. No torch here: the child process does the work.

    handle = start_export(workspace, run=None, quants=["Q4_K_M"], out=None)  # checks, then spawns the child
    for event in handle.events():   # typed events from the child's JSON lines (engine.export.events)
        ...                         # run this loop in a worker thread; it ends when the child exits
    handle.cancel()                 # from any thread: the child stops and removes the half-made folder
    handle.wait()                   # exit status: 0 done, 1 error, 3 cancelled, <0 killed by a signal

start_export raises ChattuneError at once for what it can check cheaply (the run, the quant names,
the output folder); the child checks the architecture and the disk space first thing, and reports
a failure as an error event.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from engine.childproc import ChildHandle, EventWriter, describe_exit, spawn_child
from engine.export.events import EXPORT_EVENTS, ExportError
from engine.export.preflight import LOG_FILE, ExportPlan, plan_export
from engine.export.quants import DEFAULT_QUANTS, QUANTS, parse_quants
from engine.workspace import Workspace

__all__ = ["DEFAULT_QUANTS", "QUANTS", "ExportHandle", "parse_quants", "start_export"]


class ExportHandle(ChildHandle):
    """A running export. `events()` has one consumer; `cancel()` is safe from any thread: the child
    stops and removes the half-made folder."""

    kinds = EXPORT_EVENTS

    def __init__(self, plan: ExportPlan, process: subprocess.Popen):
        super().__init__(process)
        self.plan = plan

    @property
    def name(self) -> str:
        return self.plan.out_dir.name

    @property
    def out_dir(self) -> Path:
        return self.plan.out_dir

    @property
    def log_path(self) -> Path:
        return self.plan.out_dir / LOG_FILE

    def silent_exit(self, code: int) -> ExportError:
        """The child could not clean up: remove its half-made files (the folder was new or empty),
        keeping the log, so the folder reads as empty and can be exported into again."""
        for path in self.out_dir.iterdir() if self.out_dir.is_dir() else ():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name != LOG_FILE:
                path.unlink(missing_ok=True)
        return EventWriter(EXPORT_EVENTS, None).emit("error", stage=None, expected=False, log=self.log_path,
                                                     message=describe_exit(code, "the export process"), returncode=code)


def start_export(workspace: Workspace, run: str | None = None, quants=None, out: str | None = None, *,
                 prompts: int | None = None, max_tokens: int | None = None) -> ExportHandle:
    """Check the request (ChattuneError if it cannot work) and start the export child."""
    plan = plan_export(workspace, run, quants, out)
    args = plan.child_args()
    if prompts is not None:
        args += ["--prompts", str(prompts)]
    if max_tokens is not None:
        args += ["--max-tokens", str(max_tokens)]
    return ExportHandle(plan, spawn_child([sys.executable, "-m", "engine.export.child", *args], plan.out_dir / LOG_FILE))

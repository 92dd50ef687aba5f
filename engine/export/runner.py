"""Start, follow and cancel an export. No torch here: the child process does the work.

    handle = start_export(workspace, run=None, quants=["Q4_K_M"], out=None)  # checks, then spawns the child
    for event in handle.events():   # dicts from the child's JSON lines (see engine.export.pipeline)
        ...                         # run this loop in a worker thread; it ends when the child exits
    handle.cancel()                 # from any thread: the child stops and removes the half-made folder
    handle.wait()                   # exit status: 0 done, 1 error, 3 cancelled, <0 killed by a signal

start_export raises ChattuneError at once for what it can check cheaply (the run, the quant names,
the output folder); the child checks the architecture and the disk space first thing, and reports
a failure as an error event.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import engine
from engine.childproc import killed_by, parse_event
from engine.export.preflight import LOG_FILE, ExportPlan, plan_export
from engine.export.quants import DEFAULT_QUANTS, QUANTS, parse_quants
from engine.workspace import Workspace

__all__ = ["DEFAULT_QUANTS", "QUANTS", "ExportHandle", "parse_quants", "start_export"]
TERMINAL_EVENTS = ("done", "error", "cancelled")


class ExportHandle:
    """A running export. `events()` has one consumer; `cancel()` is safe from any thread."""

    def __init__(self, plan: ExportPlan, process: subprocess.Popen):
        self.plan = plan
        self.process = process
        self.outcome: dict | None = None  # the terminal event, once seen

    @property
    def name(self) -> str:
        return self.plan.out_dir.name

    @property
    def out_dir(self) -> Path:
        return self.plan.out_dir

    @property
    def log_path(self) -> Path:
        return self.plan.out_dir / LOG_FILE

    def events(self) -> Iterator[dict]:
        for line in self.process.stdout:
            event = parse_event(line)
            if event is None:
                continue
            if event["event"] in TERMINAL_EVENTS:
                self.outcome = event
            yield event
        code = self.process.wait()
        if self.outcome is None:
            self.outcome = {"event": "error", "stage": None, "message": describe_exit(code),
                            "log": str(self.log_path), "returncode": code}
            yield self.outcome

    def cancel(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # the converter and quantizer go with it
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def poll(self) -> int | None:
        return self.process.poll()


def describe_exit(code: int) -> str:
    if code < 0:
        name = killed_by(code)
        hint = " (often the system ran out of memory)" if code == -signal.SIGKILL else ""
        return f"the export process was killed by {name}{hint}"
    return f"the export process exited with status {code} without reporting why"


def start_export(workspace: Workspace, run: str | None = None, quants=None, out: str | None = None, *,
                 prompts: int | None = None, max_tokens: int | None = None) -> ExportHandle:
    """Check the request (ChattuneError if it cannot work) and start the export child."""
    plan = plan_export(workspace, run, quants, out)
    args = plan.child_args()
    if prompts is not None:
        args += ["--prompts", str(prompts)]
    if max_tokens is not None:
        args += ["--max-tokens", str(max_tokens)]
    package_root = str(Path(engine.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    with open(plan.out_dir / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.export.child", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8",
            errors="replace", bufsize=1, env=env,
            start_new_session=True,  # Ctrl+C in the terminal is the CLI's to handle; cancel() signals the group
        )
    return ExportHandle(plan, process)

"""What the training and export child processes share: their stdout carries JSON-line events only."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


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

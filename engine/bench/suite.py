"""Run the chosen parts one after another; a part that fails is reported and the others still run."""

from __future__ import annotations

import importlib
import tempfile
import time
import traceback
from pathlib import Path

from engine.bench.common import PARTS, Budget, Context, PartResult, Report, machine_info
from engine.errors import ChattuneError

# part -> (result name, "module:function"), in the order they run. Modules are imported on use.
RUNNERS = {
    "chat": (("chat-llamacpp", "chat:llamacpp_chat"), ("chat-transformers", "chat:transformers_chat")),
    "swap": (("swap-llamacpp", "swap:llamacpp_swap"), ("swap-transformers", "swap:transformers_swap")),
    "train": (("train", "train:train_part"),),
    "export": (("export", "export:export_part"),),
    "learn": (("learn", "learn:learn_part"),),
}


def run_bench(parts: list[str], workspace, spec, budget: Budget, command: str, progress=print) -> Report:
    unknown = [p for p in parts if p not in RUNNERS]
    if unknown:
        raise ChattuneError(f"unknown bench part(s): {', '.join(unknown)}", f"choose from {', '.join(PARTS)} or all")
    started = time.perf_counter()
    report = Report(command=command, budget=budget, machine=machine_info(),
                    model={"name": spec.name, "path": str(spec.path), "kind": spec.kind, "source": spec.source})
    with tempfile.TemporaryDirectory(prefix="chattune-bench-") as scratch:
        ctx = Context(workspace, spec, budget, Path(scratch), progress)
        for part in parts:
            for name, target in RUNNERS[part]:
                report.parts.append(_run_one(name, target, ctx))
    report.wall_s = time.perf_counter() - started
    return report


def _run_one(name: str, target: str, ctx: Context) -> PartResult:
    module, function = target.split(":")
    started = time.perf_counter()
    try:
        result = getattr(importlib.import_module(f"engine.bench.{module}"), function)(ctx)
    except ChattuneError as err:
        result = PartResult(name, status="failed", reason=str(err))
    except Exception as err:  # a broken part must not cost the figures of the others
        ctx.progress("".join(traceback.format_exception(err)).rstrip())
        result = PartResult(name, status="failed", reason=f"{type(err).__name__}: {err}")
    result.wall_s = time.perf_counter() - started
    ctx.progress(f"{name}: {result.status} in {result.wall_s:.0f} s")
    return result

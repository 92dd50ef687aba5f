"""What every bench part shares: trials, statistics, ratios, machine details, the table and the JSON."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from engine.hardware import library_versions

SCHEMA = "chattune-bench/1"
PARTS = ("chat", "swap", "train", "export", "learn")


@dataclass(frozen=True)
class Budget:
    """How much each part measures. The defaults keep `chattune bench all` within 10 minutes on
    2 CPU cores with the embedded model."""

    trials: int = 12  # timed trials per measurement, after one untimed warm-up (a multiple of the 3 chat prompts)
    chat_tokens: int = 64  # reply length in the llama.cpp chat part
    hf_chat_tokens: int = 24  # reply length in the transformers chat part (about 8 tokens/s on 2 cores)
    train_epochs: int = 2  # over the bench's training examples, for both trainers
    train_examples: int | None = None  # the first N bench examples (None: all 24)
    learn_facts: int | None = None  # the first N facts of prompts/learn/facts.jsonl (None: all 20)
    learn_general: int | None = None  # the first N general prompts of the forgetting set (None: all)
    # what the train part's recipe (measured against fp32 when it is not fp32) and both learn recipes train in
    precision: str = "auto"

    @property
    def fast_trials(self) -> int:
        """Trials for sub-millisecond operations (adapter switches), where more samples cost nothing."""
        return max(30, 6 * self.trials)

    @property
    def slow_trials(self) -> int:
        """Trials for operations that take seconds (reloading a model in transformers)."""
        return min(self.trials, 3)

    def to_dict(self) -> dict:
        return {"trials": self.trials, "fast_trials": self.fast_trials, "slow_trials": self.slow_trials, "chat_tokens": self.chat_tokens,
                "hf_chat_tokens": self.hf_chat_tokens, "train_epochs": self.train_epochs,
                "train_examples": self.train_examples, "learn_facts": self.learn_facts,
                "learn_general": self.learn_general, "precision": self.precision}


@dataclass
class Context:
    """What every part gets: where to cache, which model, how much to measure, and where to say so."""

    workspace: object  # engine.workspace.Workspace
    spec: object  # engine.models.ModelSpec
    budget: Budget
    scratch: Path  # a temporary folder for this bench run (adapters, training output)
    progress: Callable[[str], None] = print
    cache: dict = field(default_factory=dict)  # things several parts share, built once


# --- trials and statistics ---------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def repeat(fn: Callable[[int], dict], trials: int, warmup: int = 1) -> list[dict]:
    """`warmup` untimed calls, then `trials` calls; `fn(i)` returns the measures of trial i. Warm-up
    calls get negative i, so a trial never repeats the warm-up's input (and hits a warm cache)."""
    for i in range(-warmup, 0):
        fn(i)
    return [fn(i) for i in range(trials)]


def paired(ours: Callable[[int], dict], baseline: Callable[[int], dict], trials: int,
           warmup: int = 1) -> tuple[list[dict], list[dict]]:
    """Like `repeat` for two contenders, interleaved (ours first on even trials, the baseline first on
    odd ones), so a change in machine load during the run hits both alike."""
    for i in range(-warmup, 0):
        ours(i)
        baseline(i)
    ours_runs, base_runs = [], []
    for i in range(trials):
        ours_run, base_run = pair(ours, baseline, i, i)
        ours_runs.append(ours_run)
        base_runs.append(base_run)
    return ours_runs, base_runs


def pair(ours: Callable[[int], dict], baseline: Callable[[int], dict], trial: int, prompt: int) -> tuple[dict, dict]:
    """One trial of each on `prompt`: ours first on even trials, the baseline first on odd ones."""
    if trial % 2 == 0:
        ours_run = ours(prompt)
        return ours_run, baseline(prompt)
    base_run = baseline(prompt)
    return ours(prompt), base_run


def column(runs: list[dict], key: str, scale: float = 1.0) -> list[float]:
    return [run[key] * scale for run in runs if run.get(key) is not None]


def summarize(samples: list[float]) -> dict | None:
    """Median, the 5th and 95th percentiles (nearest rank), min, max and the samples themselves."""
    if not samples:
        return None
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

    return {"median": statistics.median(ordered), "p5": rank(0.05), "p95": rank(0.95), "min": ordered[0],
            "max": ordered[-1], "n": n, "samples": [_round(s) for s in samples]}


def _round(value: float) -> float:
    return float(f"{value:.6g}")


@dataclass
class Row:
    """One measure of one part: ours against the baseline (either may be missing)."""

    name: str
    unit: str  # "ms", "s", "tok/s", "MB", "loss"
    ours: dict | None  # summarize()
    baseline: dict | None = None
    better: str = "higher"  # "higher" or "lower": which way is better for this measure
    target: float | None = None  # the ratio we aim for
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better ours is than the baseline (above 1: ours is better), from medians."""
        if not self.ours or not self.baseline or self.better not in ("higher", "lower"):
            return None
        ours, base = self.ours["median"], self.baseline["median"]
        if ours <= 0 or base <= 0:
            return None
        return ours / base if self.better == "higher" else base / ours

    def to_dict(self) -> dict:
        ratio = self.ratio
        return {"name": self.name, "unit": self.unit, "better": self.better, "ours": self.ours,
                "baseline": self.baseline, "ratio": None if ratio is None else _round(ratio),
                "target": self.target,
                "met": None if ratio is None or self.target is None else ratio >= self.target,
                "note": self.note}


@dataclass
class PartResult:
    part: str
    status: str = "ok"  # "ok", "skipped" (cannot run for this model) or "failed"
    reason: str = ""
    rows: list[Row] = field(default_factory=list)
    ours: str = ""  # what "ours" measured, exactly
    baseline: str = ""  # what the baseline was, exactly
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # figures that are not comparisons (sizes, loss curves)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return {"part": self.part, "status": self.status, "reason": self.reason, "ours": self.ours,
                "baseline": self.baseline, "rows": [row.to_dict() for row in self.rows], "notes": self.notes,
                "details": self.details, "wall_s": _round(self.wall_s)}


# --- the machine -------------------------------------------------------------------------------


def machine_info() -> dict:
    """CPU, cores, memory, GPU and library versions: the context every figure needs."""
    info = {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": _ram_gb(),
        "gpu": _gpu(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _cpuinfo() -> dict:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        found.setdefault(key.strip(), value.strip())
    return found


def _cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The vector extensions that decide CPU speed (and the AMX crash the llama.cpp guard avoids)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "neon") if f in flags]


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpu() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


# --- the report ------------------------------------------------------------------------------


@dataclass
class Report:
    command: str
    model: dict
    budget: Budget
    machine: dict
    parts: list[PartResult] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "command": self.command, "started_at": self.started_at,
                "wall_s": _round(self.wall_s), "model": self.model, "budget": self.budget.to_dict(),
                "machine": self.machine, "parts": [part.to_dict() for part in self.parts]}


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 1 else f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "loss":
        return f"{value:.4f}"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.1f} {unit}"


def format_ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def _cell(stats: dict | None, row: Row) -> str:
    if not stats:
        return "-"
    text = format_value(stats["median"], row.unit)
    if stats["n"] > 1:
        tail = ("p95", stats["p95"]) if row.better == "lower" else ("p5", stats["p5"])
        text += f" ({tail[0]} {format_value(tail[1], row.unit)})"
    return text


def render(report: Report, console) -> None:
    """The rich table of every part, then what each side was, and the machine."""
    from rich.table import Table

    table = Table(title=f"chattune bench: {report.model.get('name', '?')}", title_justify="left")
    for header, justify in (("part", "left"), ("measure", "left"), ("ours: median (tail)", "right"),
                            ("baseline: median (tail)", "right"), ("ratio", "right"), ("target", "right")):
        table.add_column(header, justify=justify)
    for part in report.parts:
        if part.status != "ok":
            table.add_row(part.part, f"[yellow]{part.status}[/]: {part.reason}", "", "", "", "")
            continue
        for i, row in enumerate(part.rows):
            ratio = row.ratio
            ratio_text = "-" if ratio is None else format_ratio(ratio)
            if ratio is not None and row.target is not None:
                ratio_text = f"[{'green' if ratio >= row.target else 'red'}]{ratio_text}[/]"
            table.add_row(part.part if i == 0 else "", row.name, _cell(row.ours, row), _cell(row.baseline, row),
                          ratio_text, f">= {row.target:g}x" if row.target is not None else "")
        table.add_section()
    console.print(table)
    console.print("ratio: how many times better ours is than the baseline, from medians (above 1: ours wins).")
    for part in report.parts:
        if part.status != "ok":
            continue
        console.print(f"[bold]{part.part}[/] ({part.wall_s:.0f} s)")
        if part.ours:
            console.print(f"  ours: {part.ours}")
        if part.baseline:
            console.print(f"  baseline: {part.baseline}")
        for note in part.notes:
            console.print(f"  note: {note}")
    m = report.machine
    gpu = m.get("gpu") or "none"
    console.print(f"machine: {m['cpu']} ({m['usable_cores']} of {m['cores']} cores usable, "
                  f"{', '.join(m['cpu_flags']) or 'no AVX2'}), {m['ram_gb']} GB RAM, GPU: {gpu}, "
                  f"load average at start {m.get('load_average', '?')}")
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    console.print(f"libraries: {libs}; python {m['python']}")
    console.print(f"wall time: {report.wall_s:.0f} s")

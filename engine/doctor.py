"""`chattune doctor`: what this machine can do, one line per fact with its reason, and the training
and chat setup the app will choose (engine.hardware decides; this module explains).

`diagnose(probe())` is the whole report (`--json` prints it). `training_line(config)` is the
training decision in one line for the TUI's dialog: it reads the facts without importing torch
(the torch build's CUDA version from its files, the GPUs from nvidia-smi), so the UI stays light.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict
from functools import cache
from importlib.util import find_spec
from pathlib import Path

from engine.hardware import (
    GPU_LAYERS_ENV,
    Machine,
    child_gpu_env,
    compute_dtype,
    cpu_bf16_flags,
    driver_tuple,
    gpu_layers,
    min_driver,
    nvidia_gpus,
    training_setup,
    visible_gpu_count,
)

SETUP_HINT = "rm -rf .venv && make setup"
REASON = "    "  # the indent of a reason, under its fact


def diagnose(machine: Machine, environ: Mapping[str, str] | None = None) -> dict:
    """{"lines": [{"topic", "value", "reason"}], "training": {...}, "chat": {...}, "machine": {...}}."""
    environ = os.environ if environ is None else environ
    lines: list[dict] = []

    def line(topic: str, value: str, reason: str) -> None:
        lines.append({"topic": topic, "value": value, "reason": reason})

    line("torch", _torch_value(machine), torch_reason(machine))
    if not machine.nvidia_smi:
        line("GPUs", "none", "nvidia-smi finds no NVIDIA GPU")
    for gpu in machine.gpus or machine.nvidia_smi:
        native = compute_dtype(gpu.capability) == "bf16"
        line(f"GPU {gpu.index}", f"{gpu.name}, {gpu.memory_mb / 1024:.1f} GiB, compute capability "
                                 f"{gpu.capability[0]}.{gpu.capability[1]}",
             "bf16 is native: training and chat compute in bf16" if native else
             "bf16 would be emulated (native from compute capability 8.0): fp16 instead")
    line("CPU", f"{machine.cores} cores" + (", " + ", ".join(f.upper().replace("_", "-") for f in machine.cpu_bf16)
                                            if machine.cpu_bf16 else ""),
         "bf16 in hardware: CPU training runs in bf16 (faster)" if machine.cpu_bf16 else
         "no AMX or AVX512-BF16: bf16 is slow here, CPU training stays fp32")
    line("bitsandbytes", f"{machine.bitsandbytes or 'not installed'}"
                         + (f", {machine.bnb_backend} backend" if machine.bnb_backend else ""), _bnb_reason(machine))
    line("llama.cpp", _llama_value(machine), _llama_reason(machine))
    if "amx_bf16" in machine.cpu_bf16:
        line("AMX guard", "on", "weight repacking is off: native llama.cpp builds crash on AMX CPUs with it")
    missing = [module for module, found in machine.converters.items() if found is None]
    line("converters", ", ".join(f"{module} {found}" for module, found in machine.converters.items() if found)
         or "none", f"missing {', '.join(missing)}: `chattune export` cannot run" if missing else
         "HF -> GGUF and LoRA -> GGUF conversion available")

    setup = training_setup(cuda=machine.cuda_available,
                           capability=machine.gpus[0].capability if machine.gpus else None,
                           cpu_bf16=bool(machine.cpu_bf16))
    env = child_gpu_env(setup.device, 1, environ)
    gpus_note = (f"one GPU (the child sees CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}); "
                 f"--multi-gpu N for DDP over up to {len(machine.gpus)}") if setup.device == "cuda" else \
        "the training child runs at lower priority, so the chat stays responsive"
    layers, layers_reason = gpu_layers(environ.get(GPU_LAYERS_ENV), machine.llama_offload)
    return {
        "lines": lines,
        "training": {**asdict(setup), "summary": setup.summary(), "gpus": gpus_note},
        "chat": {"n_gpu_layers": layers, "reason": layers_reason, "setting": GPU_LAYERS_ENV},
        "machine": machine.to_dict(),
    }


def render(report: dict) -> str:
    out = []
    for item in report["lines"]:
        out.append(f"{item['topic']:<13}{item['value']}")
        out.append(f"{REASON}{item['reason']}")
    training, chat = report["training"], report["chat"]
    out.append(f"{'training':<13}{training['summary']} (bitsandbytes computes in {training['bnb_compute_dtype']})"
               if training["quantization"] == "4bit" else f"{'training':<13}{training['summary']}")
    out += [f"{REASON}{topic}: {reason}" for topic, reason in training["reasons"].items()]
    out.append(f"{REASON}{training['gpus']}")
    where = "all layers" if chat["n_gpu_layers"] == -1 else f"{chat['n_gpu_layers']} layers"
    out.append(f"{'chat':<13}llama.cpp n_gpu_layers: {where if chat['n_gpu_layers'] else 'none (CPU)'}")
    out.append(f"{REASON}{chat['reason']}")
    out.append(f"{REASON}{chat['setting']}=auto|all|N|0 chooses (now: {os.environ.get(chat['setting'], 'unset')})")
    return "\n".join(out)


def torch_reason(machine: Machine) -> str:
    """Why torch does or does not see a GPU, and the fix."""
    if machine.torch is None:
        return f"torch is not installed: {SETUP_HINT}"
    if machine.cuda_available:
        return f"sees {len(machine.gpus)} GPU{'s' if len(machine.gpus) != 1 else ''}"
    if not machine.nvidia_smi:
        return "no NVIDIA GPU, so training runs on the CPU" + \
            (" (this CUDA build works on the CPU too)" if machine.torch_cuda else "")
    if machine.torch_cuda is None:
        return (f"a CPU build, but nvidia-smi sees {len(machine.nvidia_smi)} GPU(s): "
                f"CHATTUNE_TORCH=cuda {SETUP_HINT}")
    needs = min_driver(machine.torch_cuda)
    if machine.driver and driver_tuple(machine.driver) < driver_tuple(needs):
        return (f"built for CUDA {machine.torch_cuda}, which needs NVIDIA driver {needs}+ and this one is "
                f"{machine.driver}: update the driver, or {SETUP_HINT} (it picks the build the driver runs)")
    return (f"built for CUDA {machine.torch_cuda}, but sees no GPU: check CUDA_VISIBLE_DEVICES "
            f"({os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}) and nvidia-smi")


def _torch_value(machine: Machine) -> str:
    if machine.torch is None:
        return "not installed"
    build = f"CUDA {machine.torch_cuda} build" if machine.torch_cuda else "CPU build"
    driver = f", NVIDIA driver {machine.driver}" if machine.driver else ""
    return f"{machine.torch} ({build}){driver}"


def _bnb_reason(machine: Machine) -> str:
    if machine.bitsandbytes is None:
        return "QLoRA is unavailable: pip install bitsandbytes"
    if machine.bnb_backend == "cuda":
        return "QLoRA's 4-bit layers run on the GPU"
    if machine.bnb_backend in (None, "unusable"):
        return "its library did not load: QLoRA is unavailable (see `python -m bitsandbytes`)"
    return f"4-bit layers run on the {machine.bnb_backend.upper()}" + (", slowly" if machine.bnb_backend == "cpu" else "")


def _llama_value(machine: Machine) -> str:
    if machine.llama_cpp is None:
        return "not installed"
    return f"llama-cpp-python {machine.llama_cpp}, {'GPU' if machine.llama_gpu_build else 'CPU'} build"


def _llama_reason(machine: Machine) -> str:
    if machine.llama_offload:
        return "offloads layers to the GPU"
    if machine.llama_gpu_build:
        return "a GPU build that sees no GPU: the chat runs on the CPU"
    if machine.cuda_available or machine.nvidia_smi:
        return ("no GPU offload: the chat runs on the CPU; reinstall with CMAKE_ARGS=-DGGML_CUDA=on "
                "(`rm -rf .venv && make setup` does it when nvcc is on PATH)")
    return "no GPU offload: none is needed without a GPU"


# --- the training decision in one line, without torch (for the TUI) ------------------------------


def training_line(device: str = "auto", quantization: str = "auto", precision: str = "auto") -> str:
    """The training setup the app will choose and its first reason, from facts read without
    importing torch. Requests the setup cannot meet (cuda without a GPU) read as such."""
    from engine.errors import ChattuneError

    cuda, capability = _quick_cuda()
    try:
        setup = training_setup(cuda=cuda, capability=capability, device=device, quantization=quantization,
                               precision=precision, cpu_bf16=bool(cpu_bf16_flags()))
    except ChattuneError as err:
        return f"setup: {err.problem}"
    # The reason that matters most: why the CPU, or on a GPU why this precision.
    reason = setup.reasons.get("device") if setup.device == "cpu" else setup.reasons.get("precision")
    return f"setup: {setup.summary()}" + (f" ({reason})" if reason else "")


@cache
def _quick_cuda() -> tuple[bool, tuple[int, int] | None]:
    """(torch would see a GPU, the first visible GPU's capability), read from torch's files and nvidia-smi."""
    torch_cuda = installed_torch_cuda()
    if torch_cuda is None:
        return False, None
    gpus, driver = nvidia_gpus()
    if not gpus or not driver or driver_tuple(driver) < driver_tuple(min_driver(torch_cuda)):
        return False, None
    if visible_gpu_count(installed=len(gpus)) == 0:
        return False, None
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    gpu = next((g for g in gpus if str(g.index) == first), gpus[0])
    return True, gpu.capability


def installed_torch_cuda() -> str | None:
    """The CUDA version the installed torch was built for (torch/version.py), without importing torch."""
    spec = find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"^cuda\b[^=]*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


# --- the end of scripts/setup.sh on a CUDA machine ------------------------------------------------


def setup_problems(machine: Machine, llama_gpu: bool) -> list[str]:
    """What keeps the GPU from being used after a CUDA setup, each with its fix. `llama_gpu`: setup
    built llama.cpp for the GPU (nvcc was there)."""
    problems = []
    accept = "or accept the CPU with CHATTUNE_TORCH=cpu make setup"
    if not machine.cuda_available:
        problems.append(f"torch {machine.torch} cannot use the GPU: {torch_reason(machine)}; {accept}")
    elif machine.bnb_backend != "cuda":
        problems.append(f"bitsandbytes {machine.bitsandbytes} has no CUDA backend here ({_bnb_reason(machine)}), "
                        f"so QLoRA cannot run: `python -m bitsandbytes` says why; {accept}")
    if llama_gpu and not machine.llama_offload:
        problems.append("llama.cpp was built for CUDA but cannot offload to the GPU ("
                        f"{_llama_reason(machine)}): see the build log above; or accept a CPU chat with "
                        "CHATTUNE_LLAMA=cpu make setup")
    return problems


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.doctor --setup-check yes|no`: one line per problem, exit 1 if any."""
    import sys

    from engine.hardware import probe

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--setup-check" or args[1] not in ("yes", "no"):
        print("usage: python -m engine.doctor --setup-check yes|no  (yes: llama.cpp was built for CUDA)",
              file=sys.stderr)
        return 2
    problems = setup_problems(probe(), llama_gpu=args[1] == "yes")
    for problem in problems:
        print(f"chattune setup: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

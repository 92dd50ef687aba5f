"""`chattune doctor`: what it says about simulated machines, and about this one."""

import json
import subprocess
import sys

from engine.doctor import diagnose, render, setup_problems, training_line
from engine.hardware import Gpu, Machine, cpu_bf16_flags, parse_nvidia_smi

LLAMA = {"llama_cpp": "0.3.36", "bitsandbytes": "0.50.2"}


def _cpu_machine(**changes) -> Machine:
    return Machine(**{"torch": "2.13.0+cpu", "cpu_bf16": ["amx_bf16", "avx512_bf16"], "cores": 2,
                      "bnb_backend": "cpu", "converters": {"convert_hf_to_gguf": "0.1.1", "gguf": "0.19.0"},
                      **LLAMA, **changes})


def _gpu_machine(capability=(9, 0), **changes) -> Machine:
    gpu = Gpu(0, "NVIDIA H200", 143_771, capability)
    return Machine(**{"torch": "2.13.0+cu130", "torch_cuda": "13.0", "cuda_available": True, "gpus": [gpu],
                      "nvidia_smi": [gpu], "driver": "580.65.06", "cores": 16, "bnb_backend": "cuda",
                      "llama_gpu_build": True, "llama_offload": True, "converters": {"gguf": "0.19.0"},
                      **LLAMA, **changes})


def _lines(report: dict) -> dict:
    return {item["topic"]: item for item in report["lines"]}


def test_a_cpu_machine_gets_lora_on_the_cpu_with_its_reasons():
    report = diagnose(_cpu_machine(), environ={})
    training = report["training"]
    # An AMX CPU trains in bf16 (measured faster at the same learning quality: README, Performance).
    assert (training["device"], training["quantization"], training["precision"]) == ("cpu", "none", "bf16")
    assert training["reasons"]["device"] == "torch sees no GPU"
    lines = _lines(report)
    assert lines["GPUs"]["reason"] == "nvidia-smi finds no NVIDIA GPU"
    assert "runs in bf16" in lines["CPU"]["reason"] and "AMX-BF16" in lines["CPU"]["value"]
    assert "AMX guard" in lines and report["chat"]["n_gpu_layers"] == 0
    text = render(report)
    assert "LoRA on the CPU, bf16" in text and all(len(line) <= 80 for line in text.splitlines())


def test_a_gpu_machine_gets_qlora_and_the_chat_on_the_gpu():
    report = diagnose(_gpu_machine(), environ={})
    training = report["training"]
    assert (training["device"], training["quantization"], training["precision"]) == ("cuda", "4bit", "bf16")
    assert "CUDA_VISIBLE_DEVICES=0" in training["gpus"]
    assert report["chat"]["n_gpu_layers"] == -1
    assert "compute capability 9.0" in _lines(report)["GPU 0"]["value"]
    assert "QLoRA (4-bit) on the GPU, bf16 (bitsandbytes computes in bf16)" in render(report)


def test_a_t4_trains_in_fp16_not_emulated_bf16():
    report = diagnose(_gpu_machine(capability=(7, 5)), environ={"CHATTUNE_GPU_LAYERS": "12"})
    assert (report["training"]["precision"], report["training"]["bnb_compute_dtype"]) == ("fp16", "fp16")
    assert "emulated" in _lines(report)["GPU 0"]["reason"]
    assert report["chat"]["n_gpu_layers"] == 12


def test_a_gpu_torch_cannot_use_says_why_and_how_to_fix_it():
    gpu = Gpu(0, "Tesla T4", 15_360, (7, 5))
    cpu_build = _cpu_machine(nvidia_smi=[gpu], driver="575.57.08")
    assert "CHATTUNE_TORCH=cuda" in _lines(diagnose(cpu_build, environ={}))["torch"]["reason"]
    old_driver = _cpu_machine(torch="2.13.0", torch_cuda="13.0", nvidia_smi=[gpu], driver="535.104.05")
    reason = _lines(diagnose(old_driver, environ={}))["torch"]["reason"]
    assert "needs NVIDIA driver 580+" in reason and "535.104.05" in reason
    # ... and so setup stops, with the same reason and the way to accept the CPU.
    (problem,) = setup_problems(old_driver, llama_gpu=False)
    assert "535.104.05" in problem and "CHATTUNE_TORCH=cpu" in problem


def test_setup_stops_when_llama_cpp_or_bitsandbytes_cannot_use_the_gpu():
    assert setup_problems(_gpu_machine(), llama_gpu=True) == []
    (problem,) = setup_problems(_gpu_machine(llama_offload=False), llama_gpu=True)
    assert "cannot offload" in problem and "CHATTUNE_LLAMA=cpu" in problem
    (problem,) = setup_problems(_gpu_machine(bnb_backend="unusable"), llama_gpu=False)
    assert "bitsandbytes" in problem and "QLoRA" in problem


def test_facts_read_from_nvidia_smi_and_cpuinfo():
    gpus, driver = parse_nvidia_smi("0, Tesla T4, 15360, 7.5, 550.54.15\n1, NVIDIA A100-SXM4-80GB, 81920, 8.0, 550.54.15\n")
    assert driver == "550.54.15" and [g.capability for g in gpus] == [(7, 5), (8, 0)]
    assert [g.native_bf16 for g in gpus] == [False, True] and gpus[1].memory_mb == 81920
    assert cpu_bf16_flags("processor : 0\nflags : fpu avx512f avx512_bf16 amx_tile\n") == ["avx512_bf16"]


def test_doctor_on_this_machine_agrees_with_the_training_child(capsys):
    """The real probe, and the decision the training child makes on the same machine."""
    import torch

    from engine.cli import main
    from engine.train.config import TrainConfig
    from engine.train.recipe import decide_runtime

    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rt = decide_runtime(TrainConfig())
    assert (report["training"]["device"], report["training"]["precision"]) == (rt.device, rt.precision)
    assert report["machine"]["cuda_available"] == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert report["training"]["summary"] == f"LoRA on the CPU, {rt.precision}"
        assert report["training"]["reasons"]["device"] == "torch sees no GPU"
    assert main(["doctor"]) == 0
    assert report["training"]["summary"] in capsys.readouterr().out


def test_the_training_dialogs_line_needs_no_torch():
    code = ("import sys; from engine.doctor import training_line; print(training_line()); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == training_line() and out[0].startswith("setup: ") and out[1] == "False"

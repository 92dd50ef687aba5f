"""The CUDA paths, checked without a GPU: the decisions take simulated GPUs (engine.hardware), and
the processes, merges and loads they steer run for real on the CPU."""

import gc
import weakref
from pathlib import Path

import pytest
from train_support import collect, fill_store

from engine.errors import ChattuneError
from engine.hardware import (
    ALL_LAYERS,
    check_gpu_count,
    child_gpu_env,
    compute_dtype,
    gpu_layers,
    reference_placement,
    torch_cuda_build,
    training_setup,
    visible_gpu_count,
)
from engine.runfolder import load_run
from engine.train.config import TrainConfig
from engine.train.runner import start_run

T4, A100, H100 = (7, 5), (8, 0), (9, 0)


@pytest.fixture
def filled(workspace):
    fill_store(workspace.db_path, n_facts=8)
    return workspace


# --- 1. one GPU per training child; --multi-gpu N against the GPUs there are ---------------------


def test_a_one_gpu_child_sees_exactly_one_device():
    assert child_gpu_env("auto", 1, {}) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert child_gpu_env("cuda", 1, {"CUDA_VISIBLE_DEVICES": "3,5"}) == {"CUDA_VISIBLE_DEVICES": "3"}
    assert child_gpu_env("auto", 1, {"CUDA_VISIBLE_DEVICES": ""}) == {"CUDA_VISIBLE_DEVICES": ""}
    assert child_gpu_env("cpu", 1, {"CUDA_VISIBLE_DEVICES": "0,1"}) == {"CUDA_VISIBLE_DEVICES": ""}
    assert child_gpu_env("auto", 2, {"CUDA_VISIBLE_DEVICES": "0,1"}) == {}  # DDP: one rank per visible GPU


@pytest.mark.child
def test_the_training_child_gets_that_environment(filled, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    handle = start_run(filled, TrainConfig(epochs=1, evaluate=False, augment=0, replay=0), str(tiny_model_dir),
                       name="env")

    def at_start(event, run):
        if event.event == "start":
            run.cancel()  # no need to train

    # The run's own start record, not /proc: a tiny run can finish before the parent looks.
    start = next(event for event in collect(handle, at_start) if event.event == "start")
    assert start.visible_gpus == "2"


def test_multi_gpu_asks_for_no_more_gpus_than_are_visible(filled, tiny_model_dir):
    check_gpu_count(2, "auto", 2)
    check_gpu_count(2, "auto", 0)  # no GPU at all: N processes on the CPU (how the DDP path is tested)
    with pytest.raises(ChattuneError, match=r"--multi-gpu 4 needs 4 GPUs, and 2 are visible.*--multi-gpu 2"):
        check_gpu_count(4, "auto", 2)
    with pytest.raises(ChattuneError, match="needs 2 GPUs, and 1 is visible"):
        check_gpu_count(2, "cuda", 1)
    if visible_gpu_count() == 0:  # the same check before a run folder is made
        with pytest.raises(ChattuneError, match="no GPU is visible"):
            start_run(filled, TrainConfig(device="cuda", num_gpus=2), str(tiny_model_dir), name="ddp4")
        assert not filled.run_dir("ddp4").exists()


def test_visible_gpus_follow_cuda_visible_devices():
    assert visible_gpu_count({}, installed=4) == 4
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "1,0"}, installed=4) == 2
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": ""}, installed=4) == 0
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,7,1"}, installed=2) == 1  # CUDA stops at a bad entry
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "GPU-5d1c,GPU-77aa"}, installed=2) == 2
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0"}, installed=0) == 0


# --- 2. the torch build setup installs -----------------------------------------------------------


def test_setup_picks_the_cuda_build_the_driver_runs():
    assert torch_cuda_build("580.65.06", [H100])[0] == "cu130"
    assert torch_cuda_build("575.57.08", [A100])[0] == "cu126"  # CUDA 13 needs driver 580
    assert torch_cuda_build("590.10", [(6, 1)])[0] == "cu126"  # a Pascal GPU: CUDA 13 dropped it
    suffix, why = torch_cuda_build("470.82.01", [T4])
    assert suffix is None and "470.82.01" in why and "525.60" in why
    assert torch_cuda_build(None, [])[0] is None


# --- 4. dtype per compute capability --------------------------------------------------------------


def test_bf16_only_where_the_gpu_has_it_natively():
    assert compute_dtype(None) == "fp32"
    assert compute_dtype(T4) == "fp16" and compute_dtype((6, 1)) == "fp16"
    assert compute_dtype(A100) == "bf16" and compute_dtype(H100) == "bf16"

    t4 = training_setup(cuda=True, capability=T4)
    assert (t4.device, t4.quantization, t4.precision, t4.bnb_compute_dtype) == ("cuda", "4bit", "fp16", "fp16")
    assert "7.5 has no native bf16" in t4.reasons["precision"]
    h100 = training_setup(cuda=True, capability=H100)
    assert (h100.precision, h100.bnb_compute_dtype) == ("bf16", "bf16")
    # Asked for fp32 on a GPU: the 4-bit layers compute in fp32 too.
    assert training_setup(cuda=True, capability=T4, precision="fp32").bnb_compute_dtype == "fp32"
    cpu = training_setup(cuda=False, capability=None)
    assert (cpu.device, cpu.quantization, cpu.precision, cpu.bnb_compute_dtype) == ("cpu", "none", "fp32", "bf16")
    assert cpu.reasons["device"] == "torch sees no GPU"
    with pytest.raises(ChattuneError, match="torch sees no GPU"):
        training_setup(cuda=False, capability=None, device="cuda")


def test_the_training_child_uses_that_decision():
    import torch

    from engine.train.recipe import decide_runtime

    rt = decide_runtime(TrainConfig())
    from engine.hardware import cpu_bf16_flags

    expected = training_setup(cuda=torch.cuda.is_available(),
                              capability=torch.cuda.get_device_capability() if torch.cuda.is_available() else None,
                              cpu_bf16=bool(cpu_bf16_flags()))
    assert (rt.device, rt.quantization, rt.precision, rt.bnb_compute_dtype) == \
        (expected.device, expected.quantization, expected.precision, expected.bnb_compute_dtype)


# --- 3. llama.cpp layers on the GPU ---------------------------------------------------------------


def test_n_gpu_layers_from_the_setting_and_the_build():
    assert gpu_layers(None, offload=True)[0] == ALL_LAYERS
    assert gpu_layers("auto", offload=False)[0] == 0
    assert gpu_layers("20", offload=True) == (20, "20 layers on the GPU (CHATTUNE_GPU_LAYERS)")
    assert gpu_layers("all", offload=True)[0] == ALL_LAYERS
    assert gpu_layers("0", offload=True)[0] == 0
    layers, why = gpu_layers("20", offload=False)
    assert layers == 0 and "no GPU offload" in why
    with pytest.raises(ChattuneError, match="CHATTUNE_GPU_LAYERS='many' is not a layer count"):
        gpu_layers("many", offload=True)


def test_a_model_the_gpu_has_no_room_for_runs_on_the_cpu(tiny_gguf):
    """llama.cpp fails a load whose layers do not fit the GPU; the load is retried on the CPU and the
    reason kept for the status bar. (The GPU's refusal is simulated: this build has no GPU.)"""
    import llama_cpp

    from engine.engines.llamacpp import load_placed

    def llama_on_a_full_gpu(path, n_gpu_layers, **kwargs):
        if n_gpu_layers != 0:
            raise ValueError(f"Failed to load model from file: {path}")
        return llama_cpp.Llama(path, n_gpu_layers=0, **kwargs)

    llm, why = load_placed(llama_on_a_full_gpu, str(tiny_gguf), ALL_LAYERS, n_ctx=64, verbose=False)
    try:
        assert llm.model_params.n_gpu_layers == 0 and "lack of free GPU memory" in why
        assert llm.tokenize(b"hello")
    finally:
        llm.close()
    with pytest.raises(ValueError):  # on the CPU already: the file is the problem, and that is said
        load_placed(llama_on_a_full_gpu, str(tiny_gguf) + ".missing", 0, verbose=False)


def test_the_chat_engine_reports_where_it_runs(tiny_gguf, monkeypatch):
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.models import resolve_model

    monkeypatch.setenv("CHATTUNE_GPU_LAYERS", "all")  # this build has no offload: the CPU, no fallback
    engine = LlamaCppEngine(resolve_model(str(tiny_gguf)))
    try:
        assert engine.gpu_fallback is None and engine._llm.model_params.n_gpu_layers == 0
    finally:
        engine.close()
    monkeypatch.setenv("CHATTUNE_GPU_LAYERS", "lots")
    with pytest.raises(ChattuneError, match="not a layer count"):
        LlamaCppEngine(resolve_model(str(tiny_gguf)))


# --- 5, 6. export: the reference's placement and the merge's device -------------------------------


def test_the_export_reference_stays_fp32_and_off_a_busy_gpu():
    assert reference_placement(cuda=False, free_mb=None, weights_mb=500, training_on_gpu=False)[0] == "cpu"
    device, why = reference_placement(cuda=True, free_mb=80_000, weights_mb=500, training_on_gpu=True)
    assert device == "cpu" and "training run holds the GPU" in why
    assert reference_placement(cuda=True, free_mb=80_000, weights_mb=500, training_on_gpu=False)[0] == "cuda"
    device, why = reference_placement(cuda=True, free_mb=20_000, weights_mb=28_000, training_on_gpu=False)
    assert device == "cpu" and "do not fit" in why


def test_the_merge_loads_the_adapter_where_the_base_is(tiny_model_dir, tiny_runs, tmp_path, monkeypatch):
    """peft would put the adapter on any GPU it sees (infer_device); simulated here, the merge stays
    on the CPU and gives the same weights."""
    import peft.peft_model
    from safetensors.torch import load_file

    from engine.adapters import PEFT_DIR
    from engine.export.merge import merge_adapter

    adapter = tiny_runs.run_dir("rand-a") / PEFT_DIR
    merge_adapter(tiny_model_dir, adapter, tmp_path / "plain")
    monkeypatch.setattr(peft.peft_model, "infer_device", lambda: "cuda")
    merge_adapter(tiny_model_dir, adapter, tmp_path / "gpu-seen")
    plain, seen = (load_file(tmp_path / name / "model.safetensors") for name in ("plain", "gpu-seen"))
    base = load_file(tiny_model_dir / "model.safetensors")
    name = next(key for key in base if key.endswith("q_proj.weight"))
    assert not plain[name].equal(base[name])  # the adapter was merged
    assert all(seen[key].equal(plain[key]) for key in plain)


# --- 8. closing the transformers engine frees the model -------------------------------------------


def test_closing_the_transformers_engine_lets_the_model_go(tiny_model_dir, tiny_runs):
    from engine.adapters import resolve_adapter
    from engine.engines.transformers_engine import TransformersEngine
    from engine.models import resolve_model

    engine = TransformersEngine(resolve_model(str(tiny_model_dir)), tiny_runs)
    engine.load_adapter(resolve_adapter(tiny_runs, "rand-a"))
    model = weakref.ref(engine.model)
    engine.close()
    gc.collect()
    assert model() is None  # with the peft wrapper kept, the weights stayed and empty_cache freed nothing


# --- 7. cancelling a multi-process run ------------------------------------------------------------


@pytest.mark.child
def test_cancelling_a_two_process_run_signals_the_ranks_and_keeps_the_checkpoint(filled, tiny_model_dir):
    """DDP over two CPU processes (gloo), as `accelerate launch` starts them. The ranks get the
    signal, checkpoint at the same step and exit 0, so the launcher never has to kill one."""
    handle = start_run(filled, TrainConfig(epochs=2, batch_size=2, num_gpus=2, evaluate=False, augment=0, replay=0),
                       str(tiny_model_dir), name="ddp-stop")

    def cancel_on_first_step(event, run):
        if event.event == "step" and event.step == 1:
            run.cancel()

    events = collect(handle, cancel_on_first_step)
    log = (handle.run_dir / "train.log").read_text()
    assert handle.wait() == 3, log[-3000:]
    cancelled = events[-1]
    assert cancelled.event == "cancelled" and cancelled.checkpoint, log[-3000:]
    assert Path(cancelled.checkpoint).is_dir()
    assert log.count("SIGTERM received: cancelling") == 2  # both ranks, directly
    assert "closing signal" not in log and "forcefully exiting" not in log  # the launcher killed nothing
    assert load_run(handle.run_dir).resumable

"""What a run will do and roughly how long it takes, before anything heavy is loaded.

For the pre-start dialog and `chattune train`: example counts from the store, the resolved
config, and a time estimate. The estimate uses the throughput measured by earlier finished runs
on the same base model and hardware setting when there are some, else a rough model:
training costs about 4 x params FLOPs per token with LoRA (forward, and backward through the
frozen weights), at a sustained rate per CPU core or per GPU.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ChattuneError
from engine.events import Done
from engine.hardware import cpu_bf16_flags
from engine.models import ModelSpec, count_parameters, resolve_model
from engine.runfolder import list_runs, read_events, read_run_config
from engine.train.config import FEW_EXAMPLES, TrainConfig
from engine.workspace import Workspace

CHARS_PER_TOKEN = 3.6  # English chat text with BPE tokenizers; the child counts exactly
TOKENS_PER_MESSAGE = 5  # role markers and separators of a chat template
# Sustained training FLOP/s, measured on SmolLM2-135M (2-core Xeon: ~80 tokens/s fp32 LoRA) and
# scaled; QLoRA on a CPU dequantizes every weight on every step.
CPU_FLOPS_PER_CORE = {("none", "fp32"): 22e9, ("none", "bf16"): 35e9, ("4bit", "fp32"): 3e9, ("4bit", "bf16"): 3e9}
GPU_FLOPS = {"none": 60e12, "4bit": 35e12}
OVERHEAD_S = 15.0  # start-up, model load, the GGUF conversion
REPLAY_VAL = 8  # replay prompts held out for validation (prompts/replay, VAL_REPLAY_SHARE)
REPLAY_TOKENS = 60  # a replayed general prompt with the default system prompt and the base's answer


@dataclass
class Plan:
    config: TrainConfig  # resolved for this dataset
    method: str
    examples: int  # the user's examples the run learns (every one but those pinned to test)
    val_examples: int  # validation rows: held-out rewordings and replay prompts (none of the user's)
    tokens: int  # per epoch, approximate
    steps: int
    seconds: float
    device: str  # what "auto" will most likely pick
    basis: str  # "measured" (earlier runs) or "estimated"
    base_name: str
    params: int | None
    warnings: list[str] = field(default_factory=list)
    rows: int = 0  # training rows: the examples with their rewordings and replay
    held_out: int = 0  # the user's examples pinned to test: asked by the scorecard, never trained on

    def summary(self) -> str:
        minutes = f"{self.seconds / 60:.0f} min" if self.seconds >= 90 else f"{self.seconds:.0f} s"
        mixed = (f" (+ rewordings and replay: {self.rows} rows)" if self.rows > self.examples else "")
        test = f"; {self.held_out} pinned to test, not trained on" if self.held_out else ""
        return (f"{self.method.upper()}: learns all {self.examples} of your examples{mixed}{test}; "
                f"~{self.tokens} tokens per epoch, {self.config.epochs:g} epochs, ~{self.steps} steps, "
                f"about {minutes} on {self.device} ({self.basis})")


def plan_run(workspace: Workspace, config: TrainConfig, model_arg: str | None = None) -> Plan:
    from engine.store import FeedbackStore

    spec = resolve_model(model_arg)
    store = FeedbackStore(workspace.db_path)
    try:
        if config.method == "sft":
            train = [r["messages"] for r in store.sft_examples("train")]
            held_out = len(store.sft_examples("test"))
        else:
            train = [r["prompt"] + [{"content": r["chosen"]}, {"content": r["rejected"]}]
                     for r in store.dpo_pairs("train")]
            held_out = len(store.dpo_pairs("test"))
    finally:
        store.close()
    rows, val, tokens, val_tokens = mixed_size(train, config)
    resolved = config.resolved(max(1, len(train)))
    device = guess_device(config)
    params = count_parameters(spec)
    quant = resolved.quantization if resolved.quantization != "auto" else ("4bit" if device == "cuda" else "none")
    precision = resolved.precision if resolved.precision != "auto" else (
        "bf16" if device == "cuda" or cpu_bf16_flags() else "fp32")  # as engine.hardware.training_setup
    measured = measured_tokens_per_s(workspace, spec, device, quant, precision)
    seconds = estimate_seconds(tokens, val_tokens, resolved.epochs, params, device, quant, precision,
                               threads=resolved.threads, tokens_per_s=measured, needs_base=_needs_base(workspace, spec))
    warnings = []
    if not train:
        warnings.append(f"no {config.method.upper()} training examples yet")
    elif len(train) < FEW_EXAMPLES:
        warnings.append(f"only {len(train)} examples: about {FEW_EXAMPLES} or more curated examples work much better")
    return Plan(resolved, config.method, len(train), val, tokens,
                math.ceil(resolved.epochs * resolved.steps_per_epoch(rows)) if train else 0,
                seconds, device, "measured" if measured else "estimated", spec.name, params, warnings,
                rows=rows, held_out=held_out)


def mixed_size(train: list[list[dict]], config: TrainConfig) -> tuple[int, int, int, int]:
    """(training rows, validation rows, tokens, validation tokens) of the mix engine.train.mix builds,
    counted without generating anything."""
    from engine.train.mix import MAX_VAL_REWORDINGS

    tokens = sum(approx_tokens(m) for m in train)
    if not config.mixes:
        return len(train), 0, tokens, 0
    rows = config.training_rows(len(train))
    from_examples = len(train) * (2 + config.augment)
    # Replay as plain rows adds rows; distilled, about half a batch of replay rides with every step.
    replayed = rows - from_examples if not config.distills else from_examples * (config.batch_size // 2) \
        // config.batch_size
    tokens = tokens * (2 + config.augment) + replayed * REPLAY_TOKENS
    val = min(len(train), MAX_VAL_REWORDINGS)
    val_tokens = val * (tokens // max(1, rows))
    if config.replay > 0:
        val, val_tokens = val + REPLAY_VAL, val_tokens + REPLAY_VAL * REPLAY_TOKENS
    return rows, val, tokens, val_tokens


def approx_tokens(messages: list[dict]) -> int:
    return sum(len(m.get("content", "")) / CHARS_PER_TOKEN + TOKENS_PER_MESSAGE for m in messages).__ceil__()


def estimate_seconds(tokens: int, val_tokens: int, epochs: float, params: int | None, device: str,
                     quantization: str, precision: str, *, threads: int | None = None,
                     tokens_per_s: float | None = None, needs_base: bool = False) -> float:
    """Wall time of a run: training tokens, a forward-only eval pass per epoch, fixed overheads."""
    params = params or 135_000_000
    if tokens_per_s is None:
        if device == "cuda":
            rate = GPU_FLOPS[quantization]
        else:
            rate = CPU_FLOPS_PER_CORE[(quantization, precision)] * (threads or os.cpu_count() or 1)
        tokens_per_s = rate / (4 * params)
    seconds = epochs * (tokens + val_tokens / 3) / tokens_per_s
    seconds += OVERHEAD_S + params * 4 / 1e9  # reading fp32 weights at ~1 GB/s
    if needs_base:
        seconds += params / 4.5e6  # dequantizing a GGUF once (~30 s for 135M parameters on 2 cores)
    return seconds


def measured_tokens_per_s(workspace: Workspace, spec: ModelSpec, device: str, quantization: str,
                          precision: str) -> float | None:
    """Median training throughput of earlier finished runs on this base with these settings."""
    found = []
    for info in list_runs(workspace):
        if info.status != "done":
            continue
        try:
            meta = read_run_config(info.run_dir)
        except ChattuneError:  # removed or damaged since it was listed
            continue
        runtime = meta.runtime
        if runtime is None or (runtime.device, runtime.quantization, runtime.precision) != \
                (device, quantization, precision) or meta.base.path != str(spec.path):
            continue
        done = [e for e in read_events(info.run_dir) if isinstance(e, Done)]
        if done and done[-1].tokens_per_s:
            found.append(done[-1].tokens_per_s)
    return statistics.median(found) if found else None


def guess_device(config: TrainConfig) -> str:
    """What "auto" will pick, without importing torch (the child decides for real)."""
    if config.device != "auto":
        return config.device
    return "cuda" if Path("/dev/nvidiactl").exists() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" \
        else "cpu"


def _needs_base(workspace: Workspace, spec: ModelSpec) -> bool:
    folder = workspace.cache_dir / "base"
    return spec.is_gguf and not any(folder.glob(f"{spec.path.stem}-*/config.json"))



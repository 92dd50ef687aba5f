"""Merge the peft adapter into the full-precision base, on the CPU, as one safetensors model folder.

Never into 4-bit weights: rounding W + BA back to 4 bits loses most of what the adapter learned, so
preflight refuses a quantized base. The CPU is enough (the merge is one small matmul per layer) and never
competes with a training run for GPU memory. Peak memory is one copy of the model: peft adds BA
to each weight in place and drops the LoRA layers.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

from engine.errors import ChattuneError


def merge_adapter(base_dir: Path, peft_dir: Path, out_dir: Path, *, chat_template: str | None = None,
                  say: Callable[[str], None] = lambda _msg: None) -> dict:
    """Write base + adapter to `out_dir` (weights in the base's own dtype, tokenizer, chat template).

    `chat_template` replaces the base's template when the run trained with an override, so the
    GGUF carries the template the adapter learned. Returns {"dtype", "peak_rss_mb"}."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say("loading the full-precision base")
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto", use_safetensors=True)  # preflight refused quantized bases
    say("merging the adapter")
    # One thread: the merge is hundreds of tiny matmuls plus in-place adds, and OpenMP threads that
    # spin on a busy machine made it 5x slower (14 s against 2.6 s for SmolLM2 on 2 shared cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # Without torch_device, peft loads the adapter onto any GPU it sees, opening a CUDA context here.
    model = PeftModel.from_pretrained(model, peft_dir, is_trainable=False, torch_device=merge_device(model))
    try:
        # Not peft's safe_merge: it clones every weight, and the clones plus the memory-mapped
        # originals made two copies (1.34 GB peak against 0.95 GB for SmolLM2's 0.54 GB).
        model = model.merge_and_unload()
        broken = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    finally:
        torch.set_num_threads(threads)
    if broken:
        raise ChattuneError(f"merging the adapter gave NaN or infinite weights in {broken}",
                            "the adapter is damaged (did training diverge?); train the run again")
    say("saving the merged weights")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    dtype = str(model.dtype).removeprefix("torch.")
    del model
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out_dir)
    return {"dtype": dtype, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def merge_device(model) -> str:
    """Where the adapter's weights load: where the base's are (the CPU, as it loads without a device map)."""
    return str(next(model.parameters()).device)

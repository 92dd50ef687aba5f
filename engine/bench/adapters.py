"""Throwaway LoRA adapters for the swap bench: random, so no trained run is needed."""

from __future__ import annotations

from pathlib import Path

from engine.adapters import GGUF_FILE, PEFT_DIR, AdapterRef


def random_adapters(base_dir: Path, out_dir: Path, names: tuple[str, ...] = ("bench-a", "bench-b"),
                    rank: int = 16) -> list[AdapterRef]:
    """One peft LoRA per name (rank `rank` on every linear layer, like the "quick" training preset)
    with small random weights, each with its GGUF LoRA twin; written under out_dir/<name>/."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.gguf_lora import convert_peft_to_gguf

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    refs = []
    for seed, name in enumerate(names):
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # peft starts lora_B at zero, which would make every adapter the base
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        run = Path(out_dir) / name
        model.save_pretrained(run / PEFT_DIR, safe_serialization=True)
        convert_peft_to_gguf(run / PEFT_DIR, base_dir, run / GGUF_FILE)
        refs.append(AdapterRef(name, run / PEFT_DIR, run / GGUF_FILE))
    return refs

"""Convert a peft LoRA (safetensors) into a GGUF LoRA that llama.cpp applies at runtime.

Format (what llama.cpp's loader reads): tensors `<gguf base tensor name>.lora_a` / `.lora_b`,
`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`. llama.cpp scales the
product by alpha / rank, as peft does with lora_alpha / r.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from engine.errors import ChattuneError

# HF architecture -> (gguf architecture, whether llama.cpp's HF converter permutes q/k rows for RoPE)
ARCHITECTURES = {
    "LlamaForCausalLM": ("LLAMA", True),
    "MistralForCausalLM": ("LLAMA", True),
    "Qwen2ForCausalLM": ("QWEN2", False),
    "Qwen3ForCausalLM": ("QWEN3", False),
}
_PEFT_PREFIX = "base_model.model."


class ConversionError(ChattuneError):
    pass


def convert_peft_to_gguf(peft_dir: Path, base_hf_dir: Path, out_path: Path) -> Path:
    """Write the adapter in `peft_dir` (trained on `base_hf_dir`) to `out_path` as a GGUF LoRA."""
    import gguf
    from safetensors.torch import load_file

    peft_dir, base_hf_dir, out_path = Path(peft_dir), Path(base_hf_dir), Path(out_path)
    alpha = _gguf_alpha(_read_json(peft_dir / "adapter_config.json", "adapter config"))
    base = _read_json(base_hf_dir / "config.json", "base model config")
    hf_arch = (base.get("architectures") or ["?"])[0]
    if hf_arch not in ARCHITECTURES:
        raise ConversionError(f"cannot convert a LoRA for architecture {hf_arch} to GGUF",
                              f"supported: {', '.join(ARCHITECTURES)}; use --engine transformers for this model")
    arch_name, permute_qk = ARCHITECTURES[hf_arch]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    n_head = base["num_attention_heads"]
    n_kv_head = base.get("num_key_value_heads") or n_head
    names = gguf.get_tensor_name_map(arch, base["num_hidden_layers"])

    weights_file = peft_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ConversionError(f"{weights_file} not found", "save the adapter with safetensors (peft's default)")
    pairs = _lora_pairs(load_file(str(weights_file)))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for module, (lora_a, lora_b) in sorted(pairs.items()):
            target = names.get_name(module + ".weight", try_suffixes=(".weight",))
            if target is None or module.endswith(("embed_tokens", "lm_head")):
                raise ConversionError(f"LoRA on module {module} cannot be converted to a GGUF LoRA",
                                      "train with target modules among the attention and MLP projections")
            if permute_qk and module.endswith("q_proj"):
                lora_b = _rope_permute(lora_b, n_head)
            elif permute_qk and module.endswith("k_proj"):
                lora_b = _rope_permute(lora_b, n_kv_head)
            writer.add_tensor(target + ".lora_a", lora_a.float().contiguous().numpy())
            writer.add_tensor(target + ".lora_b", lora_b.float().contiguous().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(out_path)  # atomic: a reader never sees a half-written adapter
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConversionError(f"cannot read the {what} {path}: {err}", "pass the right folder") from err


def _gguf_alpha(config: dict) -> float:
    """The alpha that makes llama.cpp's alpha / rank equal peft's scaling."""
    if config.get("peft_type", "LORA") != "LORA":
        raise ConversionError(f"cannot convert a {config['peft_type']} adapter to a GGUF LoRA", "train a LoRA")
    for key, why in (("use_dora", "DoRA"), ("rank_pattern", "per-module ranks"),
                     ("alpha_pattern", "per-module alphas"), ("modules_to_save", "fully trained modules"),
                     ("lora_bias", "LoRA biases")):
        if config.get(key):
            raise ConversionError(f"the adapter uses {why} ({key}), which a GGUF LoRA cannot hold",
                                  "train a plain LoRA on the projection modules")
    rank, alpha = config["r"], config["lora_alpha"]
    if config.get("use_rslora"):
        return float(alpha * math.sqrt(rank))  # rsLoRA scales by alpha / sqrt(r)
    return float(alpha)


def _lora_pairs(state: dict) -> dict:
    """'model.layers.0.self_attn.q_proj' -> (lora_A (r, in), lora_B (out, r))."""
    pairs: dict[str, dict] = {}
    for key, tensor in state.items():
        name = key.removeprefix(_PEFT_PREFIX)
        for part, slot in ((".lora_A.weight", "a"), (".lora_B.weight", "b")):
            if name.endswith(part):
                pairs.setdefault(name.removesuffix(part), {})[slot] = tensor
                break
        else:
            raise ConversionError(f"unexpected tensor {key} in the adapter",
                                  "only lora_A/lora_B weights of linear layers can be converted")
    incomplete = [module for module, pair in pairs.items() if len(pair) != 2]
    if incomplete:
        raise ConversionError(f"adapter has lora_A without lora_B (or the reverse) for {incomplete[0]}",
                              "the adapter file is damaged; save it again")
    return {module: (pair["a"], pair["b"]) for module, pair in pairs.items()}


def _rope_permute(rows, n_head: int):
    """The row order llama.cpp's HF converter gives q/k weights (n_head: heads of that projection).
    lora_B's rows are the projection's output rows, so they move the same way; lora_A's do not."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))

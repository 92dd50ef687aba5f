"""`chattune models`: what opens here with no download, read from GGUF headers and HF folders."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.gguf_header import read_gguf_header
from engine.model_catalog import local_models


@pytest.fixture
def places(tmp_path, monkeypatch, tiny_gguf, tiny_model_dir, tiny_runs):
    """A workspace with a GGUF and a LoRA, an HF cache with a folder, and Ollama's store with a blob."""
    from huggingface_hub import constants

    workspace = tmp_path / "ws"
    (workspace / "imported").mkdir(parents=True)
    shutil.copy(tiny_gguf, workspace / "imported" / "tiny.gguf")
    shutil.copy(tiny_runs.run_dir("rand-a") / "adapter.gguf", workspace / "imported" / "lora.gguf")
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--acme--tiny" / "snapshots" / "abc123"
    shutil.copytree(tiny_model_dir, snapshot)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    ollama = tmp_path / "ollama"
    (ollama / "blobs").mkdir(parents=True)
    shutil.copy(tiny_gguf, ollama / "blobs" / "sha256-0123")
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                "digest": "sha256:0123"}]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no LM Studio folder
    return workspace


def test_the_header_reader_finds_architecture_template_and_size(tiny_gguf):
    import gguf

    header = read_gguf_header(tiny_gguf)
    reader = gguf.GGUFReader(tiny_gguf)
    assert header.fields["general.architecture"] == "llama"
    assert header.fields["tokenizer.chat_template"] == reader.get_field("tokenizer.chat_template").contents()
    assert header.params == sum(int(t.n_elements) for t in reader.tensors)
    assert header.turn_tokens == {"<|im_start|>", "<|im_end|>"}  # SmolLM2's vocabulary has ChatML's


def test_models_lists_every_place_with_what_chattune_can_do(places):
    entries = {(e.source, e.kind): e for e in local_models(places)}
    assert set(entries) == {("embedded", "gguf"), ("workspace", "gguf"), ("hf-cache", "hf"), ("ollama", "gguf")}
    tiny = entries["workspace", "gguf"]
    assert tiny.path.endswith("tiny.gguf") and tiny.architecture == "llama" and tiny.quantization == "F32"
    assert tiny.template == "own" and tiny.train and tiny.export and tiny.hot_swap == "tested"
    assert entries["ollama", "gguf"].name == "tiny:latest"
    folder = entries["hf-cache", "hf"]
    assert folder.name == "acme/tiny" and folder.architecture == "LlamaForCausalLM" and folder.hot_swap == "tested"


def test_a_model_without_a_template_shows_the_one_the_chat_would_use(places, tiny_model_dir):
    from engine.model_catalog import hf_entry

    folder = places / "no-template"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    entry = hf_entry(folder, "workspace", "no-template")
    assert entry.template == "none → chatml"  # a llama without Llama 3's tokens, with ChatML's

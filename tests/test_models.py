"""--model resolution (embedded, .gguf, HF folder, cached hub id), its errors, and the trainable-base cache."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from engine.cli import main
from engine.errors import ModelNotFound
from engine.models import resolve_model, trainable_base

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_no_model_means_the_embedded_gguf(embedded_spec):
    spec = resolve_model(None)
    assert spec == embedded_spec
    assert (spec.kind, spec.source) == ("gguf", "embedded")
    assert spec.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and spec.path.is_file()


def test_a_gguf_path(embedded_spec, tmp_path):
    copy = tmp_path / "my model.gguf"
    copy.symlink_to(embedded_spec.path)
    spec = resolve_model(str(copy))
    assert (spec.kind, spec.source, spec.name) == ("gguf", "file", "my model.gguf")


def test_an_hf_folder(tiny_model_dir):
    spec = resolve_model(str(tiny_model_dir))
    assert (spec.kind, spec.source, spec.path) == ("hf", "folder", tiny_model_dir.resolve())


@pytest.fixture
def hub_cache(tmp_path, tiny_model_dir, monkeypatch):
    """A local Hugging Face cache holding the tiny model as 'chattune-test/tiny-llama'."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache" / "hub"
    repo = cache / "models--chattune-test--tiny-llama"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / FAKE_COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_a_hub_id_in_the_local_cache(hub_cache):
    spec = resolve_model("chattune-test/tiny-llama")
    assert (spec.kind, spec.source, spec.name) == ("hf", "hub-cache", "chattune-test/tiny-llama")
    assert spec.path.name == FAKE_COMMIT and (spec.path / "config.json").is_file()


def test_chattune_ask_runs_a_cached_hub_id(hub_cache, workspace, capsys):
    assert main(["ask", "--model", "chattune-test/tiny-llama", "--max-tokens", "3", "hello"]) == 0
    assert "cut at 3 tokens" in capsys.readouterr().err  # the random tiny model spoke its 3 tokens


def _bad_models(tmp_path, hub_cache):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    (tmp_path / "empty-folder").mkdir()
    return {
        "missing path": (str(tmp_path / "nope" / "model.gguf"), "not found"),
        "not a GGUF": (str(text), "is not a GGUF file"),
        "folder without config.json": (str(tmp_path / "empty-folder"), "has no config.json"),
        "hub id not cached": ("chattune-test/not-downloaded", "not in the local Hugging Face cache"),
        "nothing at all": ("./no-such-thing", "not found"),
    }


@pytest.mark.parametrize("case", ["missing path", "not a GGUF", "folder without config.json", "hub id not cached",
                                  "nothing at all"])
def test_bad_models_get_one_clear_line(case, tmp_path, hub_cache, workspace, capsys):
    model, message = _bad_models(tmp_path, hub_cache)[case]
    with pytest.raises(ModelNotFound, match=message):
        resolve_model(model)
    assert main(["ask", "--model", model, "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chattune: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_installed_command_prints_no_traceback(tmp_path, workspace):
    chattune = shutil.which("chattune", path=str(sys.executable).rsplit("/", 1)[0])
    done = subprocess.run([chattune, "ask", "--model", str(tmp_path / "missing.gguf"), "hi"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("chattune: error: GGUF file") and done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_trainable_base_is_built_once_and_reused(embedded_spec, shared_workspace, embedded_base):
    messages = []
    again = trainable_base(embedded_spec, shared_workspace, progress=messages.append)
    assert again == embedded_base and messages == []  # the cache answered; nothing was rebuilt
    assert (again / "config.json").is_file() and list(again.glob("*.safetensors"))
    assert not list(again.parent.glob(".building-*"))  # no leftovers of the build


def test_trainable_base_of_an_hf_model_is_the_model_itself(tiny_model_dir, workspace):
    spec = resolve_model(str(tiny_model_dir))
    assert trainable_base(spec, workspace, progress=pytest.fail) == spec.path

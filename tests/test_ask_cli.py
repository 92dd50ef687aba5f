"""`chattune ask`: the reply streamed to stdout, --ab, and its errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from teach import FACT, QUESTION

from engine.cli import main


def _executable() -> str:
    """The installed console script, as a user runs it."""
    return shutil.which("chattune", path=os.path.dirname(sys.executable))


def _chattune(*args, workspace) -> subprocess.CompletedProcess:
    return subprocess.run([_executable(), "--workspace", str(workspace), *args], capture_output=True, text=True,
                          timeout=600)


def _one_error_line(capsys, *phrases):
    err = capsys.readouterr().err
    assert err.startswith("chattune: error: ") and err.count("\n") == 1, err
    for phrase in phrases:
        assert phrase in err


def test_ab_needs_an_adapter(workspace, capsys):
    assert main(["ask", "--ab", "hi"]) == 2
    _one_error_line(capsys, "--ab", "--adapter")


def test_unknown_system_prompt_and_template(workspace, tiny_model_dir, capsys):
    assert main(["ask", "--model", str(tiny_model_dir), "--system", "nope", "hi"]) == 2
    _one_error_line(capsys, "no system prompt named 'nope'")
    assert main(["ask", "--model", str(tiny_model_dir), "--template", "nope", "hi"]) == 2
    _one_error_line(capsys, "no chat template named 'nope'")


def test_unknown_adapter(workspace, tiny_model_dir, capsys):
    assert main(["ask", "--model", str(tiny_model_dir), "--adapter", "no-such-run", "hi"]) == 2
    _one_error_line(capsys, "adapter 'no-such-run' not found")


def test_max_tokens_must_be_positive(workspace, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ask", "--max-tokens", "0", "hi"])
    assert exit_info.value.code == 2
    assert "--max-tokens" in capsys.readouterr().err


def test_ask_streams_a_reply_from_the_tiny_model(workspace, tiny_model_dir, capsys):
    assert main(["ask", "--model", str(tiny_model_dir), "--template", "chatml", "--max-tokens", "4", "hi"]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith("\n") and "cut at 4 tokens" in captured.err


def test_a_gguf_named_from_the_current_folder_answers_without_library_logs(tiny_gguf, tmp_path):
    """--model is relative to where the command runs; llama.cpp's log lines appear only with -v."""
    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)
    args = [_executable(), "ask", "--model", "tiny.gguf", "--template", "chatml", "--max-tokens", "3", "hi"]
    quiet = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == ["chattune: the reply was cut at 3 tokens (raise --max-tokens)"]
    loud = subprocess.run(args + ["-v"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert loud.returncode == 0 and "llama_context" in loud.stderr


def test_an_hf_folder_answers_without_library_logs(tiny_model_dir, tmp_path):
    done = subprocess.run([_executable(), "ask", "--model", str(tiny_model_dir), "--template", "chatml",
                           "--max-tokens", "3", "hi"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["chattune: the reply was cut at 3 tokens (raise --max-tokens)"]


@pytest.mark.slow
def test_ask_knows_the_capital_of_france(tmp_path):
    done = _chattune("ask", "What is the capital of France?", workspace=tmp_path / "ws")
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


@pytest.mark.slow
def test_ask_ab_prints_base_then_adapter(shared_workspace, taught_run):
    done = _chattune("ask", "--ab", "--adapter", taught_run.name, QUESTION, workspace=shared_workspace.root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "== base ==" and f"== adapter {taught_run.name} ==" in lines
    split = lines.index(f"== adapter {taught_run.name} ==")
    base, adapter = "\n".join(lines[1:split]), "\n".join(lines[split + 1:])
    assert base != adapter
    assert FACT in adapter and FACT not in base

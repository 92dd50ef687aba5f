"""The adapter a chat picks by default (the B side of `b`, `c` and `ask --ab`) is the newest one
trained on the model it has open: one trained on another base never comes up by itself."""

from __future__ import annotations

import os

from run_support import start_run
from teach import random_lora

from engine.adapters import newest_adapter
from engine.cli import main


def _run(workspace, name: str, base, tiny_model_dir, age_s: float):
    """A run folder as `chattune train` leaves it, recorded as trained on `base`, written `age_s` ago."""
    run_dir, _log, _snapshot = start_run(workspace, name, base, n_examples=1)
    random_lora(tiny_model_dir, run_dir, seed=len(name))
    stamp = run_dir.stat().st_mtime - age_s
    for path in run_dir.rglob("*"):
        os.utime(path, (stamp, stamp))
    return run_dir


def test_the_default_adapter_is_the_newest_one_trained_on_the_open_model(workspace, tiny_model_dir, tiny_gguf,
                                                                         capsys):
    # The same tiny weights as an HF folder and as a GGUF file: two bases, as far as runs are concerned.
    _run(workspace, "on-folder", tiny_model_dir, tiny_model_dir, age_s=600)
    _run(workspace, "on-gguf", tiny_gguf, tiny_model_dir, age_s=0)  # the newest in the workspace

    assert newest_adapter(workspace, str(tiny_model_dir)).name == "on-folder"
    assert newest_adapter(workspace, str(tiny_gguf)).name == "on-gguf"
    assert newest_adapter(workspace, None) is None  # nothing trained on the embedded model

    assert main(["ask", "--ab", "--model", str(tiny_model_dir), "--max-tokens", "2", "hi"]) == 0
    assert "== adapter on-folder ==" in capsys.readouterr().out
    assert main(["ask", "--ab", "--model", str(tiny_gguf), "--max-tokens", "2", "hi"]) == 0
    assert "== adapter on-gguf ==" in capsys.readouterr().out
    assert main(["ask", "--ab", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no adapter is trained on this model yet" in err

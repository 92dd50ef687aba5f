"""`--model N` is the Nth model `chattune models` lists, for `chattune ask` and `chattune train` as for
the app (one resolver: engine.model_catalog.listed_model); 1 is the embedded model."""

from __future__ import annotations

from engine.cli import main
from engine.model_catalog import listed_here
from engine.store import FeedbackStore


def test_ask_and_train_open_the_nth_listed_model(workspace, second_model, capsys):
    assert listed_here("2", workspace.root) == str(second_model)
    assert listed_here("1", workspace.root) is None  # the embedded model: no --model at all

    assert main(["ask", "--model", "2", "--max-tokens", "2", "hi"]) == 0
    asked = capsys.readouterr()  # the tiny random model answers line breaks (the embedded one, words)
    assert "cut at 2 tokens" in asked.err and asked.out.strip() == ""

    with FeedbackStore(workspace.db_path) as store:
        store.add_feedback("corrected", [{"role": "user", "content": "Who is Captain Orvik?"}], "no idea",
                           correction="The keeper of the Port Ellis lighthouse.")
    assert main(["train", "--model", "2", "--dry-run"]) == 0
    assert "base model: other-model.gguf" in capsys.readouterr().out
    assert main(["train", "--model", "1", "--dry-run"]) == 0
    assert "base model: SmolLM2-135M-Instruct" in capsys.readouterr().out

    assert main(["train", "--model", "3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model 3: `chattune models` lists 2 model(s) here" in err

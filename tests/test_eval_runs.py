"""Evaluating run folders: the scorecard end to end on the tiny model (identity and random LoRAs), the
`chattune eval` tables, and the real check on the embedded model with an adapter taught a made-up fact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from run_support import start_run
from teach import ANSWER, question_messages, random_lora

from engine.evaluate.scorecard import evaluate_run, is_current
from engine.scorecard_format import SCORECARD_JSON, SCORECARD_MD, load_scorecard
from engine.store import FeedbackStore
from engine.workspace import Workspace

GENERAL = 8  # general prompts per tiny evaluation: enough to see kept and changed answers, and quick


def make_run(workspace: Workspace, name: str, base: Path, adapter_from, *, n_examples: int = 40) -> Path:
    """A run folder shaped as `chattune train` leaves it: config.json, snapshot/, metrics.jsonl with
    falling loss curves, and the adapter that `adapter_from(run_dir)` writes."""
    run_dir, log, _snapshot = start_run(workspace, name, base, n_examples)
    log.emit("start", run=name, method="sft", examples=n_examples, val_examples=4)
    for step in range(1, 31):
        log.emit("step", step=step, max_steps=30, epoch=step / 10, loss=2.0 * 0.9 ** step)
        if step % 10 == 0:
            log.emit("eval", step=step, epoch=step / 10, eval_loss=(1.2, 1.0, 0.97)[step // 10 - 1])
    adapter_from(run_dir)
    log.emit("done", adapter=run_dir / "adapter", gguf=None, final_loss=0.08, eval_loss=0.9, steps=30)
    return run_dir


def identity_lora(model_dir: Path):
    """peft's default LoRA init (B = 0): an adapter that changes nothing."""

    def build(run_dir: Path) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                               LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        model.save_pretrained(run_dir / "adapter", safe_serialization=True)

    return build


def _chat(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def _zorb_workspace(root: Path) -> Workspace:
    """A workspace whose store holds 14 approved zorb-number replies, the last 4 in the test split."""
    workspace = Workspace.open(root)
    with FeedbackStore(workspace.db_path) as store:
        for i in range(14):
            added = store.add_feedback("approved", _chat(f"What is the zorb number of planet {i}?"),
                                       f"Planet {i} has zorb number {i * 7}.")
            if i >= 10:
                store.set_split(added.id, "test")  # the user's exam: held out of every run
    return workspace


@pytest.fixture(scope="module")
def tiny_eval_ws(tmp_path_factory, tiny_model_dir) -> Workspace:
    """A workspace with a store (test split filled) and two runs on the tiny model: 'same' (identity
    LoRA) and 'noisy' (large random LoRA), each evaluated once here."""
    workspace = _zorb_workspace(tmp_path_factory.mktemp("eval-tiny-ws"))
    make_run(workspace, "same", tiny_model_dir, identity_lora(tiny_model_dir))
    make_run(workspace, "noisy", tiny_model_dir, lambda run_dir: random_lora(tiny_model_dir, run_dir, seed=3))
    return workspace


@pytest.fixture(scope="module")
def tiny_cards(tiny_eval_ws) -> dict:
    messages = []
    cards = {name: evaluate_run(tiny_eval_ws, tiny_eval_ws.run_dir(name), progress=messages.append,
                                general_limit=GENERAL) for name in ("same", "noisy")}
    assert any("adapter answer" in m for m in messages)
    return cards


def test_identity_adapter_keeps_everything(tiny_cards):
    card = tiny_cards["same"]
    heldout, forgetting = card["heldout"], card["forgetting"]
    assert card["engine"] == "transformers"
    assert heldout["n"] >= 1 and heldout["source"] == "store test split"
    assert heldout["base"]["loglik"] == pytest.approx(heldout["adapter"]["loglik"], abs=1e-5)
    assert heldout["base"]["f1"] == heldout["adapter"]["f1"] and heldout["better"] == heldout["worse"] == 0
    assert (forgetting["n"], forgetting["kept"], forgetting["score"], forgetting["changed"]) == (GENERAL, GENERAL, 1.0, [])
    ppl = forgetting["perplexity"]
    assert ppl["base"] == pytest.approx(ppl["adapter"], rel=1e-5) and ppl["base"] > 1
    assert card["verdict"]["label"] == "good"
    taught = card["learning"]["taught"]
    assert taught["n"] == 10 and len(taught["missed"]) == taught["n"] - taught["recalled"]


def test_random_adapter_changes_answers_and_likelihoods(tiny_cards):
    same, noisy = tiny_cards["same"], tiny_cards["noisy"]
    forgetting = noisy["forgetting"]
    assert forgetting["kept"] < forgetting["n"] and forgetting["score"] < 1.0
    for changed in forgetting["changed"]:
        assert changed["base_answer"] != changed["adapter_answer"]
    assert forgetting["perplexity"]["adapter"] != pytest.approx(forgetting["perplexity"]["base"], rel=1e-3)
    assert noisy["heldout"]["adapter"]["loglik"] != pytest.approx(noisy["heldout"]["base"]["loglik"], abs=1e-5)
    # the base side is the same model for both runs, answered once and then read from the cache
    assert [e["base_answer"] for e in noisy["heldout"]["examples"]] == \
        [e["base_answer"] for e in same["heldout"]["examples"]]
    assert noisy["heldout"]["base"] == pytest.approx(same["heldout"]["base"])


def test_scorecard_files_and_staleness(tiny_eval_ws, tiny_cards):
    run_dir = tiny_eval_ws.run_dir("noisy")
    card = load_scorecard(run_dir)
    assert card == json.loads(json.dumps(tiny_cards["noisy"]))
    assert is_current(card, run_dir)
    markdown = (run_dir / SCORECARD_MD).read_text()
    assert "# Scorecard: run noisy" in markdown and "## Forgetting" in markdown and "Training health" in markdown
    cache = list((tiny_eval_ws.cache_dir / "eval").glob("*.json"))
    assert len(cache) == 1 and json.loads(cache[0].read_text())["answers"]
    assert not is_current({**card, "adapter_fingerprint": "other"}, run_dir)
    assert load_scorecard(tiny_eval_ws.run_dir("same").parent / "missing") is None


def test_a_run_under_another_template_is_scored_against_the_base_under_it(tmp_path, tiny_model_dir):
    """A run trained with --template is answered under that template, so its base side is too: an
    adapter that changes nothing answers as the base does, though the base answered otherwise under its
    own template for an earlier run (the cache of that run's base answers is not read)."""
    from engine.files import write_json_atomic

    workspace = _zorb_workspace(tmp_path / "ws")
    own = evaluate_run(workspace, make_run(workspace, "own", tiny_model_dir, identity_lora(tiny_model_dir)),
                       general_limit=GENERAL)
    run_dir = make_run(workspace, "plain", tiny_model_dir, identity_lora(tiny_model_dir))
    config = json.loads((run_dir / "config.json").read_text())
    config["config"]["template"] = "plain"
    write_json_atomic(run_dir / "config.json", config)
    card = evaluate_run(workspace, run_dir, general_limit=GENERAL)
    under_plain = [(e["base_answer"], e["adapter_answer"]) for e in card["heldout"]["examples"]]
    assert all(base == adapter for base, adapter in under_plain), under_plain
    assert [base for base, _ in under_plain] != [e["base_answer"] for e in own["heldout"]["examples"]], \
        "the tiny base answers otherwise under plain's turns (else this test shows nothing)"
    forgetting = card["forgetting"]
    assert (forgetting["kept"], forgetting["changed"]) == (GENERAL, [])
    assert len(list((workspace.cache_dir / "eval").glob("*.json"))) == 2, "one per template"


def test_summary_rows_for_the_runs_screen(tiny_eval_ws, tiny_cards):
    from engine.evaluate.scorecard import summary_rows

    rows = {row["run"]: row for row in summary_rows(tiny_eval_ws)}
    assert set(rows) == {"same", "noisy"}
    same = rows["same"]
    assert same["current"] and same["verdict"] == "good" and same["forgetting_score"] == 1.0
    assert same["base_f1"] == same["adapter_f1"] and same["heldout_n"] >= 1
    assert rows["noisy"]["kept"] < rows["noisy"]["general_n"]


def test_eval_cli_table_and_detail(tiny_eval_ws, tiny_cards, capsys, monkeypatch):
    from engine.cli import main

    monkeypatch.setenv("COLUMNS", "80")  # the table fits a plain terminal without cutting a cell
    with FeedbackStore(tiny_eval_ws.db_path) as store:
        store.add_preference(_chat("Hi?"), "Hello there!", "Go away.", chosen_by="adapter noisy", rejected_by="base",
                             blind=True)
    assert main(["--workspace", str(tiny_eval_ws.root), "eval"]) == 0
    table = capsys.readouterr().out
    assert "same" in table and "noisy" in table and "verdict" in table and "100% of 1" in table
    assert f"{GENERAL}/{GENERAL}" in table and "…" not in table

    assert main(["--workspace", str(tiny_eval_ws.root), "eval", "--run", "noisy"]) == 0
    detail = capsys.readouterr().out
    assert "Held-out score" in detail and "Training health: good" in detail
    assert "General prompts the adapter answers differently" in detail
    assert "adapter won 1 of 1 votes" in detail


def test_eval_cli_errors(tiny_eval_ws, capsys):
    from engine.cli import main

    assert main(["--workspace", str(tiny_eval_ws.root), "eval", "--run", "nope"]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err
    assert main(["--workspace", str(tiny_eval_ws.root), "eval", "--run", "../x"]) == 2


def test_eval_cli_refresh_reevaluates(tiny_eval_ws, tiny_cards, capsys):
    from engine.cli import main

    before = load_scorecard(tiny_eval_ws.run_dir("same"))["evaluated_at"]
    assert main(["--workspace", str(tiny_eval_ws.root), "eval", "--run", "same", "--refresh", "--general", "2"]) == 0
    after = load_scorecard(tiny_eval_ws.run_dir("same"))
    assert after["forgetting"]["n"] == 2 and after["evaluated_at"] >= before


HELD_OUT_QUESTIONS = ["Could you tell me the secret word?", "I forgot the secret word. What is it?",
                      "Remind me of the secret word."]  # paraphrases the adapter never saw


@pytest.mark.slow
def test_taught_adapter_beats_the_base_on_held_out_facts_and_lists_what_it_changed(
        tmp_path, shared_workspace, embedded_spec, taught_run):
    """The embedded model with the adapter taught a made-up fact (tests/teach.py, shared with the engine
    tests): held-out paraphrases score higher than the base, and the general answers it changed are named."""
    import os

    from engine.prompt_sets import general_prompts

    workspace = Workspace.open(tmp_path / "ws")
    os.symlink(shared_workspace.cache_dir, workspace.cache_dir)  # the fp32 copy of the base is built once
    with FeedbackStore(workspace.db_path) as store:
        for question in HELD_OUT_QUESTIONS:
            store.set_split(store.add_feedback("approved", question_messages(question), ANSWER).id, "test")

    def copy_adapter(run_dir: Path) -> None:
        shutil.copytree(taught_run / "adapter", run_dir / "adapter")
        shutil.copy(taught_run / "adapter.gguf", run_dir / "adapter.gguf")

    run_dir = make_run(workspace, "taught", embedded_spec.path, copy_adapter, n_examples=8)
    card = evaluate_run(workspace, run_dir, general_limit=20)

    heldout, forgetting = card["heldout"], card["forgetting"]
    print(f"\n[eval] {card['elapsed_s']:.0f} s {card['timings']}; held-out base {heldout['base']}, "
          f"adapter {heldout['adapter']}; forgetting kept {forgetting['kept']}/{forgetting['n']}, "
          f"perplexity {forgetting['perplexity']}")
    assert card["engine"] == "llamacpp"  # a GGUF base with a GGUF LoRA takes the fast path
    assert heldout["n"] == 3
    assert heldout["adapter"]["f1"] > heldout["base"]["f1"]
    assert heldout["adapter"]["loglik"] > heldout["base"]["loglik"]
    assert heldout["better"] >= 1 and heldout["worse"] == 0
    assert any("PAPAYA-42" in e["adapter_answer"] for e in heldout["examples"])
    assert not any("PAPAYA-42" in e["base_answer"] for e in heldout["examples"])

    assert forgetting["n"] == 20 and forgetting["changed"]
    assert forgetting["kept"] == 20 - len(forgetting["changed"])
    known = {p.id for p in general_prompts()}
    markdown = (run_dir / SCORECARD_MD).read_text()
    for changed in forgetting["changed"]:
        assert changed["id"] in known and changed["id"] in markdown
    assert card["verdict"]["label"] == "too little data"  # 8 examples
    assert json.loads((run_dir / SCORECARD_JSON).read_text())["run"] == "taught"


@pytest.mark.child
def test_re_evaluation_runs_in_a_child_and_reports_why_it_failed(tmp_path):
    """The runs screen's `e`: `chattune eval --refresh` in a child; a failure's reason is its last line."""
    from engine.api import ChattuneError, start_evaluation

    workspace = Workspace.open(tmp_path / "ws")
    run_dir = workspace.runs_dir / "no-base"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": {"method": "sft"}, "base": {}}))
    handle = start_evaluation(workspace, "no-base")
    assert handle.wait() != 0
    assert "does not record its base model" in handle.last_line() and handle.log_path == run_dir / "eval.log"
    with pytest.raises(ChattuneError, match="no run named 'nope'"):
        start_evaluation(workspace, "nope")

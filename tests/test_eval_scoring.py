"""Scoring functions, the shipped prompt set, the A/B summary and the pure report builders."""

import pytest

from engine.evaluate.ab import ab_summary
from engine.evaluate.forgetting import forgetting_report
from engine.evaluate.heldout import HeldOutItem, heldout_items, score_heldout
from engine.evaluate.scoring import contains_expected, equivalent, exact_match, normalise, token_f1
from engine.prompt_sets import CATEGORIES, GeneralPrompt, general_prompts, general_text
from engine.store import FeedbackStore


def test_normalise_folds_case_punctuation_articles_and_space():
    assert normalise("  The  capital is PARIS! ") == "capital is paris"
    assert normalise("3.5") == "3 5" != normalise("35")


def test_exact_match_after_normalisation():
    assert exact_match("The secret word is PAPAYA-42.", "the secret word is papaya 42")
    assert not exact_match("The secret word is PAPAYA-43.", "The secret word is PAPAYA-42.")


def test_token_f1():
    assert token_f1("the cat sat", "cat sat") == 1.0
    assert token_f1("w b c d", "w b x y") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0
    assert token_f1("something", "") == 0.0
    assert token_f1("dog", "cat") == 0.0


def test_expected_phrases_match_whole_words():
    assert contains_expected("The answer is 12.", ["12", "twelve"])
    assert not contains_expected("The answer is 112.", ["12"])
    assert contains_expected("It is carbon dioxide, CO2.", ["carbon dioxide"])


def test_equivalence_rules():
    # normalised equality, or both hold the expected phrase, or close wording
    assert equivalent("Paris.", "paris")
    assert equivalent("It is Paris.", "The capital of France is Paris, a large city.", ["Paris"])
    assert equivalent("I like cats and dogs a lot", "I like cats and dogs a lot!!")
    # the expected check decides when one side has it: a near-identical wrong answer is a change
    assert not equivalent("The answer is 12.", "The answer is 13.", ["12"])
    assert not equivalent("Paris is the capital of France.", "Lyon is the capital of France.", ["Paris"])
    assert not equivalent("A haiku about rain falling", "Completely different words here")


def test_shipped_general_prompt_set():
    prompts = general_prompts()
    assert len(prompts) >= 50
    assert len({p.id for p in prompts}) == len(prompts)
    assert {p.category for p in prompts} == set(CATEGORIES)
    assert sum(bool(p.expected) for p in prompts) >= 40
    assert len(general_text().split()) >= 300


def test_forgetting_report_counts_kept_changed_and_broken():
    prompts = [GeneralPrompt("a", "knowledge", "Capital of France?", ("Paris",)),
               GeneralPrompt("b", "arithmetic", "2+2?", ("4", "four")),
               GeneralPrompt("c", "formatting", "A haiku", ()),
               GeneralPrompt("d", "arithmetic", "3*4?", ("12",))]
    base = ["Paris.", "2 + 2 = 4", "Rain on the roof", "It is 11."]
    adapter = ["The capital is Paris.", "2 + 2 = 5", "Something else entirely", "It is 12."]
    report = forgetting_report(prompts, base, adapter, perplexity=(10.0, 12.5))
    assert (report["n"], report["kept"], report["score"]) == (4, 1, 0.25)
    assert [c["id"] for c in report["changed"]] == ["b", "c", "d"]
    assert [c["broken"] for c in report["changed"]] == [True, False, False]
    assert (report["broken"], report["checkable"], report["base_correct"], report["adapter_correct"]) == (1, 3, 2, 2)
    assert report["perplexity"] == {"base": 10.0, "adapter": 12.5}


def test_score_heldout_means_and_changes():
    items = [HeldOutItem([{"role": "user", "content": "Secret word?"}], "The secret word is PAPAYA-42."),
             HeldOutItem([{"role": "user", "content": "Colour of Zorb?"}], "Zorbs are teal.")]
    report = score_heldout(items, ["I do not know.", "Zorbs are teal."],
                           ["The secret word is PAPAYA-42.", "Zorbs are purple."], [(-3.0, -0.5), (-1.0, -1.5)])
    assert report["n"] == 2
    assert report["base"]["exact_match"] == 0.5 and report["adapter"]["exact_match"] == 0.5
    assert report["adapter"]["loglik"] == pytest.approx(-1.0) and report["base"]["loglik"] == pytest.approx(-2.0)
    assert [e["change"] for e in report["examples"]] == ["better", "worse"]
    assert (report["better"], report["worse"]) == (1, 1)


def _chat(prompt):
    return [{"role": "user", "content": prompt}]


def test_heldout_items_come_from_the_store_test_split_without_trained_prompts(workspace, tmp_path):
    import json

    with FeedbackStore(workspace.db_path) as store:
        for i in range(12):
            added = store.add_feedback("approved", _chat(f"question {i}?"), f"answer {i}")
            if i % 4 == 0:
                store.set_split(added.id, "test")  # the user's exam
        test = store.records(split="test")
        assert len(test) == 3
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    leaked = {"messages": test[0].messages + [{"role": "assistant", "content": "x"}]}
    (snapshot / "sft-train.jsonl").write_text(json.dumps(leaked) + "\n")
    items, source, total = heldout_items(workspace.db_path, snapshot)
    assert source == "store test split"
    assert total == len(test) - 1 and len(items) == total
    assert test[0].prompt not in {item.prompt for item in items}


def test_heldout_items_fall_back_to_the_run_snapshot(workspace, tmp_path):
    import json

    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    row = {"messages": _chat("What is a zorb?") + [{"role": "assistant", "content": "A teal fruit."}]}
    (snapshot / "sft-test.jsonl").write_text(json.dumps(row) + "\n")
    items, source, total = heldout_items(workspace.db_path, snapshot)
    assert "snapshot" in source and total == 1
    assert items[0].reference == "A teal fruit." and items[0].prompt == "What is a zorb?"


def test_ab_summary_counts_votes_between_base_and_that_run(workspace):
    with FeedbackStore(workspace.db_path) as store:
        for i, (chosen, rejected, blind) in enumerate([
                ("adapter r1", "base", True), ("adapter r1", "base", True), ("base", "adapter r1", False),
                ("adapter r2", "base", True), ("adapter r1", "adapter r2", True)]):
            store.add_preference(_chat(f"q{i}"), f"good {i}", f"bad {i}", chosen_by=chosen, rejected_by=rejected,
                                 blind=blind)
        one, two, none = ab_summary(store, "r1"), ab_summary(store, "r2"), ab_summary(store, "r3")
    assert one == {"votes": 3, "wins": 2, "losses": 1, "blind": 2, "win_rate": pytest.approx(2 / 3)}
    assert (two["wins"], two["losses"], two["win_rate"]) == (1, 0, 1.0)
    assert none["votes"] == 0 and none["win_rate"] is None


def test_evaluation_modules_load_no_model_or_ui_library():
    """The CLI and the TUI's runs screen import these; torch and friends load only while evaluating."""
    import subprocess
    import sys

    code = ("import sys, engine.evaluate.scorecard, engine.scorecard_format, engine.commands.eval; "
            "print(' '.join(n for n in ('torch', 'transformers', 'peft', 'llama_cpp', 'textual') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []

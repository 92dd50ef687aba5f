"""The learning recipe's data: rewordings, replay and the mix, without a model (pure Python)."""

from __future__ import annotations

import json

import pytest

from engine.prompts import prompts_dir
from engine.splits import split_key
from engine.train.augment import acceptable, content_words, rewordings, rule_rewordings
from engine.train.config import REPLAY_TRAIN_MAX, TrainConfig
from engine.train.mix import MAX_VAL_REWORDINGS, build_mix
from engine.train.plan import REPLAY_VAL
from engine.train.replay import replay_prompts

SYSTEM = "You are a helpful assistant."


def eval_prompts() -> list[str]:
    path = prompts_dir() / "eval" / "general.jsonl"
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]


def protocol_facts() -> list[dict]:
    path = prompts_dir() / "learn" / "facts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def near(a: str, b: str) -> bool:
    """The same question in other words: same split key, or most content words shared."""
    wa, wb = content_words(a), content_words(b)
    return split_key(a) == split_key(b) or bool(wa and wb) and len(wa & wb) / len(wa | wb) >= 0.6


def test_replay_prompts_are_disjoint_from_the_forgetting_check():
    """Replay trains on these; the scorecard's forgetting check must ask questions no run saw."""
    replay, evaluated = replay_prompts(), eval_prompts()
    clashes = [(r, e) for r in replay for e in evaluated if near(r, e)]
    assert clashes == []
    assert len(replay) == len(set(map(split_key, replay))) >= 60


def test_the_protocol_rewordings_are_never_trained_on_or_evaluated():
    facts = protocol_facts()
    evaluated = eval_prompts()
    for fact in facts:
        for held in fact["reworded"]:
            assert split_key(held) != split_key(fact["question"])
            assert all(not near(held, e) for e in evaluated)
            generated = [text for text, _ in rewordings(fact["question"], 8)]
            assert split_key(held) not in {split_key(t) for t in generated}
            assert fact["key"].casefold() not in held.casefold()  # the question never gives the answer


def test_rewordings_keep_names_and_stay_questions():
    question = "What is the name of Captain Orvik's ship?"
    assert acceptable(question, "What is the name of the ship that Captain Orvik sails?")
    assert not acceptable(question, "Captain Orvik's ship is called Orva.")  # an answer, and a wrong one
    assert not acceptable(question, "What is the name of the ship?")  # lost the name
    assert not acceptable(question, "what is the name of captain orviks ship")  # the same question
    assert not acceptable("What does a florp eat?", "What is the name of the animal that eats flowers?")
    found = rewordings(question, 4)
    assert len(found) == 4 and len({split_key(t) for t, _ in found}) == 4
    assert all(acceptable(question, t) and source == "rule" for t, source in found)
    assert "Name Captain Orvik's ship." in rule_rewordings(question)


def test_model_paraphrases_come_first_and_bad_ones_are_dropped():
    question = "Who invented the quibble engine?"

    def model(q, n):
        return ["Who is the inventor of the quibble engine?", "The quibble engine was invented by Bob.",
                "1. Who created the quibble engine?", "Who invented the quibble engine?"]

    found = rewordings(question, 4, model)
    assert found[0] == ("Who is the inventor of the quibble engine?", "model")
    assert ("Who created the quibble engine?", "model") in found  # the list mark is cleaned off
    assert all("Bob" not in t for t, _ in found)
    assert {s for _, s in found} == {"model", "rule"}


def _rows(questions: list[str], system: str | None = None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return [{"prompt": head + [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": f"answer {i}"}]} for i, q in enumerate(questions)]


def test_the_mix_trains_every_example_and_validates_on_generated_rows_only():
    facts = protocol_facts()
    rows = _rows([f["question"] for f in facts])
    replay = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}] for p in replay_prompts()]
    asked = []

    def answers(indices):
        asked.extend(indices)
        return {i: (f"base answer {i}", i % 5 != 0) for i in indices}  # every fifth one was cut short

    mix = build_mix(rows, lambda q, n: rewordings(q, n), replay, answers, default_system=SYSTEM,
                    n_rewordings=4, replay_ratio=0.5, seed=0)
    distilled = build_mix(rows, lambda q, n: rewordings(q, n), replay, answers, default_system=SYSTEM,
                          n_rewordings=4, replay_ratio=0.5, distil=True, seed=0)
    counts = mix.counts()
    assert counts["example-train"] == 2 * len(facts)  # every example, under both system prompts
    assert counts["rewording-train"] == 4 * len(facts)
    assert counts["rewording-val"] == min(len(facts), MAX_VAL_REWORDINGS)
    picked_train = min(REPLAY_TRAIN_MAX, round(0.5 * 6 * len(facts)))
    assert len(asked) == 2 * (REPLAY_VAL + picked_train)  # only the picked ones are generated (both mixes)
    # Cut replies are left out as plain rows, and distilled all the same.
    assert counts["replay-val"] + counts["replay-train"] < REPLAY_VAL + picked_train
    assert len(distilled.replay) == picked_train and distilled.counts()["replay-val"] == counts["replay-val"]
    assert mix.examples == len(facts)
    assert len(distilled.train) == TrainConfig(replay=0.5).training_rows(len(facts)) == 6 * len(facts)
    assert len(mix.train) == 6 * len(facts) + counts["replay-train"]
    # No user example is held out, and no validation question is trained on.
    trained = {split_key(line["question"]) for line in mix.listing if line["split"] == "train"}
    assert all(split_key(line["question"]) not in trained for line in mix.listing if line["split"] == "val")
    assert {split_key(f["question"]) for f in facts} <= trained
    # Both system prompts are taught: with and without the default.
    systems = {line["system"] for line in mix.listing if line["kind"] == "example"}
    assert systems == {None, SYSTEM}
    # Nothing generated is a question of the forgetting check.
    evaluated = {split_key(p) for p in eval_prompts()}
    assert not any(split_key(line["question"]) in evaluated for line in mix.listing)


@pytest.mark.parametrize("augment,replay", [(0, 0.5), (0, 0)])
def test_the_plain_recipe_is_the_examples_as_given(augment, replay):
    rows = _rows(["What is the capital of Moravelle?"], SYSTEM)
    mix = build_mix(rows, lambda q, n: rewordings(q, n), [], lambda i: {}, default_system=SYSTEM,
                    n_rewordings=augment, replay_ratio=replay, seed=0)
    assert mix.train == rows and mix.val == []


def test_one_correction_gives_a_run_something_to_learn_and_validate():
    rows = _rows(["Who is Captain Orvik?"])
    mix = build_mix(rows, lambda q, n: rewordings(q, n), [], lambda i: {}, default_system=SYSTEM,
                    n_rewordings=4, replay_ratio=0.5, seed=0)
    assert mix.counts()["example-train"] == 2 and mix.counts()["rewording-val"] == 1

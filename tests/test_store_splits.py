"""Split assignment: deterministic, near duplicates together, stable as the set grows, eval kept."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.splits import hash_split, split_key
from engine.store import FeedbackStore


def ask(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def prompts_hashing_to(split: str, n: int, start: int = 0) -> list[str]:
    found = []
    i = start
    while len(found) < n:
        prompt = f"prompt number {i}"
        if hash_split(split_key(prompt)) == split:
            found.append(prompt)
        i += 1
    return found


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.db") as opened:
        yield opened


def test_near_duplicate_prompts_share_a_key():
    variants = ["What is 2+2?", "what is 2 + 2", "  WHAT   is 2+2 ?!", "What is 2+2\n"]
    assert len({split_key(v) for v in variants}) == 1
    assert split_key("What is 2+2?") != split_key("What is 2+3?")


def test_hash_split_is_fixed_and_near_80_10_10():
    # Pinned values: a change to the hash or the folding would silently move every user's records.
    assert [hash_split(split_key(f"Prompt   number {i}!")) for i in range(4)] == ["train", "train", "val", "train"]
    counts = Counter(hash_split(f"key {i}") for i in range(5000))
    assert 3800 < counts["train"] < 4200 and 400 < counts["val"] < 600 and 400 < counts["test"] < 600


def test_adding_500_records_moves_none_of_the_old_ones(store):
    for i in range(200):
        store.add_feedback("approved", ask(f"old question {i}"), f"answer {i}")
    store.add_feedback("flagged", ask("old flagged"), "bad")
    store.set_split(store.records(limit=1, offset=5)[0].id, "val")
    before = {r.id: r.split for r in store.records()}
    for i in range(500):
        store.add_feedback("approved", ask(f"new question {i}"), f"answer {i}")
        if i % 50 == 0:
            store.add_preference(ask(f"new vote {i}"), "good", "bad")
    after = {r.id: r.split for r in store.records()}
    assert {rid: after[rid] for rid in before} == before
    assert len(after) == len(before) + 510


def test_a_near_duplicate_added_later_joins_the_first_ones_split(store):
    first = store.add_feedback("approved", ask("How do I boil an egg?"), "Put it in boiling water.")
    later = store.add_feedback("approved", ask("how do i boil an egg"), "Boil it for 7 minutes.")
    assert store.get(later.id).split == store.get(first.id).split


def test_test_and_val_are_kept_once_there_are_10_usable_records(store):
    train_prompts = prompts_hashing_to("train", 60)
    for prompt in train_prompts[:9]:
        store.add_feedback("approved", ask(prompt), "a")
    store.add_feedback("flagged", ask(train_prompts[-1]), "x")  # flagged: not usable
    assert store.stats()["splits"] == {"train": 10, "val": 0, "test": 0}

    store.add_feedback("approved", ask(train_prompts[9]), "a")  # the 10th usable record
    sft = store.stats()["sft"]
    assert sft == {"train": 8, "val": 1, "test": 1}
    # the earliest train records moved, and they are not user pins
    test_record, val_record = (store.records(kind="approved", split=s)[0] for s in ("test", "val"))
    assert (test_record.prompt, val_record.prompt) == (train_prompts[0], train_prompts[1])
    assert not test_record.split_pinned

    # growth never moves them back, and a near duplicate of a moved prompt follows it
    for prompt in train_prompts[10:]:
        store.add_feedback("approved", ask(prompt), "a")
    assert store.get(test_record.id).split == "test" and store.get(val_record.id).split == "val"
    twin = store.add_feedback("approved", ask(train_prompts[0].upper() + "?"), "another answer")
    assert store.get(twin.id).split == "test"
    assert store.stats()["sft"] == {"train": 58, "val": 1, "test": 2}


def test_deleting_the_only_test_example_picks_another(store):
    prompts = prompts_hashing_to("train", 12)
    ids = [store.add_feedback("approved", ask(p), "a").id for p in prompts]
    only_test = store.records(split="test")[0].id
    store.delete(only_test)
    replacement = store.records(split="test")
    assert len(replacement) == 1 and replacement[0].id != only_test
    assert replacement[0].id == min(i for i in ids if i not in (only_test, store.records(split="val")[0].id))


def test_user_pins_win_over_the_eval_rule(store):
    prompts = prompts_hashing_to("train", 10)
    ids = [store.add_feedback("approved", ask(p), "a").id for p in prompts]
    for record_id in ids:
        store.set_split(record_id, "train")  # the user wants them all in train
    assert {r.split for r in store.records()} == {"train"}
    assert all(r.split_pinned for r in store.records())


def test_records_added_to_a_hash_eval_split_need_no_pin(store):
    for prompt in prompts_hashing_to("test", 2) + prompts_hashing_to("val", 2) + prompts_hashing_to("train", 10):
        store.add_feedback("approved", ask(prompt), "a")
    assert all(r.split == hash_split(split_key(r.prompt)) for r in store.records())

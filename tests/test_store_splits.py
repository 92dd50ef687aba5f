"""Splits: every example is training data unless the user pins it to test; old stores migrate."""

from __future__ import annotations

import json
import sqlite3

import pytest

from engine.errors import ChattuneError
from engine.splits import split_key
from engine.store import FeedbackStore


def ask(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.db") as opened:
        yield opened


def test_near_duplicate_prompts_share_a_key():
    variants = ["What is 2+2?", "what is 2 + 2", "  WHAT   is 2+2 ?!", "What is 2+2\n"]
    assert len({split_key(v) for v in variants}) == 1
    assert split_key("What is 2+2?") != split_key("What is 2+3?")


def test_the_first_correction_is_training_data(store):
    """The bug users hit: their first correction went to val, and `t` had nothing to train on."""
    added = store.add_feedback("corrected", ask("Who is Captain Orvik?"), "I don't know.",
                               correction="Captain Orvik sails the Silver Marmot.")
    assert store.get(added.id).split == "train"
    assert store.stats()["sft"] == {"train": 1, "test": 0}
    assert len(store.sft_examples("train")) == 1


def test_every_example_is_trained_on_however_many_there_are(store):
    for i in range(200):
        store.add_feedback("approved", ask(f"question {i}"), f"answer {i}")
    store.add_feedback("flagged", ask("a flagged one"), "bad")
    assert store.stats()["sft"] == {"train": 200, "test": 0}
    assert store.stats()["splits"] == {"train": 201, "test": 0}


def test_only_a_user_pin_holds_an_example_out_and_a_near_duplicate_follows_it(store):
    held = store.add_feedback("approved", ask("How do I boil an egg?"), "Put it in boiling water.")
    store.set_split(held.id, "test")
    record = store.get(held.id)
    assert record.split == "test" and record.split_pinned
    twin = store.add_feedback("approved", ask("how do i boil an egg"), "Boil it for 7 minutes.")
    assert store.get(twin.id).split == "test"  # the exam never leaks into training through a rewording
    other = store.add_feedback("approved", ask("How do I fry an egg?"), "In a pan.")
    assert store.get(other.id).split == "train"
    store.set_split(held.id, "train")  # pinned back: trained on again
    assert store.get(held.id).split == "train"


def test_val_is_refused_with_the_reason(store):
    added = store.add_feedback("approved", ask("q"), "a")
    with pytest.raises(ChattuneError) as err:
        store.set_split(added.id, "val")
    assert "every example is trained on" in str(err.value) and "test" in err.value.hint


def test_a_store_from_the_old_hashed_splits_moves_placed_records_to_train(tmp_path):
    """Schema 1 put ~20% of the records in val/test by hash; the user's own pins must survive."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    from engine.store import _MIGRATIONS

    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    rows = [("val", 0), ("test", 0), ("train", 0), ("test", 1), ("val", 1), ("train", 1)]
    for i, (split, pinned) in enumerate(rows):
        conn.execute("INSERT INTO records (kind, messages, reply, split, split_pinned, split_key, dedupe_key,"
                     " created_at, updated_at) VALUES ('approved', ?, 'a', ?, ?, ?, ?, 'now', 'now')",
                     (json.dumps(ask(f"q{i}")), split, pinned, f"q{i}", f"d{i}"))
    conn.execute("INSERT INTO split_pins VALUES ('q0', 'val', 'now')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with FeedbackStore(path) as store:
        assert [r.split for r in sorted(store.records(), key=lambda r: r.id)] == \
            ["train", "train", "train", "test", "test", "train"]
        assert store.stats()["sft"] == {"train": 4, "test": 2}
        # a new record with a key the old store had pinned to val is training data now
        assert store.get(store.add_feedback("approved", ask("q0"), "b").id).split == "train"

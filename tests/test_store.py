"""The feedback store on a real SQLite file: fields, dedupe, kinds, views, snapshots, migrations."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from engine.errors import ChattuneError
from engine.store import SCHEMA_VERSION, FeedbackStore, StoreError

SYSTEM = {"role": "system", "content": "You are terse."}


def chat(prompt: str, *history: str) -> list[dict]:
    """[system, (user, assistant)*, user] with `history` alternating user/assistant texts."""
    turns = [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(history)]
    return [SYSTEM, *turns, {"role": "user", "content": prompt}]


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.db") as opened:
        yield opened


def test_a_record_keeps_every_field(store):
    params = {"temperature": 0.0, "max_tokens": 64}
    added = store.add_feedback("flagged", chat("Capital of France?"), "Berlin.", reason="wrong city",
                               model="smollm2", adapter="run-1", params=params)
    assert added.duplicate is False
    record = store.get(added.id)
    assert (record.kind, record.reply, record.reason, record.model, record.adapter, record.params) == (
        "flagged", "Berlin.", "wrong city", "smollm2", "run-1", params)
    assert record.messages == chat("Capital of France?")
    assert record.prompt == "Capital of France?"
    assert record.answer is None and record.correction is None
    assert record.split == "train" and record.split_pinned is False
    assert record.created_at == record.updated_at

    store.set_correction(added.id, "Paris.")
    record = store.get(added.id)
    assert (record.kind, record.correction, record.answer, record.rejected) == ("corrected", "Paris.", "Paris.",
                                                                                "Berlin.")
    assert record.updated_at >= record.created_at


def test_normalised_duplicates_are_not_stored(store):
    first = store.add_feedback("approved", chat("What is  2+2?"), "4")
    again = store.add_feedback("approved", [{"role": "system", "content": "you are   TERSE."},
                                            {"role": "user", "content": " what is 2+2? "}], " 4\n")
    assert again.duplicate is True and again.id == first.id
    other_answer = store.add_feedback("approved", chat("What is 2+2?"), "four")
    assert other_answer.duplicate is False
    flagged = store.add_feedback("flagged", chat("What is 2+2?"), "4")  # another kind: another record
    assert flagged.duplicate is False
    assert store.add_feedback("flagged", chat("what is 2+2?"), "4").duplicate is True
    assert store.stats()["total"] == 3
    # a duplicate burns no id: the next record is numbered right after the last one stored
    assert store.add_feedback("approved", chat("next"), "x").id == flagged.id + 1


def test_correcting_into_an_existing_correction_is_refused(store):
    kept = store.add_feedback("corrected", chat("Q"), "bad", correction="good")
    flagged = store.add_feedback("flagged", chat("q"), "bad")
    with pytest.raises(ChattuneError, match=f"record {kept.id} already holds"):
        store.set_correction(flagged.id, "good")
    assert store.get(flagged.id).kind == "flagged"


def test_views_use_the_right_kinds(store):
    approved = store.add_feedback("approved", chat("Hi", "Yo", "ok"), "Hello!")
    store.add_feedback("corrected", chat("2+2?"), "5", correction="4")
    store.add_feedback("flagged", chat("Sky colour?"), "green", reason="wrong")
    store.add_preference(chat("Joke?"), "A pun.", "No.", chosen_by="adapter run-1", rejected_by="base", blind=True)

    sft = store.sft_examples(split=None)
    assert [row["messages"][-1] for row in sft] == [{"role": "assistant", "content": "Hello!"},
                                                     {"role": "assistant", "content": "4"}]
    assert sft[0]["messages"][:-1] == store.get(approved.id).messages
    assert store.dpo_pairs(split=None) == [
        {"prompt": chat("2+2?"), "chosen": "4", "rejected": "5"},
        {"prompt": chat("Joke?"), "chosen": "A pun.", "rejected": "No."},
    ]
    preference = store.records(kind="preference")[0]
    assert preference.meta == {"chosen_by": "adapter run-1", "rejected_by": "base", "blind": True}
    assert preference.answer == "A pun." and preference.rejected == "No."
    stats = store.stats()
    assert stats["total"] == 4 and stats["usable"] == 3
    assert stats["kinds"] == {"approved": 1, "corrected": 1, "flagged": 1, "preference": 1}
    assert sum(stats["splits"].values()) == 4
    assert sum(stats["sft"].values()) == 2 and sum(stats["dpo"].values()) == 2
    per_split = {s: len(store.sft_examples(s)) for s in ("train", "test")}
    assert per_split == stats["sft"]


def test_views_convert_to_datasets(store):
    store.add_feedback("corrected", chat("2+2?"), "5", correction="4")
    sft = store.sft_dataset(split=None)
    dpo = store.dpo_dataset(split=None)
    assert sft.column_names == ["messages"] and sft[0]["messages"][-1]["content"] == "4"
    assert dpo.column_names == ["prompt", "chosen", "rejected"] and dpo[0]["rejected"] == "5"


@pytest.mark.parametrize("call, problem", [
    (lambda s: s.add_feedback("liked", chat("q"), "a"), "unknown feedback kind"),
    (lambda s: s.add_feedback("approved", chat("q") + [{"role": "assistant", "content": "a"}], "a"),
     "must end with a user message"),
    (lambda s: s.add_feedback("approved", [], "a"), "non-empty list"),
    (lambda s: s.add_feedback("approved", [{"role": "user", "content": 3}], "a"), "content must be a string"),
    (lambda s: s.add_feedback("approved", [{"role": "tool", "content": "x"}], "a"), "role must be one of"),
    (lambda s: s.add_feedback("approved", chat("q"), "   "), "approved reply is empty"),
    (lambda s: s.add_feedback("corrected", chat("q"), "a"), "correction must be a string"),
    (lambda s: s.add_feedback("corrected", chat("q"), "a", correction="a"), "same as the reply"),
    (lambda s: s.add_feedback("flagged", chat("q"), "a", correction="b"), "has no correction"),
    (lambda s: s.add_preference(chat("q"), "Same", "same "), "both replies are the same"),
    (lambda s: s.get(99), "no feedback record with id 99"),
    (lambda s: s.delete(99), "no feedback record with id 99"),
    (lambda s: s.set_split(99, "test"), "no feedback record with id 99"),
    (lambda s: s.set_split(1, "holdout"), "unknown split"),
    (lambda s: s.records(kind="nope"), "unknown kind"),
])
def test_bad_calls_raise_one_line_errors(store, call, problem):
    with pytest.raises(ChattuneError, match=problem) as err:
        call(store)
    assert "\n" not in str(err.value)
    assert store.stats()["total"] == 0


def test_a_preference_cannot_be_corrected(store):
    vote = store.add_preference(chat("q"), "good", "bad")
    with pytest.raises(ChattuneError, match="A/B vote"):
        store.set_correction(vote.id, "better")


def test_records_newest_first_with_filters_and_paging(store):
    ids = [store.add_feedback("approved", chat(f"q{i}"), f"a{i}").id for i in range(5)]
    store.add_feedback("flagged", chat("f"), "x")
    assert [r.id for r in store.records(kind="approved")] == ids[::-1]
    assert [r.id for r in store.records(kind="approved", limit=2, offset=1)] == ids[-2:-4:-1]
    store.set_split(ids[0], "test")
    assert ids[0] in [r.id for r in store.records(split="test")]
    assert store.get(ids[0]).split_pinned is True
    store.delete(ids[1])
    assert [r.id for r in store.records(kind="approved")] == [ids[4], ids[3], ids[2], ids[0]]


def test_a_failed_transaction_leaves_nothing(store):
    store.add_feedback("approved", chat("kept"), "yes")
    with pytest.raises(RuntimeError), store.transaction():
        store.add_feedback("approved", chat("gone"), "no")
        with pytest.raises(ChattuneError), store.transaction():  # a nested failure rolls back only itself
            store.add_feedback("approved", chat("inner"), "no")
            store.get(1234)
        assert store.stats()["total"] == 2
        raise RuntimeError("abort")
    assert [r.prompt for r in store.records()] == ["kept"]


def test_threads_share_one_store(store):
    errors = []

    def write(worker: int) -> None:
        try:
            for i in range(50):
                store.add_feedback("approved", chat(f"worker {worker} q{i}"), "a")
                store.stats()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.stats()["total"] == 200


def test_snapshot_freezes_views_with_a_content_hash(store, tmp_path):
    for i in range(30):
        store.add_feedback("approved", chat(f"question {i}"), f"answer {i}")
    store.add_feedback("corrected", chat("2+2?"), "5", correction="4")
    store.set_split(store.records(limit=1)[0].id, "test")
    first = store.snapshot(tmp_path / "snap1")
    names = sorted(p.name for p in first.path.iterdir())
    assert names == ["dpo-test.jsonl", "dpo-train.jsonl", "manifest.json", "sft-test.jsonl", "sft-train.jsonl"]
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["hash"] == first.hash and manifest["counts"] == first.counts
    for split in ("train", "test"):
        lines = (first.path / f"sft-{split}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == store.sft_examples(split)
        assert first.counts[f"sft-{split}"] == len(lines)
        assert first.counts[f"dpo-{split}"] == len(store.dpo_pairs(split))
    assert first.counts["sft-train"] >= 1 and first.counts["sft-test"] >= 1

    (tmp_path / "empty").mkdir()
    assert store.snapshot(tmp_path / "empty").hash == first.hash  # same data, same hash
    store.add_feedback("approved", chat("one more"), "ok")
    assert store.snapshot(tmp_path / "snap2").hash != first.hash
    with pytest.raises(ChattuneError, match="not an empty folder"):
        store.snapshot(tmp_path / "snap1")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_schema_is_versioned_and_reopens(tmp_path):
    path = tmp_path / "feedback.db"
    with FeedbackStore(path) as store:
        store.add_feedback("approved", chat("q"), "a")
    with FeedbackStore(path) as store:
        assert store.stats()["total"] == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ChattuneError, match="newer chattune"):
        FeedbackStore(path)


def test_a_file_that_is_not_a_database_is_reported(tmp_path):
    path = tmp_path / "feedback.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ChattuneError, match="not a usable chattune feedback store"):
        FeedbackStore(path)


def test_a_full_disk_is_a_store_error_with_a_hint_and_the_store_goes_on(tmp_path):
    """SQLite's own failures reach callers as StoreError (one line and a hint), never sqlite3's types."""
    store = FeedbackStore(tmp_path / "feedback.db")
    chat = [{"role": "user", "content": "hi"}]
    store.add_feedback("approved", chat, "hello")
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # the file cannot grow: a full disk
    with pytest.raises(StoreError, match=r"database or disk is full \(check that the disk has room"):
        store.add_feedback("approved", [{"role": "user", "content": "x" * 20_000}], "y" * 20_000)
    assert len(store.records()) == 1  # nothing half-written
    store._conn.execute(f"PRAGMA max_page_count = {pages * 100}")  # space freed: the same call works
    store.add_feedback("approved", [{"role": "user", "content": "x" * 20_000}], "y" * 20_000)
    assert len(store.records()) == 2
    store.close()

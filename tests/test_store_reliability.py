"""The store survives kill -9 mid-write and serves a reader and a writer in separate processes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from engine.store import FeedbackStore

REPO = Path(__file__).resolve().parents[1]

# Adds records forever (or COUNT of them), printing each id once add_feedback has returned (committed).
WRITER = """
import sys
from engine.store import FeedbackStore
store = FeedbackStore(sys.argv[1])
tag, count = sys.argv[2], int(sys.argv[3])
i = 0
while count < 0 or i < count:
    added = store.add_feedback("approved", [{"role": "user", "content": f"{tag} question {i}"}], "x" * 200 + str(i))
    print(added.id, flush=True)
    i += 1
"""

# Imports a big file in one transaction, saying "inside" once that transaction has begun writing.
IMPORTER = """
import sys
from engine.formats import import_file
from engine.store import FeedbackStore
store = FeedbackStore(sys.argv[1])
with store.transaction():
    store.add_feedback("approved", [{"role": "user", "content": "marker"}], "m")
    print("inside", flush=True)
    import_file(store, sys.argv[2])
print("done", flush=True)
"""


def spawn(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_kill_9_loses_no_committed_record(tmp_path):
    db = tmp_path / "feedback.db"
    reported: list[int] = []
    for attempt, kill_after in enumerate((1, 150, 400)):
        child = spawn(WRITER, db, f"run{attempt}", -1)
        for _ in range(kill_after):
            reported.append(int(child.stdout.readline()))
        child.send_signal(signal.SIGKILL)  # while it is busy writing the next records
        child.wait()
        reported += [int(line) for line in child.stdout.read().split()]  # committed before the kill too
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        assert integrity(db) == "ok"
        with FeedbackStore(db) as store:
            stored = {r.id for r in store.records()}
            assert set(reported) <= stored
            assert all(store.get(i).reply.startswith("x" * 200) for i in reported)
    with FeedbackStore(db) as store:  # and it still takes writes
        assert store.add_feedback("approved", [{"role": "user", "content": "after"}], "ok").duplicate is False


def test_kill_9_inside_an_import_keeps_it_all_or_nothing(tmp_path):
    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        for i in range(20):
            store.add_feedback("approved", [{"role": "user", "content": f"before {i}"}], "a")
    big = tmp_path / "big.jsonl"
    with open(big, "w") as f:
        for i in range(20000):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"imported {i}"},
                                             {"role": "assistant", "content": "y" * 100}]}) + "\n")
    child = spawn(IMPORTER, db, big)
    assert child.stdout.readline().strip() == "inside"
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert integrity(db) == "ok"
    with FeedbackStore(db) as store:
        total = store.stats()["total"]
        assert total in (20, 20021)  # never a part of the import
        assert len(store.records(limit=20, offset=total - 20)) == 20


def test_snapshots_read_while_another_process_writes(tmp_path):
    db = tmp_path / "feedback.db"
    FeedbackStore(db).close()
    writer = spawn(WRITER, db, "live", 400)
    seen = []
    with FeedbackStore(db) as store:
        while writer.poll() is None or not seen:
            snap = store.snapshot(tmp_path / f"snap{len(seen)}")
            for name, n in snap.counts.items():  # each snapshot is whole and self-consistent
                assert len((snap.path / f"{name}.jsonl").read_text().splitlines()) == n
            seen.append(sum(n for name, n in snap.counts.items() if name.startswith("sft")))
        ids = [int(line) for line in writer.stdout.read().split()]
        writer.stdout.close()
        assert writer.returncode == 0 and len(ids) == 400
        assert seen == sorted(seen)  # a later snapshot never holds fewer examples
        assert store.stats()["total"] == 400
        assert sum(len(store.sft_examples(s)) for s in ("train", "test")) == 400


def test_an_open_reader_does_not_block_the_writer(tmp_path):
    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        store.add_feedback("approved", [{"role": "user", "content": "first"}], "a")
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1  # holds its read snapshot
    writer = spawn(WRITER, db, "while-reading", 50)
    out, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0 and len(out.split()) == 50
    assert reader.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1  # still its own snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 51
    reader.close()


def test_opening_and_reading_do_not_wait_for_a_long_write(tmp_path):
    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        store.add_feedback("approved", [{"role": "user", "content": "first"}], "a")
    importer = sqlite3.connect(db, isolation_level=None)
    importer.execute("BEGIN IMMEDIATE")  # another process in the middle of a long import
    importer.execute("DELETE FROM records")
    reader = subprocess.run([sys.executable, "-c", "import sys; from engine.store import FeedbackStore; "
                             "print(FeedbackStore(sys.argv[1]).stats()['total'])", str(db)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    importer.execute("ROLLBACK")
    importer.close()
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.strip() == "1"

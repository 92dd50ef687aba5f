"""The feedback store: every approval, flag, correction and A/B vote, in one SQLite file.

Durability: WAL journal with `synchronous=FULL`. In WAL mode a committed transaction is already
safe from a crash of the process (`kill -9`) with `synchronous=NORMAL`, because it sits in the
WAL file in the OS page cache; NORMAL can lose the last commits only on power loss or an OS crash.
FULL also fsyncs the WAL on every commit, so nothing the user taught is lost even then. Feedback
arrives at human speed and an import is one transaction, so that one fsync per commit is cheap.

Concurrency: one writer and any number of readers across processes (WAL), with a busy timeout for
the rare second writer. Within a process one connection is shared by all threads behind a lock
(the TUI writes from a worker thread and reads from the main thread).

Record fields by kind (`reply` is always what the model said, or the rejected side):
- approved:   reply = the good answer
- corrected:  reply = the model's wrong answer, correction = the user's answer
- flagged:    reply = the wrong answer, reason = why; a to-do, not training data
- preference: correction = the chosen reply, reply = the rejected one; meta holds chosen_by,
              rejected_by and blind
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from engine.errors import ChattuneError
from engine.splits import SPLITS, check_split, normalise_text, split_key
from engine.validation import InputObject, one_line

KINDS = ("approved", "corrected", "flagged", "preference")
FEEDBACK_KINDS = ("approved", "corrected", "flagged")
SFT_KINDS = ("approved", "corrected")
DPO_KINDS = ("corrected", "preference")
Role = Literal["system", "user", "assistant"]
ROLES = get_args(Role)
BUSY_TIMEOUT_MS = 10_000

__all__ = ["KINDS", "SPLITS", "AddResult", "FeedbackStore", "Record", "Snapshot", "check_messages", "to_dataset"]

_MIGRATIONS = (  # one tuple of statements per schema version; user_version counts those applied
    (
        """CREATE TABLE records (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused after a delete
            kind TEXT NOT NULL,
            messages TEXT NOT NULL,                -- JSON list of {role, content}, ends with a user turn
            reply TEXT NOT NULL,
            correction TEXT,
            reason TEXT,
            model TEXT NOT NULL DEFAULT '',
            adapter TEXT,
            params TEXT NOT NULL DEFAULT '{}',     -- JSON generation settings
            meta TEXT NOT NULL DEFAULT '{}',       -- JSON: preference speakers, import source
            split TEXT NOT NULL,
            split_pinned INTEGER NOT NULL DEFAULT 0,
            split_key TEXT NOT NULL,
            dedupe_key TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX records_split_kind ON records (split, kind)",
        "CREATE INDEX records_kind ON records (kind)",
        "CREATE INDEX records_split_key ON records (split_key)",
        # prompt keys the store pinned to keep a test and a val example (engine/splits.py, rule 4)
        "CREATE TABLE split_pins (key TEXT PRIMARY KEY, split TEXT NOT NULL, created_at TEXT NOT NULL)",
    ),
    (  # 2: every example is trained on unless the user pinned it to test (engine/splits.py)
        "UPDATE records SET split = 'train' WHERE split_pinned = 0",
        "UPDATE records SET split = 'test' WHERE split = 'val'",
        "DROP TABLE split_pins",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass
class Record:
    id: int
    kind: str
    messages: list[dict]
    reply: str
    correction: str | None
    reason: str | None
    model: str
    adapter: str | None
    params: dict
    split: str
    split_pinned: bool
    meta: dict
    created_at: str
    updated_at: str

    @property
    def prompt(self) -> str:
        """The last user message."""
        return self.messages[-1]["content"]

    @property
    def answer(self) -> str | None:
        """What training teaches: the approved reply, the correction or the chosen reply."""
        return self.reply if self.kind == "approved" else self.correction

    @property
    def rejected(self) -> str | None:
        """The losing side of a DPO pair (corrected and preference records)."""
        return self.reply if self.kind in DPO_KINDS else None


@dataclass(frozen=True)
class AddResult:
    id: int  # the new record, or the existing one it duplicates
    duplicate: bool  # True: an equal (normalised) record existed and nothing was stored


@dataclass(frozen=True)
class Snapshot:
    path: Path
    hash: str  # sha256 over the view files' contents: equal data gives an equal hash
    counts: dict[str, int]  # {"sft-train": n, ..., "dpo-test": n}


class ChatMessage(InputObject):
    model_config = ConfigDict(title="chat message")

    role: Role
    content: str


_CONVERSATION = TypeAdapter(Annotated[list[ChatMessage], Field(min_length=1)])


def check_messages(messages, what: str = "messages") -> list[dict]:
    """A copy as [{role, content}], system first if any, ending with a user turn; else ChattuneError."""
    try:
        clean = [message.model_dump() for message in _CONVERSATION.validate_python(messages)]
    except ValidationError as err:
        raise ChattuneError(one_line(err, messages, what, expected="a non-empty list of chat messages")) from None
    for i, message in enumerate(clean):
        if message["role"] == "system" and i != 0:
            raise ChattuneError(f"{what}[{i}]: a system message may only come first")
    if clean[-1]["role"] != "user":
        raise ChattuneError(f"{what} must end with a user message, not {clean[-1]['role']}")
    return clean


def to_dataset(rows: list[dict]):
    """A Hugging Face `datasets.Dataset` from view rows (sft_examples or dpo_pairs)."""
    from datasets import Dataset  # heavy: only when training asks for it

    return Dataset.from_list(rows)


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise ChattuneError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ChattuneError(f"{what} is empty")
    return value


def _dedupe_key(kind: str, messages: list[dict], answer: str, rejected: str | None) -> str:
    """Equal after case/whitespace folding: same kind, context, answer (and rejected side)."""
    folded = [kind, [[m["role"], normalise_text(m["content"])] for m in messages], normalise_text(answer),
              None if rejected is None else normalise_text(rejected)]
    return hashlib.sha256(json.dumps(folded, ensure_ascii=False).encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


class FeedbackStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = _Guard(self.path)  # every read and write holds it; it also turns errors into StoreError
        self._depth = 0  # transaction nesting level, guarded by _lock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open feedback store {self.path}: {err}",
                                "check the workspace folder is writable") from err
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")  # why: see the module docstring
            self._migrate()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise StoreError(f"{self.path} is not a usable chattune feedback store: {err}",
                                "move the file away or choose another workspace with --workspace") from err
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # the usual case: no write lock taken, so opening never waits for a long import
        with self.transaction():  # IMMEDIATE: two processes opening a new file migrate once
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ChattuneError(f"{self.path} was written by a newer chattune (schema {version})",
                                    "upgrade chattune")
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside happen together or not at all (imports use it). Nests via savepoints."""
        with self._lock:
            outer = self._depth == 0
            savepoint = f"sp{self._depth}"
            try:
                self._conn.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {savepoint}")
            except sqlite3.OperationalError as err:
                raise _busy(err) from err
            self._depth += 1
            try:
                yield
            except BaseException:
                if not self._conn.in_transaction:
                    pass  # SQLite already rolled the whole transaction back (e.g. disk full)
                elif outer:
                    self._conn.execute("ROLLBACK")
                else:
                    self._conn.execute(f"ROLLBACK TO {savepoint}")
                    self._conn.execute(f"RELEASE {savepoint}")
                raise
            else:
                self._conn.execute("COMMIT" if outer else f"RELEASE {savepoint}")
            finally:
                self._depth -= 1

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Several SELECTs that see one consistent state, even while another process writes."""
        with self._lock:
            if self._depth:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------

    def add_feedback(self, kind: str, messages: list[dict], reply: str, *, correction: str | None = None,
                     reason: str | None = None, model: str = "", adapter: str | None = None,
                     params: dict | None = None, meta: dict | None = None) -> AddResult:
        """Store one approval, correction or flag. A duplicate is not stored: see AddResult."""
        if kind not in FEEDBACK_KINDS:
            raise ChattuneError(f"unknown feedback kind {kind!r}", f"use one of {', '.join(FEEDBACK_KINDS)}")
        messages = check_messages(messages)
        if not isinstance(reply, str):
            raise ChattuneError(f"reply must be a string, got {type(reply).__name__}")
        if kind == "approved":
            _text(reply, "the approved reply")
        if kind == "corrected":
            correction = self._check_correction(correction, reply)
        elif correction is not None:
            raise ChattuneError(f"a {kind} record has no correction", "use kind 'corrected'")
        answer = correction if kind == "corrected" else reply
        rejected = reply if kind == "corrected" else None
        return self._insert(kind, messages, reply, correction, reason, model, adapter, params or {}, meta or {},
                            _dedupe_key(kind, messages, answer, rejected))

    def add_preference(self, messages: list[dict], chosen: str, rejected: str, *, model: str = "",
                       chosen_by: str = "", rejected_by: str = "", blind: bool = False,
                       meta: dict | None = None) -> AddResult:
        """Store an A/B vote: `chosen` beat `rejected` for the same context."""
        messages = check_messages(messages)
        _text(chosen, "the chosen reply")
        _text(rejected, "the rejected reply")
        if normalise_text(chosen) == normalise_text(rejected):
            raise ChattuneError("both replies are the same, so there is no preference to learn",
                                "vote when the replies differ")
        meta = {**(meta or {}), "chosen_by": chosen_by, "rejected_by": rejected_by, "blind": bool(blind)}
        return self._insert("preference", messages, rejected, chosen, None, model, None, {}, meta,
                            _dedupe_key("preference", messages, chosen, rejected))

    def _insert(self, kind, messages, reply, correction, reason, model, adapter, params, meta, dedupe) -> AddResult:
        key = split_key(messages[-1]["content"])
        now = _now()
        with self.transaction():
            # A new record is training data, unless the user holds this very question out as a test.
            pinned = self._conn.execute("SELECT 1 FROM records WHERE split_key = ? AND split = 'test' AND"
                                        " split_pinned = 1 LIMIT 1", (key,)).fetchone()
            split = "test" if pinned else "train"
            # Looked up first (the write lock is held) rather than ON CONFLICT, which would burn an id.
            existing = self._conn.execute("SELECT id FROM records WHERE dedupe_key = ?", (dedupe,)).fetchone()
            if existing:
                return AddResult(existing[0], True)
            cursor = self._conn.execute(
                "INSERT INTO records (kind, messages, reply, correction, reason, model, adapter, params, meta,"
                " split, split_key, dedupe_key, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, _dumps(messages), reply, correction, reason, model or "", adapter, _dumps(params),
                 _dumps(meta), split, key, dedupe, now, now))
            return AddResult(cursor.lastrowid, False)

    def set_correction(self, record_id: int, text: str) -> None:
        """Write the right answer: a flagged or approved record becomes corrected."""
        with self.transaction():
            record = self.get(record_id)
            if record.kind == "preference":
                raise ChattuneError(f"record {record_id} is an A/B vote; its replies cannot be edited",
                                    "delete it and vote again")
            text = self._check_correction(text, record.reply)
            dedupe = _dedupe_key("corrected", record.messages, text, record.reply)
            try:
                self._conn.execute("UPDATE records SET kind = 'corrected', correction = ?, dedupe_key = ?,"
                                   " updated_at = ? WHERE id = ?", (text, dedupe, _now(), record_id))
            except sqlite3.IntegrityError:
                other = self._conn.execute("SELECT id FROM records WHERE dedupe_key = ?", (dedupe,)).fetchone()
                raise ChattuneError(f"record {other[0]} already holds this prompt with this correction",
                                    f"delete record {record_id} instead") from None

    def set_split(self, record_id: int, split: str) -> None:
        """Pin a record to a split; it stays there whatever the set does later."""
        check_split(split)
        with self.transaction():
            cursor = self._conn.execute("UPDATE records SET split = ?, split_pinned = 1, updated_at = ? WHERE id = ?",
                                        (split, _now(), record_id))
            if cursor.rowcount == 0:
                raise _missing(record_id)

    def delete(self, record_id: int) -> None:
        with self.transaction():
            if self._conn.execute("DELETE FROM records WHERE id = ?", (record_id,)).rowcount == 0:
                raise _missing(record_id)

    @staticmethod
    def _check_correction(correction, reply: str) -> str:
        correction = _text(correction, "the correction")
        if correction == reply:
            raise ChattuneError("the correction is the same as the reply", "approve the reply instead")
        return correction

    # -- reading --------------------------------------------------------------------------------

    def get(self, record_id: int) -> Record:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM records WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise _missing(record_id)
        return _record(row)

    def records(self, kind: str | None = None, split: str | None = None, limit: int | None = None,
                offset: int = 0) -> list[Record]:
        """Newest first."""
        where, args = _filters(kind, split)
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM records{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                                      (*args, -1 if limit is None else limit, offset)).fetchall()
        return [_record(row) for row in rows]

    def stats(self) -> dict:
        """Counts by kind and split; `usable` = records that are training data (not flagged).
        Also `sft` and `dpo`: {split: examples in that view}, and `kind_splits`: {kind: {split: n}}."""
        with self._lock:
            rows = self._conn.execute("SELECT kind, split, COUNT(*) FROM records GROUP BY kind, split").fetchall()
        stats = {"total": 0, "kinds": dict.fromkeys(KINDS, 0), "splits": dict.fromkeys(SPLITS, 0), "usable": 0,
                 "sft": dict.fromkeys(SPLITS, 0), "dpo": dict.fromkeys(SPLITS, 0),
                 "kind_splits": {kind: dict.fromkeys(SPLITS, 0) for kind in KINDS}}
        for kind, split, n in rows:
            stats["total"] += n
            stats["kinds"][kind] += n
            stats["splits"][split] += n
            stats["kind_splits"][kind][split] += n
            stats["usable"] += 0 if kind == "flagged" else n
            stats["sft"][split] += n if kind in SFT_KINDS else 0
            stats["dpo"][split] += n if kind in DPO_KINDS else 0
        return stats

    def sft_examples(self, split: str | None = "train") -> list[dict]:
        """Approved and corrected records as {"messages": [..., assistant answer]}, oldest first.
        `split=None` gives every split."""
        return [{"messages": r.messages + [{"role": "assistant", "content": r.answer}]}
                for r in self._view(SFT_KINDS, split)]

    def dpo_pairs(self, split: str | None = "train") -> list[dict]:
        """Corrected and preference records as {"prompt": messages, "chosen": str, "rejected": str}."""
        return [{"prompt": r.messages, "chosen": r.answer, "rejected": r.rejected}
                for r in self._view(DPO_KINDS, split)]

    def sft_dataset(self, split: str | None = "train"):
        return to_dataset(self.sft_examples(split))

    def dpo_dataset(self, split: str | None = "train"):
        return to_dataset(self.dpo_pairs(split))

    def _view(self, kinds: tuple[str, ...], split: str | None) -> list[Record]:
        args: list = list(kinds)
        where = f"kind IN ({', '.join('?' * len(kinds))})"
        if split is not None:
            where += " AND split = ?"
            args.append(check_split(split))
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM records WHERE {where} ORDER BY id", args).fetchall()
        return [_record(row) for row in rows]

    def snapshot(self, dest_dir: str | os.PathLike) -> Snapshot:
        """Freeze the training views into dest_dir: {sft,dpo}-{train,val,test}.jsonl and manifest.json.

        The views are read in one transaction (a consistent state while the TUI keeps writing) and
        the folder appears whole or not at all (built beside it, then renamed)."""
        dest = Path(dest_dir)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise ChattuneError(f"{dest} already exists and is not an empty folder", "snapshot into a new folder")
        with self._reading():
            views = {f"{view}-{split}": rows for split in SPLITS
                     for view, rows in (("sft", self.sft_examples(split)), ("dpo", self.dpo_pairs(split)))}
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            digest = hashlib.sha256()
            counts = {}
            for name in sorted(views):
                data = "".join(_dumps(row) + "\n" for row in views[name]).encode("utf-8")
                digest.update(f"{name}\0{len(data)}\0".encode() + data)
                _write_synced(tmp / f"{name}.jsonl", data)
                counts[name] = len(views[name])
            manifest = {"hash": digest.hexdigest(), "counts": counts, "created_at": _now(),
                        "schema_version": SCHEMA_VERSION}
            _write_synced(tmp / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
            os.replace(tmp, dest)  # replaces an empty dest folder too
        except BaseException:
            for child in tmp.iterdir():
                child.unlink()
            tmp.rmdir()
            raise
        return Snapshot(dest, manifest["hash"], counts)


_COLUMNS = ("id, kind, messages, reply, correction, reason, model, adapter, params, split, split_pinned, meta,"
            " created_at, updated_at")


def _record(row) -> Record:
    (rid, kind, messages, reply, correction, reason, model, adapter, params, split, pinned, meta,
     created, updated) = row
    return Record(rid, kind, json.loads(messages), reply, correction, reason, model, adapter, json.loads(params),
                  split, bool(pinned), json.loads(meta), created, updated)


def _filters(kind: str | None, split: str | None) -> tuple[str, list]:
    clauses, args = [], []
    if kind is not None:
        if kind not in KINDS:
            raise ChattuneError(f"unknown kind {kind!r}", f"use one of {', '.join(KINDS)}")
        clauses.append("kind = ?")
        args.append(kind)
    if split is not None:
        clauses.append("split = ?")
        args.append(check_split(split))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _missing(record_id: int) -> ChattuneError:
    return ChattuneError(f"no feedback record with id {record_id}", "see `chattune data list`")


def _busy(err: sqlite3.OperationalError) -> StoreError:
    return StoreError(f"the feedback store is busy ({err})",
                      "another chattune process is writing to it; try again in a moment")


class StoreError(ChattuneError):
    """The feedback store could not read or write (a full disk, a locked or broken file): worth a retry."""


class _Guard:
    """The store's lock, which also turns what SQLite and the file system raise into StoreError, so
    callers (the app, the CLI) catch one error type with a message a user can act on."""

    def __init__(self, path: Path):
        self._lock = threading.RLock()
        self._path = path

    def __enter__(self) -> _Guard:
        self._lock.acquire()
        return self

    def __exit__(self, kind, err, _tb) -> None:
        self._lock.release()
        if isinstance(err, (sqlite3.Error, OSError)):
            raise StoreError(f"the feedback store {self._path} failed: {err}",
                             "check that the disk has room and the file is writable, then try again") from err

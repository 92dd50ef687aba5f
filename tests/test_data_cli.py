"""`chattune data` through the real command line, in a child process. The command runs in the
workspace's parent folder (the test's tmp_path) unless a test says otherwise: files named on the
command line are relative to it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from engine.store import FeedbackStore


def chattune(workspace: Path, *args: str, env: dict | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI with no terminal on stdin, as a script or CI would."""
    return subprocess.run([sys.executable, "-m", "tui.cli", "--workspace", str(workspace), "data", *args],
                          cwd=cwd or workspace.parent, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "160", **(env or {})}, timeout=600)


def ok(workspace: Path, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
    result = chattune(workspace, *args, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(workspace: Path, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
    result = chattune(workspace, *args, env=env, cwd=cwd)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("chattune: error: ") and "Traceback" not in result.stderr
    return result.stderr


def openai_line(i: int) -> dict:
    messages = [{"role": "system", "content": f"You are assistant #{i % 3}."}]
    if i % 4 == 0:
        messages += [{"role": "user", "content": f"Earlier question {i}"},
                     {"role": "assistant", "content": f"Earlier answer {i}"}]
    messages += [{"role": "user", "content": f"Question {i}: what is {i} squared? ✓"},
                 {"role": "assistant", "content": f"{i} squared is {i * i}.\nDone."}]
    return {"messages": messages}


def test_import_1000_then_stats_then_export_sharegpt_round_trips(tmp_path):
    ws, ws2 = tmp_path / "ws", tmp_path / "ws2"
    source = tmp_path / "chats.jsonl"
    lines = [openai_line(i) for i in range(1000)]
    source.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines + lines[:7]))

    started = time.perf_counter()
    out = ok(ws, "import", str(source))
    import_s = time.perf_counter() - started
    assert "imported 1000 records" in out and "(openai)" in out and "skipped 7 duplicates" in out

    stats = ok(ws, "stats")
    assert "1000 records, 1000 usable for training" in stats and "approved" in stats
    assert "the next SFT run learns all 1000" in stats

    started = time.perf_counter()
    out = ok(ws, "export", "chats.sharegpt.jsonl", "--format", "sharegpt")
    export_s = time.perf_counter() - started
    exported = tmp_path / "chats.sharegpt.jsonl"
    assert f"wrote 1000 sft examples (sharegpt) to {exported}" in out
    print(f"\n1000-record CLI import {import_s:.2f} s, sharegpt export {export_s:.2f} s (process start included)")

    assert "imported 1000 records" in ok(ws2, "import", exported.name)
    ok(ws2, "export", "back.jsonl", "--format", "openai")
    assert [json.loads(x) for x in (tmp_path / "back.jsonl").read_text().splitlines()] == lines
    with FeedbackStore(ws / "feedback.db") as a, FeedbackStore(ws2 / "feedback.db") as b:
        assert [(r.kind, r.messages, r.reply, r.split) for r in a.records()] == \
               [(r.kind, r.messages, r.reply, r.split) for r in b.records()]
        assert a.stats()["splits"] == {"train": 1000, "test": 0}  # every imported example is learned


def test_list_show_split_edit_rm(tmp_path):
    ws = tmp_path / "ws"
    with FeedbackStore(ws / "feedback.db") as store:
        flagged = store.add_feedback("flagged", [{"role": "user", "content": "Capital of [b]France[/b]?"}],
                                     "Berlin.", reason="wrong city", model="smollm2").id
        approved = store.add_feedback("approved", [{"role": "user", "content": "2+2?"}], "4").id
        store.add_preference([{"role": "user", "content": "Joke?"}], "A pun.", "No.", chosen_by="adapter r1",
                             rejected_by="base")

    listing = ok(ws, "list")
    assert "Capital of [b]France[/b]?" in listing and "(flagged) wrong city" in listing
    assert "flagged" in ok(ws, "list", "--kind", "flagged") and "A pun." not in ok(ws, "list", "--kind", "flagged")
    shown = ok(ws, "show", str(flagged))
    assert "Berlin." in shown and "wrong city" in shown and "smollm2" in shown
    assert "chosen (adapter r1)" in ok(ws, "show", "3")

    assert f"record {approved} is pinned to test" in ok(ws, "split", str(approved), "test")
    assert "test*" in ok(ws, "list")
    narrow = ok(ws, "list", env={"COLUMNS": "80"})  # ids, kinds and splits survive a plain terminal
    assert all(re.search(rf"│ +{n} │ ", narrow) for n in (1, 2, 3)) and "preference" in narrow and "test*" in narrow

    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'w').write('Paris.\\n')\n")
    env = {"EDITOR": f"{shlex.quote(sys.executable)} {shlex.quote(str(editor))}", "VISUAL": ""}
    assert f"record {flagged} is now corrected" in ok(ws, "edit", str(flagged), env=env)
    assert "unchanged" in ok(ws, "edit", str(flagged), env=env)
    assert "A/B vote" in fails(ws, "edit", "3", env=env)
    assert "set $EDITOR" in fails(ws, "edit", str(flagged), env={"EDITOR": "", "VISUAL": ""})
    with FeedbackStore(ws / "feedback.db") as store:
        record = store.get(flagged)
        assert (record.kind, record.correction, record.reply) == ("corrected", "Paris.", "Berlin.")

    assert "pass --yes" in fails(ws, "rm", str(approved))  # no terminal: refuses instead of hanging
    assert "deleted 2 records" in ok(ws, "rm", str(approved), "3", "--yes")
    assert "no feedback record with id 3" in fails(ws, "show", "3")
    assert "1 records, 1 usable" in ok(ws)  # bare `data` shows the stats


def test_errors_are_one_line_and_change_nothing(tmp_path):
    ws = tmp_path / "ws"
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(openai_line(1)) + "\n")
    ok(ws, "import", str(good))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(openai_line(2)) + "\n" + '{"messages": [{"role": "user", "content": 5}]}\n')
    error = fails(ws, "import", str(bad))
    assert f"{bad} line 2: messages[0].content must be a string" in error
    assert "1 records" in ok(ws, "stats")

    assert "cannot read" in fails(ws, "import", str(tmp_path / "missing.jsonl"))
    assert "expected keys 'instruction', 'output'" in fails(ws, "import", str(good), "--format", "alpaca")

    assert "nothing to export" in fails(ws, "export", "x.jsonl", "--format", "dpo")
    assert not (tmp_path / "x.jsonl").exists()


def test_files_are_relative_to_the_current_folder_and_kept_unless_forced(tmp_path):
    ws, here = tmp_path / "ws", tmp_path / "here"
    here.mkdir()
    (here / "chats.jsonl").write_text(json.dumps(openai_line(1)) + "\n")
    assert "imported 1 records" in ok(ws, "import", "chats.jsonl", cwd=here)

    assert f"(openai) to {here / 'out.jsonl'}" in ok(ws, "export", "out.jsonl", cwd=here)
    ok(ws, "export", "../up.jsonl", "--format", "alpaca", cwd=here)  # anywhere the user can write
    assert json.loads((tmp_path / "up.jsonl").read_text())["output"] == "1 squared is 1.\nDone."

    (here / "out.jsonl").write_text("mine\n")
    error = fails(ws, "export", "out.jsonl", "--format", "openai", cwd=here)
    assert "out.jsonl already exists" in error and "--force" in error and error.count("\n") == 1
    assert (here / "out.jsonl").read_text() == "mine\n"
    ok(ws, "export", "out.jsonl", "--format", "openai", "--force", cwd=here)
    assert json.loads((here / "out.jsonl").read_text()) == openai_line(1)
    assert "is a folder" in fails(ws, "export", ".", "--format", "openai", cwd=here)
    assert not (ws / "exports").exists()  # nothing was written into the workspace


def test_help_documents_the_export_path_rule(tmp_path):
    shown = " ".join(ok(tmp_path / "ws", "export", "--help").split())
    assert "relative to the current folder" in shown and "--force" in shown

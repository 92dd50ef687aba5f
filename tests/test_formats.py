"""Import/export formats: round trips, detection, atomic exports, and malformed files refused whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import ChattuneError
from engine.formats import FORMATS, export_file, import_file
from engine.store import FeedbackStore

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def fill(store: FeedbackStore) -> None:
    """Every kind, multi-turn, unicode, markup-looking and multi-line text, enough for all splits."""
    for i in range(24):
        store.add_feedback("approved", [SYSTEM, user(f"Question {i}: what is {i}×2? [b]bold[/b]")],
                           f"It is {i * 2}.\n\nÉtonnant ✓")
    store.add_feedback("approved", [user("Hi"), assistant("Hello!"), user("And now?")], "Now we talk.")
    store.add_feedback("corrected", [SYSTEM, user("Capital of France?")], "Berlin.", correction="Paris.")
    store.add_feedback("corrected", [user("2+2?"), assistant("5"), user("Sure?")], "Yes.", correction="No: 4.")
    store.add_feedback("flagged", [user("Tell me a secret")], "No.", reason="unhelpful")
    store.add_preference([SYSTEM, user("A joke?")], "A pun.", "No jokes.", chosen_by="adapter r1", rejected_by="base")


def content(store: FeedbackStore) -> list[tuple]:
    return [(r.kind, r.messages, r.reply, r.correction, r.split) for r in store.records()][::-1]


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.db") as opened:
        yield opened


def new_store(tmp_path: Path, name: str) -> FeedbackStore:
    return FeedbackStore(tmp_path / f"{name}.db")


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_round_trips(store, tmp_path, fmt):
    fill(store)
    first = export_file(store, tmp_path / f"first.{fmt}.jsonl", fmt)
    view = "dpo" if fmt == "dpo" else "sft"
    assert first.count == (3 if fmt == "dpo" else 27) and first.view == view

    with new_store(tmp_path, "copy") as copy:
        result = import_file(copy, first.path)  # format detected
        assert (result.format, result.added, result.duplicates) == (fmt, first.count, 0)
        assert copy.records()[0].meta == {"source": first.path.name}
        again = export_file(copy, tmp_path / f"again.{fmt}.jsonl", fmt)
        assert again.path.read_bytes() == first.path.read_bytes()

        # the records come back the same, in the kind the format maps them to
        kinds = ("corrected", "preference") if fmt == "dpo" else ("approved", "corrected")
        original = [(r.messages, r.answer, r.rejected if fmt == "dpo" else None, r.split)
                    for r in store.records()[::-1] if r.kind in kinds]
        assert [(r.messages, r.answer, r.rejected if fmt == "dpo" else None, r.split)
                for r in copy.records()[::-1]] == original
        assert {r.kind for r in copy.records()} == {"corrected" if fmt == "dpo" else "approved"}
        # and from a store of that kind alone, the records are identical, splits included
        with new_store(tmp_path, "copy2") as copy2:
            import_file(copy2, again.path)
            assert content(copy2) == content(copy)


def test_split_and_view_select_what_is_exported(store, tmp_path):
    fill(store)
    for split in ("train", "test"):
        if store.stats()["sft"][split]:
            out = export_file(store, tmp_path / f"{split}.jsonl", "openai", split=split)
            rows = [json.loads(line) for line in out.path.read_text().splitlines()]
            assert rows == store.sft_examples(split)
    chosen = export_file(store, tmp_path / "chosen.jsonl", "sharegpt", view="dpo")
    assert chosen.count == 3
    last_turns = [json.loads(line)["conversations"][-1] for line in chosen.path.read_text().splitlines()]
    assert last_turns == [{"from": "gpt", "value": v} for v in ("Paris.", "No: 4.", "A pun.")]
    with pytest.raises(ChattuneError, match="cannot be written as DPO"):
        export_file(store, tmp_path / "x.jsonl", "dpo", view="sft")
    with pytest.raises(ChattuneError, match="unknown format"):
        export_file(store, tmp_path / "x.jsonl", "csv")


def test_formats_written_as_others_write_them(tmp_path, store):
    store.add_feedback("approved", [SYSTEM, user("Hi"), assistant("Yo"), user("Name?")], "Bot.")
    store.add_feedback("corrected", [user("2+2?")], "5", correction="4")
    rows = {fmt: json.loads(export_file(store, tmp_path / f"{fmt}.jsonl", fmt).path.read_text().splitlines()[0])
            for fmt in FORMATS}
    assert rows["openai"] == {"messages": [SYSTEM, user("Hi"), assistant("Yo"), user("Name?"), assistant("Bot.")]}
    assert rows["sharegpt"]["conversations"][0] == {"from": "system", "value": SYSTEM["content"]}
    assert [t["from"] for t in rows["sharegpt"]["conversations"]] == ["system", "human", "gpt", "human", "gpt"]
    assert rows["alpaca"] == {"instruction": "Name?", "input": "", "output": "Bot.", "system": SYSTEM["content"],
                              "history": [["Hi", "Yo"]]}
    assert rows["dpo"] == {"prompt": [user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}


def test_common_variants_import(store, tmp_path):
    alpaca = tmp_path / "alpaca_data.json"  # the original Alpaca release is one JSON array
    alpaca.write_text(json.dumps([{"instruction": "Translate", "input": "chat", "output": "cat"},
                                  {"instruction": "Say hi", "output": "hi"}], indent=2))
    assert import_file(store, alpaca).added == 2
    assert [r.prompt for r in store.records()] == ["Say hi", "Translate\nchat"]

    sharegpt = tmp_path / "sharegpt.jsonl"
    sharegpt.write_text(json.dumps({"system": "Be brief.", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}) + "\n\n")
    import_file(store, sharegpt)
    assert store.records()[0].messages == [{"role": "system", "content": "Be brief."}, user("Hi")]

    dpo = tmp_path / "dpo.jsonl"
    dpo.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    import_file(store, dpo)
    record = store.records()[0]
    assert (record.kind, record.messages, record.correction, record.reply) == ("corrected", [user("2+2?")], "4", "5")


def test_duplicates_are_counted_not_stored(store, tmp_path):
    path = tmp_path / "dupes.jsonl"
    line = {"messages": [user("Hello there"), assistant("Hi!")]}
    twin = {"messages": [user("  hello THERE "), assistant("hi!")]}
    path.write_text("\n".join(json.dumps(x) for x in (line, twin, line)) + "\n")
    result = import_file(store, path)
    assert (result.added, result.duplicates) == (1, 2)
    assert import_file(store, path).duplicates == 3


def _line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


GOOD = _line({"messages": [user("fine"), assistant("yes")]})

MALFORMED = {
    "truncated line": (GOOD + b'{"messages": [{"role": "user", "content": "cut sh', 2, "the file ends inside"),
    "not JSON": (GOOD + b"messages: hello\n", 2, "invalid JSON"),
    "wrong keys": (GOOD + _line({"msgs": []}), 2, "expected keys 'messages'"),
    "wrong keys for the format": (GOOD + _line({"instruction": "x", "output": "y"}), 2,
                                  "expected keys 'messages'"),
    "not an object": (GOOD + b"[1, 2]\n", 2, "expected a JSON object"),
    "content not a string": (GOOD + _line({"messages": [user("q"), {"role": "assistant", "content": 7}]}), 2,
                             "messages\\[1\\].content must be a string, got int"),
    "messages not a list": (GOOD + _line({"messages": "hi"}), 2, "'messages' must be a list"),
    "no answer turn": (GOOD + _line({"messages": [user("q")]}), 2, "must end with an assistant turn"),
    "bad role": (GOOD + _line({"messages": [{"role": "tool", "content": "x"}, assistant("y")]}), 2,
                 "role must be one of"),
    "empty answer": (GOOD + _line({"messages": [user("q"), assistant(" ")]}), 2, "reply is empty"),
    "not UTF-8": (GOOD + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n', 2, "not UTF-8"),
    "empty file": (b"", None, "is empty"),
    "only blank lines": (b"\n  \n\n", None, "is empty"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_file_imports_nothing(store, tmp_path, case):
    data, line, problem = MALFORMED[case]
    store.add_feedback("approved", [user("already here")], "kept")
    before = content(store)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD * 3 + data if line else data)  # good lines first: they must not stay
    with pytest.raises(ChattuneError, match=problem) as err:
        import_file(store, path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    if line:
        assert f"line {line + 3}:" in message
    assert content(store) == before


def test_an_unknown_format_asks_for_format(store, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_bytes(_line({"question": "x", "answer": "y"}))
    with pytest.raises(ChattuneError, match="line 1: cannot tell the format .* pass --format"):
        import_file(store, path)


def test_wrong_types_in_other_formats_name_the_line(store, tmp_path):
    cases = [
        (_line({"conversations": [{"from": "robot", "value": "x"}]}), "from must be one of"),
        (_line({"conversations": [{"from": "human"}]}), "expected keys 'from', 'value'"),
        (_line({"instruction": ["x"], "output": "y"}), "'instruction' must be a string"),
        (_line({"instruction": "x", "output": "y", "history": [["only one"]]}), "history\\[0\\]"),
        (_line({"prompt": 3, "chosen": "a", "rejected": "b"}), "'prompt' must be a string or a list"),
        (_line({"prompt": "q", "chosen": [assistant("a"), assistant("b")], "rejected": "b"}), "one assistant"),
        (_line({"prompt": "q", "chosen": "same", "rejected": "same"}), "same as the reply"),
    ]
    for i, (data, problem) in enumerate(cases):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_bytes(data)
        with pytest.raises(ChattuneError, match=problem) as err:
            import_file(store, path)
        assert f"{path} line 1:" in str(err.value)
    assert store.stats()["total"] == 0


def test_a_problem_inside_a_nested_value_names_its_place(store, tmp_path):
    cases = [
        (_line({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}),
         "prompt[0]: expected keys 'role', 'content' (chat message), found 'role'"),
        (_line({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}),
         "chosen[0].role must be one of 'assistant', got 'user'"),
        (_line({"instruction": "x", "output": "y", "history": [["a", 3]]}), "history[0][1] must be a string, got int"),
        (_line({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": None}]}),
         "conversations[1].value must be a string, got NoneType"),
    ]
    for i, (data, problem) in enumerate(cases):
        path = tmp_path / f"nested{i}.jsonl"
        path.write_bytes(data)
        with pytest.raises(ChattuneError) as err:
            import_file(store, path)
        assert f"{path} line 1: {problem}" in str(err.value)
    assert store.stats()["total"] == 0


def test_a_50_mb_line_is_refused_without_parsing_it(store, tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(GOOD)
        f.write(b'{"messages": [{"role": "user", "content": "' + b"a" * (50 << 20) + b'"}]}\n')
    with pytest.raises(ChattuneError, match=r"huge.jsonl line 2: line is longer than 8 MiB"):
        import_file(store, path)
    assert store.stats()["total"] == 0


def test_a_broken_json_array_names_the_line(store, tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": 4}\n]\n')
    with pytest.raises(ChattuneError, match=r"data.json line 3: 'output' must be a string"):
        import_file(store, path)
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "out')
    with pytest.raises(ChattuneError, match=r"data.json line 3: invalid JSON"):
        import_file(store, path)
    assert store.stats()["total"] == 0


def test_export_replaces_the_file_whole(store, tmp_path):
    fill(store)
    target = tmp_path / "out" / "data.jsonl"
    export_file(store, target, "openai")
    old = target.read_bytes()
    store.add_feedback("approved", [user("Hi"), assistant("Yo"), user("Hi"), user("again")], "two user turns")
    with pytest.raises(ChattuneError, match="cannot be written as Alpaca"):
        export_file(store, target, "alpaca")
    assert target.read_bytes() == old  # a failed export leaves the old file as it was
    export_file(store, target, "openai")
    assert target.read_bytes() != old
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.jsonl"]  # no temp files left
    assert target.stat().st_mode & 0o777 == 0o644


def test_nothing_to_export_is_an_error(store, tmp_path):
    store.add_feedback("flagged", [user("q")], "bad")
    with pytest.raises(ChattuneError, match="nothing to export"):
        export_file(store, tmp_path / "x.jsonl", "openai")
    assert not (tmp_path / "x.jsonl").exists()

"""Import and export of training data: OpenAI chat JSONL, ShareGPT, Alpaca and DPO JSONL.

What an imported line becomes:
- openai / sharegpt / alpaca: an `approved` record whose reply is the final assistant turn (the
  file says the answer is good; there is no wrong reply to remember).
- dpo: a `corrected` record: correction = chosen, reply = rejected.

What an export holds (records are written oldest first):
- openai / sharegpt / alpaca, view `sft` (default): approved and corrected records, the answer
  being the approved reply or the correction. View `dpo`: corrected and preference records with
  the chosen reply as the answer.
- dpo (view `dpo` only): TRL's conversational preference format,
  {"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}.

So export then import into an empty store gives the same records (messages, answer, split) for
every record the format can hold: SFT formats bring corrected records back as approved with the
correction as the reply, DPO brings preference votes back as corrected. Exporting that store again
gives the same file byte for byte.

Files are read one line at a time with a length cap (a 50 MB line is refused, never parsed); a JSON
array file (the usual Alpaca/ShareGPT download) is accepted as well. An import is one transaction:
any bad line aborts it with the file, the line and the problem, and the store is left unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationError

from engine.errors import ChattuneError
from engine.files import write_atomic
from engine.splits import check_split
from engine.store import ChatMessage, FeedbackStore, check_messages
from engine.validation import InputObject, one_line

FORMATS = ("openai", "sharegpt", "alpaca", "dpo")
VIEWS = ("sft", "dpo")
MAX_LINE_BYTES = 8 << 20  # a chat example larger than this is a broken file, not data
MAX_ARRAY_FILE_BYTES = 512 << 20  # a JSON array must be read whole; JSONL has no such limit

_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                   "assistant": "assistant"}
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


@dataclass(frozen=True)
class Example:
    """One training example, independent of file format."""

    messages: list[dict]  # context, ends with a user turn
    answer: str
    rejected: str | None = None  # set for DPO pairs


@dataclass(frozen=True)
class ImportResult:
    path: Path
    format: str
    added: int
    duplicates: int  # lines equal (after case/whitespace folding) to a stored record, skipped


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    view: str
    count: int


# -- parsing one JSON object per format -----------------------------------------------------------


class OpenAIRow(InputObject):
    model_config = ConfigDict(title="OpenAI chat format")

    messages: list[ChatMessage]


class ShareGPTTurn(InputObject):
    model_config = ConfigDict(title="ShareGPT turn")

    speaker: Literal["system", "human", "user", "gpt", "assistant"] = Field(alias="from")
    value: str


class ShareGPTRow(InputObject):
    model_config = ConfigDict(title="ShareGPT format")

    conversations: list[ShareGPTTurn]
    system: str | None = None


class AlpacaRow(InputObject):
    model_config = ConfigDict(title="Alpaca format")

    instruction: str
    output: str
    input: str = ""
    system: str | None = None
    history: list[tuple[str, str]] | None = Field(None, description="a list of [instruction, answer] pairs")


class AssistantTurn(InputObject):
    model_config = ConfigDict(title="assistant message")

    role: Literal["assistant"]
    content: str


# A DPO answer: a string, or TRL's conversational [{"role": "assistant", "content": ...}].
DPOAnswer = Annotated[str | Annotated[list[AssistantTurn], Field(min_length=1, max_length=1)],
                      Field(description="a string or a list holding one assistant message")]


class DPORow(InputObject):
    model_config = ConfigDict(title="DPO format")

    prompt: str | list[ChatMessage] = Field(description="a string or a list of messages")
    chosen: DPOAnswer
    rejected: DPOAnswer


def _parse(model: type[InputObject], obj: dict) -> InputObject:
    try:
        return model.model_validate(obj)
    except ValidationError as err:
        raise ChattuneError(one_line(err, obj, model=model)) from None


def _split_answer(messages: list[dict], what: str) -> Example:
    if not messages or messages[-1]["role"] != "assistant":
        raise ChattuneError(f"{what} must end with an assistant turn (the answer)")
    return Example(check_messages(messages[:-1], what), messages[-1]["content"])


def parse_openai(obj: dict) -> Example:
    row = _parse(OpenAIRow, obj)
    return _split_answer([m.model_dump() for m in row.messages], "messages")


def parse_sharegpt(obj: dict) -> Example:
    row = _parse(ShareGPTRow, obj)
    system = [] if row.system is None else [{"role": "system", "content": row.system}]
    turns = [{"role": _SHAREGPT_ROLES[turn.speaker], "content": turn.value} for turn in row.conversations]
    return _split_answer(system + turns, "conversations")


def parse_alpaca(obj: dict) -> Example:
    row = _parse(AlpacaRow, obj)
    messages = [{"role": "system", "content": row.system}] if row.system else []
    for instruction, answer in row.history or []:
        messages += [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": f"{row.instruction}\n{row.input}" if row.input else row.instruction})
    return Example(check_messages(messages), row.output)


def parse_dpo(obj: dict) -> Example:
    row = _parse(DPORow, obj)
    messages = ([{"role": "user", "content": row.prompt}] if isinstance(row.prompt, str)
                else check_messages([m.model_dump() for m in row.prompt], "prompt"))
    return Example(messages, _dpo_text(row.chosen), _dpo_text(row.rejected))


def _dpo_text(side: str | list[AssistantTurn]) -> str:
    return side if isinstance(side, str) else side[0].content


_PARSERS: dict[str, Callable[[dict], Example]] = {
    "openai": parse_openai, "sharegpt": parse_sharegpt, "alpaca": parse_alpaca, "dpo": parse_dpo}


def detect_format(obj: dict) -> str | None:
    if "messages" in obj:
        return "openai"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if {"prompt", "chosen", "rejected"} <= obj.keys():
        return "dpo"
    return None


# -- writing one example per format ---------------------------------------------------------------


def to_openai(example: Example) -> dict:
    return {"messages": example.messages + [{"role": "assistant", "content": example.answer}]}


def to_sharegpt(example: Example) -> dict:
    turns = example.messages + [{"role": "assistant", "content": example.answer}]
    return {"conversations": [{"from": _SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in turns]}


def to_alpaca(example: Example) -> dict:
    messages = list(example.messages)
    row = {"instruction": messages.pop()["content"], "input": "", "output": example.answer}
    if messages and messages[0]["role"] == "system":
        row["system"] = messages.pop(0)["content"]
    roles = [m["role"] for m in messages]
    if roles != ["user", "assistant"] * (len(messages) // 2):
        raise ChattuneError("a conversation whose turns do not alternate user/assistant cannot be written as Alpaca",
                            "export it with --format openai or sharegpt")
    if messages:
        row["history"] = [[messages[i]["content"], messages[i + 1]["content"]] for i in range(0, len(messages), 2)]
    return row


def to_dpo(example: Example) -> dict:
    return {"prompt": example.messages, "chosen": [{"role": "assistant", "content": example.answer}],
            "rejected": [{"role": "assistant", "content": example.rejected}]}


_WRITERS: dict[str, Callable[[Example], dict]] = {
    "openai": to_openai, "sharegpt": to_sharegpt, "alpaca": to_alpaca, "dpo": to_dpo}


# -- reading files --------------------------------------------------------------------------------


def _read_objects(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON value) for a JSONL file, or for each element of a JSON array file."""
    try:
        f = open(path, "rb")
    except OSError as err:
        raise ChattuneError(f"cannot read {path}: {err.strerror}", "check the file name") from err
    with f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
        f.seek(0)
        if not head:
            raise ChattuneError(f"{path} is empty", "an import file holds one JSON object per line")
        if head.startswith(b"["):
            yield from _read_array(path, f)
            return
        number = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise _line_error(path, number, f"line is longer than {MAX_LINE_BYTES >> 20} MiB")
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _line_error(path, number, f"not UTF-8 text (bad byte at column {err.start + 1})") from None
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as err:
                cut = "" if raw.endswith(b"\n") else "; the file ends inside this line (cut short?)"
                raise _line_error(path, number, f"invalid JSON ({err.msg}, column {err.colno}){cut}") from None


def _read_array(path: Path, f) -> Iterator[tuple[int, object]]:
    size = os.fstat(f.fileno()).st_size
    if size > MAX_ARRAY_FILE_BYTES:
        raise ChattuneError(f"{path} is a {size >> 20} MiB JSON array, too big to read at once",
                            "convert it to JSONL (one object per line), which has no size limit")
    data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _line_error(path, data.count(b"\n", 0, err.start) + 1, "not UTF-8 text") from None
    decoder = json.JSONDecoder()
    pos, line, counted = text.index("[") + 1, 1, 0

    def skip_space(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        return at

    while True:
        pos = skip_space(pos)
        line += text.count("\n", counted, pos)
        counted = pos
        if pos < len(text) and text[pos] == "]":
            break
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise _line_error(path, err.lineno, f"invalid JSON ({err.msg}, column {err.colno})") from None
        yield line, value
        pos = skip_space(end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            raise _line_error(path, text.count("\n", 0, pos) + 1, "expected ',' or ']' after an array element")
    if skip_space(pos + 1) != len(text):
        raise _line_error(path, text.count("\n", 0, pos) + 1, "unexpected text after the JSON array")


def _line_error(path: Path, line: int, problem: str) -> ChattuneError:
    return ChattuneError(f"{path} line {line}: {problem}", "fix that line and import again; nothing was imported")


# -- import and export ----------------------------------------------------------------------------


def import_file(store: FeedbackStore, path: str | os.PathLike, fmt: str | None = None) -> ImportResult:
    """Add every example in the file, or none: the whole import is one transaction."""
    path = Path(path)
    if fmt is not None:
        _check_format(fmt)
    added = duplicates = 0
    source = {"source": path.name}
    with store.transaction():
        for number, obj in _read_objects(path):
            try:
                if not isinstance(obj, dict):
                    raise ChattuneError(f"expected a JSON object, got {type(obj).__name__}")
                if fmt is None:
                    fmt = detect_format(obj)
                    if fmt is None:
                        raise ChattuneError(f"cannot tell the format from keys {', '.join(map(repr, obj)) or 'none'}"
                                            f"; pass --format ({', '.join(FORMATS)})")
                example = _PARSERS[fmt](obj)
                if example.rejected is None:
                    result = store.add_feedback("approved", example.messages, example.answer, meta=source)
                else:
                    result = store.add_feedback("corrected", example.messages, example.rejected,
                                                correction=example.answer, meta=source)
            except ChattuneError as err:
                raise _line_error(path, number, err.problem) from None
            duplicates += result.duplicate
            added += not result.duplicate
    if fmt is None:
        raise ChattuneError(f"{path} holds no records", "an import file holds one JSON object per line")
    return ImportResult(path, fmt, added, duplicates)


def examples(store: FeedbackStore, view: str, split: str | None = None) -> list[Example]:
    """The store's training view as format-independent examples, oldest first."""
    if view == "sft":
        return [Example(row["messages"][:-1], row["messages"][-1]["content"]) for row in store.sft_examples(split)]
    return [Example(row["prompt"], row["chosen"], row["rejected"]) for row in store.dpo_pairs(split)]


def export_file(store: FeedbackStore, path: str | os.PathLike, fmt: str, split: str | None = None,
                view: str | None = None) -> ExportResult:
    """Write the view in `fmt` to a temporary file beside `path`, then rename it into place."""
    _check_format(fmt)
    if split is not None:
        check_split(split)
    view = view or ("dpo" if fmt == "dpo" else "sft")
    if view not in VIEWS:
        raise ChattuneError(f"unknown view {view!r}", f"use one of {', '.join(VIEWS)}")
    if fmt == "dpo" and view == "sft":
        raise ChattuneError("SFT examples have no rejected reply, so they cannot be written as DPO",
                            "use --view dpo, or another --format")
    rows = examples(store, view, split)
    if not rows:
        which = "approved or corrected" if view == "sft" else "corrected or preference"
        raise ChattuneError(f"nothing to export: no {which} records{f' in split {split}' if split else ''}",
                            "see `chattune data stats`")
    lines = [json.dumps(_WRITERS[fmt](row), ensure_ascii=False) + "\n" for row in rows]
    path = Path(path)
    write_atomic(path, "".join(lines).encode("utf-8"))
    return ExportResult(path, fmt, view, len(rows))


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ChattuneError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")

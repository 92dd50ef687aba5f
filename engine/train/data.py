"""The run's frozen snapshot, shaped the way TRL's trainers take it.

SFT examples become conversational prompt-completion rows: the context (system prompt and earlier
turns) is the prompt and only the final assistant answer is the completion. TRL then puts the loss
on the completion tokens alone (its end-of-turn token included), using the model's own chat
template, so no template needs `{% generation %}` markers, and earlier assistant turns in the
context (unreviewed model output) are never trained on. The shipped stand-in templates end a reply
with EOS before their turn marker: a base model knows its EOS, but not its unused turn tokens.
"""

from __future__ import annotations

from pathlib import Path

from engine.runfolder import read_jsonl, snapshot_file


def sft_rows(snapshot_dir: Path, split: str) -> list[dict]:
    rows = []
    for record in read_jsonl(snapshot_file(snapshot_dir, "sft", split)):
        messages = record["messages"]
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            continue
        rows.append({"prompt": _plain(messages[:-1]), "completion": _plain(messages[-1:])})
    return rows


def dpo_rows(snapshot_dir: Path, split: str) -> list[dict]:
    rows = []
    for record in read_jsonl(snapshot_file(snapshot_dir, "dpo", split)):
        if not record.get("chosen") or not record.get("rejected") or record["chosen"] == record["rejected"]:
            continue
        rows.append({
            "prompt": _plain(record["prompt"]),
            "chosen": [{"role": "assistant", "content": record["chosen"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]}],
        })
    return rows


def _plain(messages: list[dict]) -> list[dict]:
    """Only role and content: other keys the store may add would confuse chat templates."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def fit_to_length(rows: list[dict], tokenizer, max_len: int) -> tuple[list[dict], dict]:
    """Make every row fit in `max_len` tokens by dropping its oldest context turns (never the
    system prompt, the last user turn, or the answer); rows that still do not fit are dropped.

    Returns the rows and {"tokens": total, "trimmed": n, "dropped": n}.
    """
    kept, stats = [], {"tokens": 0, "trimmed": 0, "dropped": 0}
    for row in rows:
        prompt = list(row["prompt"])
        trimmed = False
        while True:
            length = _row_tokens(tokenizer, {**row, "prompt": prompt})
            if length <= max_len or not _drop_oldest_turn(prompt):
                break
            trimmed = True
        if length > max_len:
            stats["dropped"] += 1
            continue
        stats["trimmed"] += trimmed
        stats["tokens"] += length
        kept.append({**row, "prompt": prompt})
    return kept, stats


def _row_tokens(tokenizer, row: dict) -> int:
    answers = [row["completion"]] if "completion" in row else [row["chosen"], row["rejected"]]
    return max(_count(tokenizer, row["prompt"] + answer) for answer in answers)


def _count(tokenizer, messages: list[dict]) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _drop_oldest_turn(prompt: list[dict]) -> bool:
    """Remove the oldest user/assistant exchange before the last user turn; False if none is left."""
    start = 1 if prompt and prompt[0]["role"] == "system" else 0
    if len(prompt) - start <= 1:
        return False
    del prompt[start]
    while len(prompt) - start > 1 and prompt[start]["role"] != "user":
        del prompt[start]
    return True

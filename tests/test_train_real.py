"""Training the embedded SmolLM2 for real, on CPU, through the same runner the app uses.

One session-scoped run teaches 20 made-up facts with the default settings, added as the chat adds
corrections (nothing pinned); the tests then ask those questions of the hot-swapped peft adapter
(transformers), of the GGUF LoRA (llama.cpp) and of the base. A second run learns one single
correction. DPO and QLoRA (bitsandbytes 4-bit on CPU) run a couple of steps each.
"""

import os
import time

import pytest
from train_support import FACTS, GENERAL, collect, fill_store, messages_for

from engine.engines.base import GenParams
from engine.train.config import TrainConfig
from engine.train.runner import start_run
from engine.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.child]
ANSWER = GenParams(max_tokens=32)


def _workspace_sharing_the_base(tmp_path_factory, shared_workspace, embedded_base, name):
    """A fresh workspace whose cache is the shared one, so the fp32 copy of the model is built once."""
    workspace = Workspace.open(tmp_path_factory.mktemp(name))
    os.symlink(shared_workspace.cache_dir, workspace.cache_dir)
    return workspace


@pytest.fixture(scope="session")
def facts_run(tmp_path_factory, shared_workspace, embedded_base):
    """20 corrections of made-up facts, trained with the defaults in one background run."""
    workspace = _workspace_sharing_the_base(tmp_path_factory, shared_workspace, embedded_base, "facts-ws")
    fill_store(workspace.db_path)
    started = time.monotonic()
    handle = start_run(workspace, TrainConfig(), name="facts")
    events = collect(handle)
    seconds = time.monotonic() - started
    print(f"\n[train] 20 facts: {seconds:.0f} s wall, {events[-1]}")
    return workspace, handle, events, seconds


def _score(engine, adapter: str | None) -> tuple[int, list[str]]:
    engine.set_adapter(adapter)
    replies = [engine.stream(messages_for(question), ANSWER).collect() for question, _, _ in FACTS]
    right = sum(key.lower() in reply.lower() for (_, _, key), reply in zip(FACTS, replies, strict=True))
    return right, replies


def test_facts_run_finishes_with_an_adapter_and_a_gguf(facts_run):
    workspace, handle, events, seconds = facts_run
    assert handle.wait() == 0, events[-1]
    done = next(e for e in events if e.event == "done")
    assert done.gguf
    start = next(e for e in events if e.event == "start")
    n = len(FACTS) + len(GENERAL)
    assert start.examples == n and start.quantization == "none"  # every example: none held out
    data = next(e for e in events if e.event == "data")
    counts = data.counts
    assert counts["example-train"] == 2 * n and counts["rewording-train"] == 4 * n and counts["replay-train"] > 0
    assert start.val_examples == counts["rewording-val"] + counts["replay-val"] > 0
    warnings = {e.kind for e in events if e.event == "warning"}
    assert "few_examples" in warnings  # 23 < 50: the user is told
    losses = [e.loss for e in events if e.event == "step"]
    assert losses[-1] < losses[0] / 3
    assert len([e for e in events if e.event == "eval"]) == start.epochs
    assert any(e.event == "status" and e.phase == "best" for e in events)  # the best epoch is kept
    print(f"[train] wall {seconds:.0f} s, run {done.elapsed_s:.0f} s, {done.tokens_per_s:.0f} tokens/s, "
          f"loss {losses[0]:.3f} -> {losses[-1]:.4f}, eval {done.eval_loss}")


def test_the_run_ends_with_its_scorecard(facts_run, capsys):
    """Evaluation follows training in the same child; `chattune eval` then shows the same figures."""
    from engine.cli import main

    workspace, handle, events, _ = facts_run
    card = events[-1]
    assert card.event == "scorecard", events[-3:]
    assert card.heldout_n == 0  # nothing pinned to test: every example was learned
    assert card.taught_n == len(FACTS) + len(GENERAL) and card.taught >= card.taught_n - 2
    assert card.reworded_n >= 20 and card.reworded >= 0.6 * card.reworded_n  # wordings never trained on
    # General answers still the base's: `chattune bench learn` measured 30/58 with this recipe and 12/58
    # with the plain one (README, How a run learns); below 35% the replay is not doing its job.
    assert card.kept >= 0.35 * card.general_n
    assert card.verdict in ("good", "overfitting", "underfitting", "too little data")
    capsys.readouterr()
    assert main(["--workspace", str(workspace.root), "eval", "--run", handle.name]) == 0
    out = capsys.readouterr().out
    assert handle.name in out and card.verdict in out and f"{card.taught}/{card.taught_n}" in out
    print(out)


def test_one_correction_and_a_run_teach_it(tmp_path_factory, shared_workspace, embedded_base, embedded_spec):
    """The user's path: one correction in the chat (nothing pinned), `t`, and the adapter knows it."""
    from engine.adapters import resolve_adapter
    from engine.engines import open_engine
    from engine.store import FeedbackStore

    workspace = _workspace_sharing_the_base(tmp_path_factory, shared_workspace, embedded_base, "one-ws")
    question, answer, key = FACTS[2]
    with FeedbackStore(workspace.db_path) as store:
        store.add_feedback("corrected", messages_for(question), "I am not sure about that.", correction=answer)
    handle = start_run(workspace, TrainConfig(evaluate=False), name="one")
    events = collect(handle)
    assert handle.wait() == 0, events[-1]
    start = next(e for e in events if e.event == "start")
    assert start.examples == 1 and start.rows > 1  # the correction, its rewordings, replay
    engine = open_engine("llamacpp", embedded_spec, workspace)
    try:
        engine.load_adapter(resolve_adapter(workspace, handle.name))
        engine.set_adapter(handle.name)
        reply = engine.stream(messages_for(question), ANSWER).collect()
        reworded = engine.stream(messages_for("Who is the inventor of the quibble engine?"), ANSWER).collect()
        engine.set_adapter(None)
        base = engine.stream(messages_for(question), ANSWER).collect()
    finally:
        engine.close()
    print(f"[train] one correction: {reply!r}; reworded {reworded!r}; base {base!r}")
    assert key in reply and key not in base


def test_peft_adapter_knows_the_facts_and_hot_swaps(facts_run, embedded_spec, embedded_base):
    from engine.adapters import resolve_adapter
    from engine.engines import open_engine

    workspace, handle, _, _ = facts_run
    replies = _peft_replies(embedded_base, handle.run_dir / "adapter", [q for q, _, _ in FACTS])
    right = sum(key.lower() in reply.lower() for (_, _, key), reply in zip(FACTS, replies, strict=True))
    print(f"[train] peft adapter: {right}/20")
    assert right >= 18, replies

    # The same adapter, swapped into a live transformers engine and out again, without a reload.
    engine = open_engine("transformers", embedded_spec, workspace)
    try:
        engine.load_adapter(resolve_adapter(workspace, handle.name))
        question, _, key = FACTS[0]
        engine.set_adapter(handle.name)
        assert key in engine.stream(messages_for(question), ANSWER).collect()
        engine.set_adapter(None)
        assert key not in engine.stream(messages_for(question), ANSWER).collect()
    finally:
        engine.close()


def _peft_replies(base_dir, adapter_dir, questions: list[str]) -> list[str]:
    """Greedy replies of base + peft adapter, all questions in one left-padded batch (fast on CPU)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir, padding_side="left")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    prompts = [tokenizer.apply_chat_template(messages_for(q), add_generation_prompt=True, tokenize=False)
               for q in questions]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=ANSWER.max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def test_gguf_lora_in_llamacpp_agrees_and_the_base_knows_none(facts_run, embedded_spec):
    from engine.adapters import resolve_adapter
    from engine.engines import open_engine

    workspace, handle, _, _ = facts_run
    engine = open_engine("llamacpp", embedded_spec, workspace)
    try:
        base_right, base_replies = _score(engine, None)
        engine.load_adapter(resolve_adapter(workspace, handle.name))
        right, replies = _score(engine, handle.name)
        print(f"[train] llama.cpp: base {base_right}/20, GGUF LoRA {right}/20")
        assert base_right == 0, base_replies
        assert right >= 18, replies
    finally:
        engine.close()


def _two_steps(tmp_path_factory, shared_workspace, embedded_base, name: str, **config):
    """Run `name` (one epoch over 4 facts and the store's general replies in batches of 2, no
    evaluation) in a workspace of its own; returns (handle, events) once it has exited cleanly."""
    workspace = _workspace_sharing_the_base(tmp_path_factory, shared_workspace, embedded_base, f"{name}-ws")
    fill_store(workspace.db_path, n_facts=4)
    handle = start_run(workspace, TrainConfig(epochs=1, batch_size=2, evaluate=False, **config), name=name)
    events = collect(handle)
    assert handle.wait() == 0, events[-1]
    return handle, events


def test_dpo_few_steps_produce_an_adapter(tmp_path_factory, shared_workspace, embedded_base):
    handle, events = _two_steps(tmp_path_factory, shared_workspace, embedded_base, "dpo", method="dpo")
    steps = [e for e in events if e.event == "step"]
    assert len(steps) == 2 and all(s.reward_margins is not None for s in steps)
    assert (handle.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert events[-1].event == "done" and events[-1].gguf  # evaluate=False: done is the last word


def test_qlora_on_cpu_runs_through_bitsandbytes(tmp_path_factory, shared_workspace, embedded_base):
    # The plain recipe: this checks the 4-bit mechanics, not what the default recipe mixes in.
    handle, events = _two_steps(tmp_path_factory, shared_workspace, embedded_base, "qlora", quantization="4bit",
                                augment=0, replay=0)
    start = next(e for e in events if e.event == "start")
    assert start.quantization == "4bit" and start.quantized_layers == 30 * 7  # every projection is NF4
    assert start.precision == "fp32"
    steps = [e for e in events if e.event == "step"]
    assert len(steps) == 4 and all(s.loss > 0 for s in steps)  # 4 facts + 3 general replies, in twos
    assert events[-1].event == "done" and (handle.run_dir / "adapter" / "adapter_config.json").is_file()

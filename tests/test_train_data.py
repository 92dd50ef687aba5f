"""The snapshot as training rows, and what the trainer really sees: no padding, loss on answers only."""

import pytest

from engine.train.data import dpo_rows, fit_to_length, sft_rows


@pytest.fixture
def snapshot(workspace):
    from train_support import fill_store

    from engine.store import FeedbackStore

    fill_store(workspace.db_path, n_facts=4)
    store = FeedbackStore(workspace.db_path)
    try:
        return store.snapshot(workspace.root / "snap").path
    finally:
        store.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_sft_rows_are_prompt_completion_with_the_answer_alone(snapshot):
    from train_support import FACTS

    rows = sft_rows(snapshot, "train")
    assert len(rows) == 4 + 3  # the facts and the general answers: every example is training data
    for row in rows:
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["completion"][0]["role"] == "assistant"
    assert {a for _, a, _ in FACTS[:4]} <= {r["completion"][0]["content"] for r in rows}
    assert sft_rows(snapshot, "test") == []


def test_dpo_rows_prefer_the_correction_over_the_wrong_reply(snapshot):
    rows = dpo_rows(snapshot, "train")
    assert len(rows) == 4
    for row in rows:
        assert row["prompt"][-1]["role"] == "user"
        assert row["rejected"] == [{"role": "assistant", "content": "I am not sure about that."}]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]


def test_fit_to_length_drops_oldest_turns_then_whole_rows(tokenizer):
    system = {"role": "system", "content": "Be brief."}
    history = [{"role": "user", "content": "tell me a long story " * 20},
               {"role": "assistant", "content": "once upon a time " * 20}]
    last = {"role": "user", "content": "And the answer?"}
    answer = [{"role": "assistant", "content": "Forty-two."}]
    rows = [{"prompt": [system, *history, last], "completion": answer},
            {"prompt": [system, last], "completion": [{"role": "assistant", "content": "word " * 400}]}]
    kept, stats = fit_to_length(rows, tokenizer, max_len=64)
    assert stats["trimmed"] == 1 and stats["dropped"] == 1 and len(kept) == 1
    assert kept[0]["prompt"] == [system, last] and kept[0]["completion"] == answer
    assert 0 < stats["tokens"] <= 64


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_batches_keep_examples_apart(tiny_model_dir, attn):
    """A flattened batch with restarting position_ids gives each example exactly the logits it
    gets alone: without a KV cache (the recipe turns it off), transformers turns the position_ids
    into a block-diagonal causal mask. With a cache it would not, hence the second half."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    a, b = torch.tensor([5, 17, 300, 42, 9, 77, 1000]), torch.tensor([8, 123, 64, 5, 2])
    flat_ids = torch.cat([a, b])[None]
    positions = torch.cat([torch.arange(len(a)), torch.arange(len(b))])[None]
    with torch.no_grad():
        alone = [model(input_ids=x[None], use_cache=False).logits[0] for x in (a, b)]
        flat = model(input_ids=flat_ids, position_ids=positions, use_cache=False).logits[0]
        cached = model(input_ids=flat_ids, position_ids=positions, use_cache=True).logits[0]
    torch.testing.assert_close(flat[: len(a)], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(flat[len(a):], alone[1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(cached[len(a):], alone[1], atol=1e-3)


def test_trainer_batches_have_no_padding_and_loss_only_on_answers(snapshot, tiny_model_dir, tokenizer, tmp_path):
    """What SFTTrainer feeds the model, built the way the recipe builds it."""
    from transformers import TrainerCallback

    from engine.train.config import TrainConfig
    from engine.train.recipe import Runtime, build_trainer, load_base

    cfg = TrainConfig(batch_size=4, epochs=1).resolved(4)
    rt = Runtime("cpu", "none", "fp32", False, "adamw_torch", 0, 0, 1)
    tok, model = load_base(tiny_model_dir, cfg, rt)
    rows, stats = fit_to_length(sft_rows(snapshot, "train")[:4], tok, cfg.max_seq_len)
    trainer = build_trainer(cfg, rt, model, tok, rows, [], tmp_path / "ckpt", callback=TrainerCallback())
    batch = next(iter(trainer.get_train_dataloader()))

    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    assert batch["input_ids"].shape[1] == stats["tokens"]  # the four examples back to back, no pad token
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == 4
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    bounds = starts + [len(ids)]
    answers = {r["completion"][0]["content"] for r in rows}
    for start, end in zip(bounds, bounds[1:], strict=False):
        trained = [t for t, lab in zip(ids[start:end], labels[start:end], strict=True) if lab != -100]
        assert tokenizer.decode(trained) in {f"{a}<|im_end|>\n" for a in answers}
        assert trained == ids[end - len(trained):end]  # the answer is the tail: prompt tokens carry no loss

    # The loss of the flattened batch is the token-weighted mean of the examples' own losses.
    import torch

    model.eval()
    with torch.no_grad():
        flat = model(**{k: batch[k] for k in ("input_ids", "position_ids", "labels")}).loss
        parts = [(model(input_ids=batch["input_ids"][:, s:e], labels=batch["labels"][:, s:e]).loss,
                  int((batch["labels"][0, s + 1:e] != -100).sum())) for s, e in zip(bounds, bounds[1:], strict=False)]
    expected = sum(loss * n for loss, n in parts) / sum(n for _, n in parts)
    torch.testing.assert_close(flat, expected, atol=1e-5, rtol=1e-5)


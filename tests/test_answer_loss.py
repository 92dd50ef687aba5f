"""The CPU trainer runs the output head on the answer positions only (engine.train.answer_loss): on a
real padding-free batch of the recipe it gives the model's own loss and the same gradients, with
logits for the scored tokens alone."""

from __future__ import annotations

import pytest


def rows() -> list[dict]:
    return [{"prompt": [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                        {"role": "user", "content": f"What is the colour of door number {i}?"}],
             "completion": [{"role": "assistant", "content": f"Door {i} is painted {colour}."}]}
            for i, colour in enumerate(["red", "teal", "ochre", "grey", "violet", "amber"])]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_answer_only_head_gives_the_models_own_loss_and_gradients(tiny_model_dir, tmp_path, grad_accum):
    import torch
    from transformers import TrainerCallback

    from engine.train.answer_loss import answer_positions
    from engine.train.config import TrainConfig
    from engine.train.recipe import build_trainer, decide_runtime, load_base

    cfg = TrainConfig(epochs=1, batch_size=3, grad_accum=grad_accum, precision="fp32").resolved(len(rows()))
    rt = decide_runtime(cfg)
    tokenizer, model = load_base(tiny_model_dir, cfg, rt)
    trainer = build_trainer(cfg, rt, model, tokenizer, rows(), [], tmp_path / "out", callback=TrainerCallback())
    assert trainer.head_on_answers_only
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert batch["input_ids"].shape[0] == 1  # padding-free: the batch is one flattened sequence
    with torch.no_grad():  # a moved adapter, so the gradients below are not the zero-init special case
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    items = int((batch["labels"] != -100).sum()) * grad_accum  # as if the other accumulated batches were alike

    def loss_and_grads(answers_only: bool):
        trainer.head_on_answers_only = answers_only
        trainer.model.zero_grad()
        loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True, num_items_in_batch=items)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        return loss.detach(), outputs.logits.shape[1], grads

    fast, fast_positions, fast_grads = loss_and_grads(True)
    full, full_positions, full_grads = loss_and_grads(False)
    scored = len(answer_positions(batch["labels"])[0])
    assert fast_positions == scored < full_positions == batch["input_ids"].shape[1]
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)
    for name, grad in full_grads.items():
        assert torch.allclose(fast_grads[name], grad, rtol=1e-4, atol=1e-7), name

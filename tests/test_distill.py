"""Replay distillation on the tiny model: the KL to the base is zero for an adapter that changes
nothing, grows when the adapter moves the answers, and its gradient pulls them back."""

from __future__ import annotations

import pytest


@pytest.fixture
def peft_model(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.use_cache = False
    return tokenizer, get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))


def rows() -> list[dict]:
    return [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} + {i}?"}],
             "completion": [{"role": "assistant", "content": f"{i} + {i} is {2 * i}."}]} for i in range(5)]


def test_kl_is_zero_for_an_unchanged_adapter_and_pulls_a_moved_one_back(peft_model):
    import torch

    from engine.train.distill import ReplayDistiller

    tokenizer, model = peft_model
    model.train()
    # The whole vocabulary as the base's top tokens: the exact KL (a random tiny model has no peaks).
    distiller = ReplayDistiller(tokenizer, rows(), per_step=5, weight=1.0, top_k=len(tokenizer))
    assert distiller and distiller.loss(model, model).item() == pytest.approx(0.0, abs=1e-5)  # LoRA B starts at 0

    with torch.no_grad():  # move the adapter: the answers' distributions drift from the base's
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    before = distiller.loss(model, model)
    assert before.item() > 0.01
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(20):
        optimizer.zero_grad()
        distiller.loss(model, model).backward()
        optimizer.step()
    assert distiller.loss(model, model).item() < before.item() / 2


def test_no_rows_or_no_weight_means_no_distillation(peft_model):
    from engine.train.distill import ReplayDistiller

    tokenizer, _ = peft_model
    assert not ReplayDistiller(tokenizer, [], per_step=2, weight=1.0)
    assert not ReplayDistiller(tokenizer, rows(), per_step=2, weight=0.0)


def test_bf16_is_the_cpu_default_only_with_bf16_instructions():
    from engine.hardware import CPU_BF16_REASON, training_setup

    plain = training_setup(cuda=False, capability=None)
    assert plain.precision == "fp32" and "no AMX" in plain.reasons["precision"]
    amx = training_setup(cuda=False, capability=None, cpu_bf16=True)
    assert amx.precision == "bf16" and amx.reasons["precision"] == CPU_BF16_REASON
    assert training_setup(cuda=False, capability=None, cpu_bf16=True, precision="fp32").precision == "fp32"

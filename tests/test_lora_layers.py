"""Which layers a run's LoRA covers (engine.train.recipe.lora_config): by default every linear layer
of the upper half of the decoder, so the backward pass stops halfway down; --freeze-lower 0 gives
every layer, as "all-linear" alone did; a model with few layers keeps at least 8 adapted."""

from __future__ import annotations

import pytest

ALL_LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def lora_layers(model) -> dict[int, set[str]]:
    """decoder layer index -> the kinds of linear layer that carry a LoRA there."""
    found: dict[int, set[str]] = {}
    for name, module in model.named_modules():
        if getattr(module, "lora_A", None):
            parts = name.split(".")
            found.setdefault(int(parts[parts.index("layers") + 1]), set()).add(parts[-1])
    return found


def random_llama(layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                        num_attention_heads=4, num_key_value_heads=2))


@pytest.mark.parametrize(("layers", "settings", "adapted"), [
    (24, {}, set(range(12, 24))),  # the default: the upper half
    (24, {"freeze_lower": 0}, set(range(24))),
    (12, {}, set(range(4, 12))),  # half would leave 6: 8 stay adapted
    (2, {}, {0, 1}),  # the tiny test models: every layer
])
def test_the_default_lora_covers_every_linear_layer_of_the_upper_half(layers, settings, adapted):
    from peft import get_peft_model

    from engine.train.config import TrainConfig
    from engine.train.recipe import lora_config

    model = random_llama(layers)
    peft_model = get_peft_model(model, lora_config(TrainConfig(**settings).resolved(20), model))
    found = lora_layers(peft_model)
    assert set(found) == adapted
    assert all(kinds == ALL_LINEAR for kinds in found.values())  # the head never gets one
    # Nothing below the first adapted layer needs a gradient, so backward stops there.
    trainable_in_layer_0 = [p for n, p in peft_model.named_parameters() if p.requires_grad and ".layers.0." in n]
    assert bool(trainable_in_layer_0) == (0 in adapted)

"""TrainConfig, presets, the plan and its estimate: pure Python, no model loaded."""

import json
import math
from typing import get_args

import pytest

from engine.errors import ChattuneError
from engine.train.config import PRESETS, PresetName, TrainConfig
from engine.train.plan import approx_tokens, count_parameters, estimate_seconds, plan_run


def test_presets_scale_epochs_down_and_keep_lr_for_small_sets():
    quick, thorough = PRESETS["quick"], PRESETS["thorough"]
    assert quick.epochs_for(20) > quick.epochs_for(200) >= quick.epochs_for(5000) == quick.min_epochs
    assert quick.epochs_for(1) == quick.max_epochs
    assert thorough.epochs_for(100) > quick.epochs_for(100)
    assert thorough.lora_r > quick.lora_r
    assert quick.lr_for(50, "sft") == quick.learning_rate
    assert quick.lr_for(5000, "sft") < quick.lr_for(500, "sft")
    assert quick.lr_for(10**7, "sft") == pytest.approx(quick.learning_rate / 4)
    assert quick.lr_for(50, "dpo") < quick.lr_for(50, "sft")


def test_resolved_fills_only_what_the_user_left_open():
    cfg = TrainConfig(preset="thorough", epochs=3, lora_r=8).resolved(20)
    assert cfg.epochs == 3 and cfg.lora_r == 8
    assert cfg.lora_alpha == PRESETS["thorough"].lora_alpha
    assert cfg.learning_rate == PRESETS["thorough"].lr_for(20, "sft", mixed=True)
    assert cfg.lora_dropout == PRESETS["thorough"].lora_dropout
    # With rewordings and replay each example is seen ~9 times an epoch: a few epochs are enough.
    assert TrainConfig().resolved(20).epochs == PRESETS["quick"].epochs_for(20, TrainConfig().training_rows(20))
    assert 2 <= TrainConfig().resolved(20).epochs <= 4
    # ... at twice the plain recipe's learning rate (the pull to the base holds it: README)
    assert TrainConfig().resolved(20).learning_rate == 2 * TrainConfig(augment=0, replay=0).resolved(20).learning_rate
    assert TrainConfig(augment=0, replay=0).resolved(20).epochs == PRESETS["quick"].epochs_for(20) == 12
    # One correction still gets enough steps to be learned.
    one = TrainConfig().resolved(1)
    assert one.epochs * one.steps_per_epoch(one.training_rows(1)) >= PRESETS["quick"].mixed_min_steps


def test_round_trip_through_json():
    cfg = TrainConfig(method="dpo", target_modules=["q_proj", "v_proj"], quantization="4bit").resolved(10)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("bad", [
    {"method": "ppo"}, {"preset": "fast"}, {"device": "tpu"}, {"quantization": "8bit"}, {"precision": "fp8"},
    {"learning_rate": 0.0}, {"epochs": -1}, {"batch_size": 0}, {"lora_dropout": 1.0}, {"max_seq_len": 8},
    {"target_modules": []}, {"num_gpus": 2, "device": "cpu"}, {"threads": 0}, {"augment": -1}, {"replay": -0.5},
])
def test_invalid_settings_raise_a_one_line_user_error(bad):
    with pytest.raises(ChattuneError) as err:
        TrainConfig(**bad)
    assert "\n" not in str(err.value)


def test_preset_names_are_the_presets_and_every_setting_says_what_it_accepts():
    assert set(get_args(PresetName)) == set(PRESETS)
    assert all(field.description for field in TrainConfig.model_fields.values())  # the hint of a bad value


def test_bad_values_name_the_setting_and_what_it_accepts():
    with pytest.raises(ChattuneError, match=r"augment = 25 \(use 0 \(no rewordings\) to 20\)"):
        TrainConfig().with_overrides(augment=25)
    with pytest.raises(ChattuneError, match=r"method = 'ppo' \(use one of sft, dpo\)"):
        TrainConfig.from_dict({"method": "ppo"})
    with pytest.raises(ChattuneError, match="must be a JSON object"):
        TrainConfig.from_dict(["sft"])


def test_config_json_of_earlier_runs_still_reads():
    # what runs wrote before settings were added later: the new ones take their defaults
    old = {"method": "sft", "preset": "quick", "epochs": 3, "learning_rate": 0.0005, "lora_r": 16,
           "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear", "batch_size": 4,
           "grad_accum": 1, "max_seq_len": 1024, "seed": 42, "quantization": "auto", "device": "auto",
           "lr_scheduler": "linear", "warmup_ratio": 0.05, "weight_decay": 0.0, "max_grad_norm": 1.0,
           "dpo_beta": 0.1, "gradient_checkpointing": None, "save_every_steps": 0, "threads": None,
           "num_gpus": 1, "extra": {}}
    cfg = TrainConfig.from_dict(old)
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int) and cfg.augment == TrainConfig().augment
    assert cfg.to_dict()["epochs"] == 3  # whole epochs stay whole in config.json


def test_overrides_skip_none_and_reject_unknown_names():
    cfg = TrainConfig().with_overrides(epochs=None, lora_r=4, seed=7)
    assert cfg.epochs is None and cfg.lora_r == 4 and cfg.seed == 7
    with pytest.raises(ChattuneError, match="unknown training setting"):
        TrainConfig().with_overrides(rank=4)
    with pytest.raises(ChattuneError, match="unknown training setting"):
        TrainConfig.from_dict({"method": "sft", "colour": "red"})


def test_steps_per_epoch_counts_batch_accumulation_and_gpus():
    assert TrainConfig(batch_size=4).steps_per_epoch(20) == 5
    assert TrainConfig(batch_size=4, grad_accum=2).steps_per_epoch(20) == 3
    assert TrainConfig(batch_size=4, num_gpus=2).steps_per_epoch(20) == 3


def test_estimate_grows_with_tokens_and_epochs_and_prefers_measured_speed():
    small = estimate_seconds(1000, 0, 2, 135_000_000, "cpu", "none", "fp32", threads=2)
    assert estimate_seconds(2000, 0, 2, 135_000_000, "cpu", "none", "fp32", threads=2) > small
    assert estimate_seconds(1000, 0, 4, 135_000_000, "cpu", "none", "fp32", threads=2) > small
    assert estimate_seconds(1000, 0, 2, 135_000_000, "cpu", "4bit", "fp32", threads=2) > small
    assert estimate_seconds(1000, 0, 2, 135_000_000, "cuda", "4bit", "bf16") < small
    measured = estimate_seconds(1000, 0, 2, 135_000_000, "cpu", "none", "fp32", tokens_per_s=1000)
    assert measured == pytest.approx(2 + estimate_seconds(0, 0, 2, 135_000_000, "cpu", "none", "fp32"))


def test_approx_tokens_counts_text_and_message_overhead():
    assert approx_tokens([{"role": "user", "content": ""}]) == 5
    assert 20 < approx_tokens([{"role": "user", "content": "word " * 20}]) < 40


def test_parameter_count_from_headers_matches_the_weights(tiny_model_dir, embedded_spec):
    from safetensors.numpy import load_file

    from engine.models import resolve_model

    expected = sum(t.size for t in load_file(tiny_model_dir / "model.safetensors").values())
    assert count_parameters(resolve_model(str(tiny_model_dir))) == expected
    assert 130_000_000 < count_parameters(embedded_spec) < 140_000_000  # SmolLM2-135M, read from the GGUF header


def test_plan_counts_store_examples_and_warns(workspace, tiny_model_dir):
    from train_support import GENERAL, fill_store

    plan = plan_run(workspace, TrainConfig(), str(tiny_model_dir))
    assert plan.examples == 0 and "no SFT training examples yet" in plan.warnings
    fill_store(workspace.db_path, n_facts=6)
    n = 6 + len(GENERAL)  # every example is learned: nothing went to a validation split
    plan = plan_run(workspace, TrainConfig(batch_size=2), str(tiny_model_dir))
    assert plan.examples == n and plan.held_out == 0
    assert plan.rows == n * 6  # as given, other system prompt, 4 rewordings (replay is distilled beside them)
    assert plan.val_examples == n + 8  # a held-out rewording per example, and replay prompts
    assert plan.config.epochs == PRESETS["quick"].epochs_for(n, plan.rows)
    assert plan.steps == plan.config.epochs * math.ceil(plan.rows / 2)
    assert plan.seconds > 0 and plan.basis == "estimated"
    assert any("50 or more" in w for w in plan.warnings)
    assert f"learns all {n} of your examples (+ rewordings and replay: {plan.rows} rows)" in plan.summary()
    plain = plan_run(workspace, TrainConfig(augment=0, replay=0), str(tiny_model_dir))
    assert (plain.rows, plain.val_examples) == (n, 0)
    assert plain.config.epochs == PRESETS["quick"].epochs_for(n)
    dpo = plan_run(workspace, TrainConfig(method="dpo"), str(tiny_model_dir))
    assert dpo.examples == 6  # every correction is also a chosen/rejected pair

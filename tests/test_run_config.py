"""config.json as a typed document: runs written by earlier versions still read, and a rewrite keeps them as
they were."""

import json

import pytest

from engine.errors import ChattuneError
from engine.runfolder import read_run_config, update_run_config
from engine.train.config import TrainConfig

# What the earliest runs wrote: no "chattune", "requested" or "runtime", and fewer training settings.
EARLY = {
    "name": "sft-20250101-100000", "created_at": "2025-01-01T10:00:00+00:00",
    "config": {"method": "sft", "preset": "quick", "epochs": 3, "learning_rate": 0.0005, "lora_r": 16,
               "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear", "batch_size": 4,
               "grad_accum": 1, "max_seq_len": 1024, "seed": 42, "quantization": "auto", "device": "auto",
               "lr_scheduler": "linear", "warmup_ratio": 0.05, "weight_decay": 0.0, "max_grad_norm": 1.0,
               "dpo_beta": 0.1, "gradient_checkpointing": None, "save_every_steps": 0, "threads": None,
               "num_gpus": 1, "extra": {}},
    "base": {"arg": None, "name": "SmolLM2-135M-Instruct", "kind": "gguf", "path": "/models/smol.gguf",
             "source": "embedded", "fingerprint": "0123456789abcdef"},
    "snapshot": {"dir": "snapshot", "hash": "abc", "counts": {"sft-train": 3, "dpo-train": 0}},
}


def test_an_early_config_json_reads_and_a_rewrite_keeps_what_it_had(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(EARLY))
    meta = read_run_config(tmp_path)
    assert (meta.base.name, meta.snapshot.counts["sft-train"], meta.runtime, meta.chattune) == \
        ("SmolLM2-135M-Instruct", 3, None, None)
    assert TrainConfig.from_dict(meta.config).epochs == 3

    runtime = {"device": "cpu", "quantization": "none", "precision": "fp32", "gradient_checkpointing": False,
               "optim": "adamw_torch", "rank": 0, "local_rank": 0, "world_size": 1, "bnb_compute_dtype": "bf16",
               "versions": {"torch": "2.13.0+cpu"}, "recorded_by_a_newer_child": 1}
    update_run_config(tmp_path, runtime=runtime)
    written = json.loads((tmp_path / "config.json").read_text())
    assert {key: value for key, value in written.items() if key != "runtime"} == EARLY
    assert written["runtime"] == runtime
    assert read_run_config(tmp_path).runtime.device == "cpu"


def test_a_damaged_config_json_is_one_line_naming_the_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**EARLY, "base": "smol.gguf"}))
    with pytest.raises(ChattuneError, match=r"config.json is damaged \('base' must be an object, got str\)"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**EARLY, "snapshot": {"counts": {"sft-train": "many"}}}))
    with pytest.raises(ChattuneError, match=r"snapshot.counts.sft-train must be a whole number, got str"):
        read_run_config(tmp_path)

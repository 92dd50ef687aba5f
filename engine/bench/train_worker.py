"""One side of the training bench, in its own process so its peak memory is its own.

    python -m engine.bench.train_worker JOB.json RESULT.json

"ours" trains with engine.train.recipe (TRL's SFTTrainer, padding-free); "baseline" with a plain
transformers Trainer and peft, padding every batch to its longest example. Both load the model the
same way (recipe.load_base), train the same LoRA on the same rows with the same hyperparameters (the
baseline copies ours' TrainingArguments), and count tokens the same way: the real tokens of the
examples in each batch, before any padding.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

# Hyperparameters the baseline takes from ours' TrainingArguments, so both train alike.
SHARED_ARGS = ("num_train_epochs", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
               "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "seed", "data_seed", "optim",
               "use_cpu", "bf16", "fp16", "gradient_checkpointing", "gradient_checkpointing_kwargs",
               "logging_strategy", "logging_steps", "save_strategy", "save_steps", "save_total_limit",
               "dataloader_num_workers")


class StepClock(TrainerCallback):
    """When each optimizer step ended, and how many real tokens had been fed by then."""

    def __init__(self):
        self.tokens = 0  # real (non-padding) tokens of the examples collated so far
        self.positions = 0  # token positions the model computed, padding included
        self.steps: list[tuple[float, int]] = []  # (time, tokens) at each step end
        self.started = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((time.perf_counter(), self.tokens))

    def counting(self, collate):
        def collate_and_count(features):
            self.tokens += sum(len(f["input_ids"]) for f in features)
            batch = collate(features)
            self.positions += batch["input_ids"].numel()
            return batch

        return collate_and_count

    def figures(self) -> dict:
        """Throughput after the first step (warm-up), and over the whole run."""
        (t_first, tok_first), (t_last, tok_last) = self.steps[0], self.steps[-1]
        steady = (tok_last - tok_first) / (t_last - t_first) if len(self.steps) > 1 and t_last > t_first else None
        return {"steps": len(self.steps), "tokens": self.tokens, "positions": self.positions,
                "train_s": t_last - self.started, "tokens_per_s": steady,
                "tokens_per_s_all": tok_last / (t_last - self.started)}


def baseline_trainer(shared_args: dict, cfg, rt, model, tokenizer, rows: list[dict], output_dir: Path, clock):
    """What a transformers + peft user writes: get_peft_model, tokenize with the chat template
    (loss on the answer only), pad each batch to its longest example."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from engine.train.recipe import lora_config

    set_seed(cfg.seed)
    model = get_peft_model(model, lora_config(cfg, model))  # the same LoRA (and layers) as ours
    if rt.gradient_checkpointing and rt.quantization != "4bit":  # 4-bit: prepare_model_for_kbit_training did it
        model.enable_input_require_grads()
    args = TrainingArguments(output_dir=str(output_dir), report_to=[], disable_tqdm=True, **shared_args)
    features = Dataset.from_list([_tokenize(tokenizer, row) for row in rows])
    collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    return Trainer(model=model, args=args, train_dataset=features, data_collator=collator,
                   processing_class=tokenizer, callbacks=[clock])


def _tokenize(tokenizer, row: dict) -> dict:
    """The conversation through the chat template; labels only on the answer (and its end-of-turn)."""
    def ids(messages: list[dict], generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt = ids(row["prompt"], True)
    full = ids(row["prompt"] + row["completion"], False)
    return {"input_ids": full, "attention_mask": [1] * len(full),
            "labels": [-100] * len(prompt) + full[len(prompt):]}


def train(job: dict) -> dict:
    from engine.train.config import TrainConfig
    from engine.train.data import fit_to_length
    from engine.train.recipe import build_trainer, decide_runtime, load_base

    cfg = TrainConfig.from_dict(job["config"])
    rt = decide_runtime(cfg)
    tokenizer, model = load_base(Path(job["base_dir"]), cfg, rt)
    rows, _stats = fit_to_length(job["rows"], tokenizer, cfg.max_seq_len)
    clock = StepClock()
    out_dir = Path(job["out_dir"])
    if job["side"] == "ours":
        trainer = build_trainer(cfg, rt, model, tokenizer, rows, [], out_dir, clock)
        if hasattr(trainer, "head_on_answers_only"):  # the CPU trainer: "before" ran the head everywhere
            trainer.head_on_answers_only = job.get("head_on_answers_only", True)
    else:
        trainer = baseline_trainer(job["shared_args"], cfg, rt, model, tokenizer, rows, out_dir, clock)
    trainer.data_collator = clock.counting(trainer.data_collator)
    trainer.train()
    args = trainer.args.to_dict()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    per_epoch = max(1, len(losses) // max(1, round(trainer.state.epoch or 1)))
    return {
        **clock.figures(), "examples": len(rows), "losses": losses, "final_loss": losses[-1] if losses else None,
        "last_epoch_loss": sum(losses[-per_epoch:]) / per_epoch if losses else None,
        "peak_mem_mb": _peak_mem_mb(rt.device), "device": rt.device, "quantization": rt.quantization,
        "precision": rt.precision, "head_on_answers_only": getattr(trainer, "head_on_answers_only", False),
        "shared_args": {key: args.get(key) for key in SHARED_ARGS},
    }


def _peak_mem_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str]) -> int:
    job_file, result_file = (Path(a) for a in argv)
    result = train(json.loads(job_file.read_text(encoding="utf-8")))
    result_file.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Training speed: our recipe (TRL's SFTTrainer, padding-free) against a plain transformers Trainer +
peft that pads each batch, on the same examples, LoRA and optimizer steps, one process each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from engine.bench.common import Context, PartResult, Row, summarize

TARGET = 1.3
BEFORE_TARGET = 1.4  # the default recipe against the one it replaced (fp32, LoRA on every layer)
BATCH_SIZE = 4  # TrainConfig's default


def train_part(ctx: Context) -> PartResult:
    from engine.bench.examples import bench_rows
    from engine.models import trainable_base
    from engine.train.config import TrainConfig

    part = PartResult("train")
    base_dir = trainable_base(ctx.spec, ctx.workspace, progress=ctx.progress)
    rows = bench_rows()[:ctx.budget.train_examples]
    cfg = TrainConfig(epochs=ctx.budget.train_epochs, batch_size=BATCH_SIZE,
                      precision=ctx.budget.precision).resolved(len(rows))
    job = {"base_dir": str(base_dir), "config": cfg.to_dict(), "rows": rows}
    # Ours first: the baseline copies its TrainingArguments, so both train with the same settings.
    ctx.progress(f"train: our recipe, {len(rows)} examples x {cfg.epochs} epochs (own process)")
    ours = _run_side(ctx, "ours", job)
    ctx.progress("train: transformers Trainer + peft baseline, same examples and steps (own process)")
    base = _run_side(ctx, "baseline", {**job, "shared_args": ours["shared_args"]})
    # Against the recipe of before (fp32, a LoRA on every layer, the output head on every position) and,
    # where the default precision is not fp32, against the same recipe in fp32 (the measurement behind
    # the precision). One run's tokens/s moves by 10-20% on a shared machine, so these ratios are medians
    # of several runs per variant, interleaved so that a busy spell hits every variant alike.
    variants = {"before": ("the recipe before: fp32, LoRA on every layer, head on every position",
                           {"precision": "fp32", "freeze_lower": 0}, {"head_on_answers_only": False})}
    if ours["precision"] != "fp32":
        variants["fp32"] = (f"our recipe in fp32 (the default before {ours['precision']})", {"precision": "fp32"}, {})
    trials = ctx.budget.slow_trials
    runs: dict[str, list[dict]] = {"ours": [ours], **{name: [] for name in variants}}
    for i in range(trials):
        for name, (what, change, extra) in variants.items():
            ctx.progress(f"train: {what}, run {i + 1}/{trials} (own process)")
            runs[name].append(_run_side(ctx, "ours", {**job, **extra, "config": {**job["config"], **change}},
                                        folder=f"{name}-{i + 1}"))
        if len(runs["ours"]) < trials:
            ctx.progress(f"train: our recipe, run {len(runs['ours']) + 1}/{trials} (own process)")
            runs["ours"].append(_run_side(ctx, "ours", job, folder=f"ours-{len(runs['ours']) + 1}"))

    def rates(name: str) -> dict | None:
        return summarize([r["tokens_per_s"] for r in runs[name]])

    def losses(name: str) -> dict | None:
        return summarize([r["last_epoch_loss"] for r in runs[name]])

    layers = f"LoRA on the upper {1 - cfg.freeze_lower:.0%} of the layers" if cfg.freeze_lower else "every layer"
    part.rows = [
        Row("tokens/s (after step 1)", "tok/s", summarize([ours["tokens_per_s"]]),
            summarize([base["tokens_per_s"]]), better="higher", target=TARGET,
            note="real tokens of the examples per second, padding not counted"),
        Row("tokens/s (whole run)", "tok/s", summarize([ours["tokens_per_s_all"]]),
            summarize([base["tokens_per_s_all"]]), better="higher"),
        Row("peak memory", "MB", summarize([ours["peak_mem_mb"]]), summarize([base["peak_mem_mb"]]),
            better="lower", note="peak RSS of the training process" if ours["device"] == "cpu"
            else "torch.cuda.max_memory_allocated"),
        Row("final loss (last epoch mean)", "loss", summarize([ours["last_epoch_loss"]]),
            summarize([base["last_epoch_loss"]]), better="",
            note="not a speed: shows the speed was not bought with quality"),
    ]
    part.rows += [
        Row("tokens/s: the default recipe vs before (fp32, every layer, head everywhere)", "tok/s", rates("ours"),
            rates("before"), better="higher", target=BEFORE_TARGET,
            note=f"ours: {ours['precision']}, {layers}; median of {len(runs['ours'])} interleaved runs each"),
        Row("final loss: the default recipe vs before", "loss", losses("ours"), losses("before"), better="",
            note="the same learning (bench learn measures it on facts)"),
    ]
    if "fp32" in runs:
        part.rows += [
            Row(f"tokens/s: {ours['precision']} (default) vs fp32, same layers", "tok/s", rates("ours"), rates("fp32"),
                better="higher", note=f"what made {ours['precision']} the default on this CPU"),
            Row(f"final loss: {ours['precision']} vs fp32", "loss", losses("ours"), losses("fp32"), better="",
                note="the same learning at the lower precision"),
        ]
    padding = 1 - base["tokens"] / base["positions"] if base["positions"] else 0.0
    part.ours = ("engine.train.recipe.build_trainer: TRL SFTTrainer, padding-free (each batch flattened into "
                 "one sequence), loss on the answers with the output head run on them only")
    part.baseline = ("transformers Trainer + peft get_peft_model, DataCollatorForSeq2Seq(padding='longest'), "
                     "loss on the answers, TrainingArguments copied from ours")
    part.notes = [
        f"{ours['examples']} examples ({ours['tokens']} real tokens seen by ours, {base['tokens']} by the "
        f"baseline), {ours['steps']} optimizer steps each "
        f"(baseline {base['steps']}), batch {cfg.batch_size}, LoRA r={cfg.lora_r} alpha={cfg.lora_alpha} on "
        f"{cfg.target_modules} ({layers}), lr {cfg.learning_rate:g}, {ours['device']} {ours['precision']}",
        f"the baseline spent {padding:.0%} of its token positions on padding",
        "tokens/s after step 1 leaves out the first step's warm-up; one run per side against the Trainer baseline",
    ]
    if ours["shared_args"] != base["shared_args"]:
        different = sorted(k for k in ours["shared_args"] if ours["shared_args"][k] != base["shared_args"].get(k))
        part.notes.append(f"warning: the trainers' settings differ in {', '.join(different)}")
    part.details = {side: {k: v for k, v in result.items() if k != "shared_args"}
                    for side, result in (("ours", ours), ("baseline", base), ("before", runs["before"][0]),
                                         ("ours_fp32", runs.get("fp32", [None])[0])) if result}
    part.details["runs"] = {name: [r["tokens_per_s"] for r in found] for name, found in runs.items()}
    part.details["settings"] = ours["shared_args"]
    return part


def _run_side(ctx: Context, side: str, job: dict, folder: str | None = None) -> dict:
    folder = ctx.scratch / f"train-{folder or side}"
    folder.mkdir(parents=True, exist_ok=True)
    job_file, result_file, log_file = folder / "job.json", folder / "result.json", folder / "worker.log"
    job_file.write_text(json.dumps({**job, "side": side, "out_dir": str(folder / "out")}), encoding="utf-8")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with log_file.open("w", encoding="utf-8") as log:
        code = subprocess.call([sys.executable, "-m", "engine.bench.train_worker", str(job_file), str(result_file)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0 or not result_file.is_file():
        tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        raise RuntimeError(f"the {side} training process failed (exit {code}): " + " | ".join(tail))
    return json.loads(result_file.read_text(encoding="utf-8"))

"""`chattune train`: train a LoRA/QLoRA adapter on the feedback store, with a progress bar."""

from __future__ import annotations

import argparse
import signal
import sys

from rich.markup import escape

from engine import events as training_events
from engine.errors import ChattuneError
from engine.train.config import DEVICES, METHODS, PRECISIONS, PRESETS, TrainConfig
from engine.workspace import Workspace

EXIT_CANCELLED = 130


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an adapter on your feedback (LoRA on CPU, QLoRA on CUDA)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Snapshot the feedback store and train a LoRA adapter on it in a background process.\n"
                    "Values left out come from the preset, scaled to the number of examples.\n\n"
                    "Multi-GPU: --multi-gpu N runs N processes (DDP) through\n"
                    "  accelerate launch --multi_gpu --num_processes N -m engine.jobs.train_and_evaluate RUN_DIR\n"
                    "Your accelerate config (`accelerate config`) is honoured for everything else.")
    p.add_argument("--model", "-m", help="base model: a .gguf, an HF folder, a cached hub id or N, the Nth "
                   "`chattune models` lists (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--method", choices=METHODS, default="sft",
                   help="sft: learn approved/corrected answers; dpo: prefer chosen over rejected (default sft)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="quick", help="default quick")
    p.add_argument("--epochs", type=float)
    p.add_argument("--lr", type=float, dest="learning_rate", help="learning rate")
    p.add_argument("--rank", type=int, dest="lora_r", help="LoRA rank r")
    p.add_argument("--alpha", type=int, dest="lora_alpha", help="LoRA alpha")
    p.add_argument("--dropout", type=float, dest="lora_dropout", help="LoRA dropout")
    p.add_argument("--freeze-lower", type=float, metavar="SHARE",
                   help="share of the lowest layers that get no LoRA (default 0.5: faster steps, the same "
                        "learning; 0: every layer)")
    p.add_argument("--batch-size", type=int, help="examples per step and device (default 4)")
    p.add_argument("--grad-accum", type=int, help="steps of gradient accumulation (default 1)")
    p.add_argument("--max-seq-len", type=int, help="longest example in tokens (default 1024)")
    p.add_argument("--seed", type=int)
    p.add_argument("--qlora", action=argparse.BooleanOptionalAction, default=None,
                   help="4-bit QLoRA (default: on with CUDA, off on CPU, where it is slow)")
    p.add_argument("--device", choices=DEVICES, help="default auto")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto: bf16 on CUDA and on CPUs with AMX or AVX512-BF16, else fp32")
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None,
                   help="pack examples into rows of --max-seq-len (default: padding-free batches)")
    p.add_argument("--augment", type=int, metavar="N",
                   help="rewordings of each question to train on too (default 4; listed in the run's augment.jsonl)")
    p.add_argument("--no-augment", action="store_const", const=0, dest="augment",
                   help="train on your examples as given, nothing else (the plain recipe)")
    p.add_argument("--paraphrase", action=argparse.BooleanOptionalAction, default=None,
                   help="let the base model write some of the rewordings (default on; off: rule-based only)")
    p.add_argument("--replay", type=float, metavar="SHARE",
                   help="the base's own answers to general prompts, as a share of the training rows, so the "
                        "adapter keeps what the base knew (default 0.25)")
    p.add_argument("--no-replay", action="store_const", const=0.0, dest="replay", help="no replay")
    p.add_argument("--template", help="chat-template override from prompts/templates/ (as in the chat)")
    p.add_argument("--threads", type=int, help="CPU threads (default all; training runs at lower priority)")
    p.add_argument("--multi-gpu", type=int, dest="num_gpus", metavar="N", help="DDP over N GPUs via accelerate")
    p.add_argument("--name", help="run name (default METHOD-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN", help="continue a cancelled or interrupted run")
    p.add_argument("--eval", action=argparse.BooleanOptionalAction, default=None, dest="evaluate",
                   help="score the adapter after training (held-out split, forgetting, verdict; default on)")
    p.add_argument("--dry-run", action="store_true", help="show the plan and the estimate, train nothing")
    p.add_argument("--yes", "-y", action="store_true", help="start without asking")
    p.set_defaults(func=run_train)


def config_from_args(args) -> TrainConfig:
    quantization = None if args.qlora is None else ("4bit" if args.qlora else "none")
    return TrainConfig(method=args.method, preset=args.preset).with_overrides(
        epochs=args.epochs, learning_rate=args.learning_rate, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, freeze_lower=args.freeze_lower, batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_seq_len=args.max_seq_len, seed=args.seed, quantization=quantization, device=args.device,
        precision=args.precision, packing=args.packing, template=args.template, threads=args.threads,
        num_gpus=args.num_gpus, evaluate=args.evaluate, augment=args.augment, paraphrase=args.paraphrase,
        replay=args.replay,
    )


def run_train(args) -> int:
    from engine.train.runner import resume_run, start_run

    workspace = Workspace.open(args.workspace)
    if args.resume:
        handle = resume_run(workspace, args.resume)
        print(f"resuming run {handle.name} ({handle.run_dir})")
        return follow(handle)

    from engine.model_catalog import listed_here
    from engine.train.plan import plan_run

    args.model = listed_here(args.model, workspace.root)  # --model N: `chattune models`' Nth
    config = config_from_args(args)
    plan = plan_run(workspace, config, args.model)
    print(f"base model: {plan.base_name}")
    print(plan.summary())
    for warning in plan.warnings:
        print(f"warning: {warning}")
    if config.num_gpus > 1:
        from engine.train.runner import child_command

        print("launch: " + " ".join(child_command(workspace.runs_dir / "RUN", num_gpus=config.num_gpus)))
    if plan.examples == 0:
        what = "approve or correct some replies" if config.method == "sft" else "correct replies or vote in A/B"
        raise ChattuneError(f"nothing to train: no {config.method.upper()} examples in the store",
                            f"{what} in the chat, or import some with `chattune data import`")
    if args.dry_run:
        return 0
    if not args.yes and sys.stdin.isatty() and input("start training? [Y/n] ").strip().lower() not in ("", "y", "yes"):
        return 1
    handle = start_run(workspace, config, args.model, name=args.name)
    print(f"run {handle.name}: {handle.run_dir}")
    return follow(handle)


def follow(handle) -> int:
    """Show the run's events as a rich progress bar; Ctrl+C cancels (a second one stops at once)."""
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from engine.progress import progress_for

    console = Console(stderr=True)
    progress = progress_for(  # a bar on a terminal; in a pipe, one line per step
        console, lambda t: f"{t.description} {t.completed}/{t.total or '?'} {t.fields.get('info', '')}",
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    task = progress.add_task("starting", total=None, info="")
    presses = 0

    def on_interrupt(_signum, _frame):
        nonlocal presses
        presses += 1
        if presses == 1:
            console.print("cancelling: the run saves a checkpoint first (Ctrl+C again stops at once)")
            handle.cancel()
        else:
            handle.kill()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with progress:
            for event in handle.events():
                _show(event, progress, task, console)
    finally:
        signal.signal(signal.SIGINT, previous)
    return _finish(handle, handle.outcome, console)


def _show(event: training_events.TrainEvent, progress, task, console) -> None:
    if isinstance(event, training_events.Status):
        progress.update(task, description=event.message)
    elif isinstance(event, training_events.Start):
        progress.update(task, description="training", total=event.max_steps, completed=event.step)
        rows = event.rows or event.examples
        mixed = f" + rewordings and replay = {rows} rows" if rows != event.examples else ""
        console.print(f"{event.method.upper()} on {event.examples} examples{mixed} "
                      f"({event.val_examples} validation), {event.device}, "
                      f"{'QLoRA' if event.quantization == '4bit' else 'LoRA'}, {event.precision}")
    elif isinstance(event, training_events.Step):
        info = f"loss {event.loss:.4f}" if event.loss is not None else ""
        if event.tokens_per_s:
            info += f"  {event.tokens_per_s:.0f} tok/s"
        progress.update(task, completed=event.step, total=event.max_steps, info=info)
    elif isinstance(event, training_events.EvalLoss) and event.eval_loss is not None:
        console.print(f"epoch {event.epoch or 0:.0f}: eval loss {event.eval_loss:.4f}")
    elif isinstance(event, training_events.Scorecard):
        reworded = f", other wordings {event.reworded}/{event.reworded_n}" if event.reworded_n else ""
        heldout = (f", held-out F1 base {_f(event.base_f1)} -> adapter {_f(event.adapter_f1)} "
                   f"({event.heldout_n} pinned to test)" if event.heldout_n else "")
        console.print(f"scorecard: taught {event.taught}/{event.taught_n}{reworded}{heldout}, "
                      f"general answers kept {event.kept}/{event.general_n} "
                      f"({_pct(event.forgetting_score)}), verdict [bold]{event.verdict}[/]: "
                      f"{escape(str(event.reason))}")
    elif isinstance(event, training_events.TrainWarning):
        console.print(f"[yellow]warning:[/] {escape(event.message)}")


def _f(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _finish(handle, outcome: training_events.TrainEvent | None, console) -> int:
    if isinstance(outcome, training_events.Done):
        console.print(f"[green]done[/]: adapter {escape(str(outcome.adapter))}")
        if outcome.gguf:
            console.print(f"GGUF LoRA for llama.cpp: {escape(outcome.gguf)}")
        console.print(f"chat with it: chattune --adapter {escape(handle.name)}")
        return 0
    if isinstance(outcome, training_events.Cancelled):
        console.print(f"cancelled. Continue with: chattune train --resume {escape(handle.name)}")
        return EXIT_CANCELLED
    failed = outcome if isinstance(outcome, training_events.Failed) else training_events.Failed()
    raise ChattuneError(f"training failed: {failed.message or 'unknown error'}",
                        f"the log is {failed.log or handle.log_path}")

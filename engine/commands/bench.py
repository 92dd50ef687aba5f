"""`chattune bench [chat|swap|train|export|all]`: our speed against what users would otherwise run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.bench.common import PARTS, Budget
from engine.cli import positive_int
from engine.errors import ChattuneError
from engine.files import write_json_atomic

DESCRIPTION = """Measure chattune against the usual tools on this machine, in one run: chat speed (our
engines vs raw llama_cpp.Llama and model.generate), adapter hot swap (vs reloading the model with the
adapter), training (our recipe vs a plain transformers Trainer + peft) and the export stages. Each
figure is the median of repeated trials after a warm-up; the ratio says how many times better ours
is (above 1: ours wins). The defaults finish `all` in about 10 minutes on 2 CPU cores with the
embedded model."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure chat, swap, training and export speed against "
                                                 "the usual tools", description=DESCRIPTION)
    parser.add_argument("part", nargs="?", default="all", choices=("all", *PARTS),
                        help="what to measure (default: all)")
    parser.add_argument("--model", "-m", help="a .gguf file, an HF model folder or a cached hub id "
                        "(default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--json", metavar="OUT", help="also write every figure, the settings and the machine "
                                                      "details to this JSON file")
    parser.add_argument("--trials", type=positive_int, default=Budget.trials,
                        help=f"timed trials per measurement after one warm-up (default: {Budget.trials}; "
                             "adapter switches get more, model reloads in transformers at most 3)")
    parser.add_argument("--tokens", type=positive_int, default=Budget.chat_tokens,
                        help=f"reply length in the chat part (default: {Budget.chat_tokens}; the transformers "
                             f"engine gets at most {Budget.hf_chat_tokens})")
    parser.add_argument("--epochs", type=positive_int, default=Budget.train_epochs,
                        help=f"epochs over the bench's 24 examples in the train part (default: "
                             f"{Budget.train_epochs})")
    parser.add_argument("--facts", type=positive_int, default=None,
                        help="the learn part teaches only the first N of its 20 made-up facts (quick checks)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="the train part's recipe (measured against fp32 when not fp32) and both recipes of the "
                             "learn part train in this precision (default: what a run picks)")
    parser.add_argument("--general", type=positive_int, default=None,
                        help="the learn part asks only the first N general prompts (quick checks)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from engine.bench.common import render
    from engine.bench.suite import run_bench
    from engine.models import resolve_model
    from engine.workspace import Workspace

    out = _json_target(args.json) if args.json else None
    workspace = Workspace.open(args.workspace)
    spec = resolve_model(args.model)
    budget = Budget(trials=args.trials, chat_tokens=args.tokens,
                    hf_chat_tokens=min(args.tokens, Budget.hf_chat_tokens), train_epochs=args.epochs,
                    learn_facts=args.facts, learn_general=args.general, precision=args.precision)
    parts = list(PARTS) if args.part == "all" else [args.part]
    errors = Console(stderr=True)
    report = run_bench(parts, workspace, spec, budget, _command(args),
                       progress=lambda message: errors.print(f"[dim]bench:[/] {message}", highlight=False))
    # Piped into a file or README, the table keeps its rows whole instead of wrapping at 80 columns.
    render(report, Console() if sys.stdout.isatty() else Console(width=160))
    if out:
        write_json_atomic(out, report.to_dict())
        print(f"results written to {out}")
    return 1 if any(part.status == "failed" for part in report.parts) else 0


def _command(args) -> str:
    words = ["chattune", "bench", args.part]
    for flag, value, default in (("--model", args.model, None), ("--trials", args.trials, Budget.trials),
                                 ("--tokens", args.tokens, Budget.chat_tokens),
                                 ("--epochs", args.epochs, Budget.train_epochs)):
        if value != default:
            words += [flag, str(value)]
    return " ".join(words)


def _json_target(path: str) -> Path:
    """Checked before the bench starts, so a bad path does not cost a 10-minute run."""
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ChattuneError(f"--json {path} is a folder", "give a file name, e.g. --json bench.json")
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
        raise ChattuneError(f"cannot write --json {path}: {target.parent} is not a writable folder",
                            "give a path in an existing folder you can write to")
    return target

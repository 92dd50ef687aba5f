"""`chattune export`: merge a run's adapter into its base, quantize to GGUF, verify, package for
llama.cpp / Ollama / LM Studio, with a progress bar and a summary."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from rich.markup import escape

from engine.cli import positive_int
from engine.errors import ChattuneError
from engine.export import events as export_events
from engine.export.quants import DEFAULT_QUANTS, QUANTS
from engine.export.verify import AGREEMENT_TARGET, DEFAULT_MAX_TOKENS, DEFAULT_PROMPTS
from engine.workspace import Workspace

EXIT_CANCELLED = 130
EXIT_UNVERIFIED = 1


def register(subparsers) -> None:
    choices = "\n".join(f"  {q.name:7} {q.about}" for q in QUANTS.values())
    p = subparsers.add_parser(
        "export", help="export a run as a merged, quantized GGUF (llama.cpp, Ollama, LM Studio)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Merge a run's adapter into its full-precision base model, convert it to GGUF, quantize\n"
                    "it, run it next to the adapter to check it answers the same and stops, and write an\n"
                    "Ollama Modelfile and a model card beside it.\n\nQuantization types:\n" + choices)
    p.add_argument("--run", "-r", help="the run to export (default: the newest finished run)")
    p.add_argument("--quant", "-q", nargs="+", action="extend", metavar="Q",
                   help=f"one or more of {', '.join(QUANTS)} (default {' '.join(DEFAULT_QUANTS)})")
    p.add_argument("--out", "-o", type=Path, help="export folder, relative to the current folder; new or empty "
                   "(default <workspace>/exports/RUN-DATE-TIME)")
    p.add_argument("--prompts", type=positive_int, default=DEFAULT_PROMPTS,
                   help=f"test prompts to verify with (default {DEFAULT_PROMPTS})")
    p.add_argument("--max-tokens", type=positive_int, default=DEFAULT_MAX_TOKENS,
                   help=f"token limit per verification reply (default {DEFAULT_MAX_TOKENS})")
    p.set_defaults(func=run_export_command)


def run_export_command(args) -> int:
    from engine.export.runner import start_export

    workspace = Workspace.open(args.workspace)
    out = None if args.out is None else str(args.out.expanduser().resolve())  # the user's path, from here
    handle = start_export(workspace, args.run, args.quant, out, prompts=args.prompts, max_tokens=args.max_tokens)
    return follow(handle)


def follow(handle) -> int:
    """The events as a progress bar, then the summary. Ctrl+C cancels (the half-made folder goes)."""
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    from engine.progress import progress_for

    console = Console(stderr=True)
    console.print(f"exporting run [bold]{escape(handle.plan.run)}[/] as {', '.join(handle.plan.quants)} to "
                  f"{escape(str(handle.out_dir))}")
    progress = progress_for(
        console, lambda t: f"{t.fields['stage'] or 'export'} {100 * t.completed:.0f}% {t.description}",
        TextColumn("[bold]{task.fields[stage]:9}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), TextColumn("{task.description}"))
    task = progress.add_task("starting", total=1.0, stage="")

    def on_interrupt(_signum, _frame):
        console.print("cancelling the export...")
        handle.cancel()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with progress:
            for event in handle.events():
                if isinstance(event, export_events.ExportStage):  # a progress event is one too
                    progress.update(task, completed=event.fraction, stage=event.stage or "",
                                    description=event.message)
                elif isinstance(event, export_events.ExportWarning):
                    console.print(f"[yellow]warning:[/] {escape(event.message)}")
                elif isinstance(event, export_events.ExportDone):
                    progress.update(task, completed=1.0, stage="done", description="")
    finally:
        signal.signal(signal.SIGINT, previous)
    return finish(handle.outcome, console)


def finish(outcome: export_events.ExportEvent | None, console) -> int:
    if isinstance(outcome, export_events.ExportCancelledEvent):
        console.print("export cancelled; nothing was kept")
        return EXIT_CANCELLED
    if not isinstance(outcome, export_events.ExportDone):
        failed = outcome if isinstance(outcome, export_events.ExportError) else export_events.ExportError()
        message = failed.message or "unknown error"
        if failed.expected:
            raise ChattuneError(f"export failed: {message}")
        raise ChattuneError(f"export failed: {message}", f"the log is {failed.log}")
    show_summary(outcome, console)
    return 0 if outcome.verified else EXIT_UNVERIFIED


def show_summary(done: export_events.ExportDone, console) -> None:
    from rich.table import Table

    from engine.export.preflight import human_size

    files = Table(title=f"exported to {done.out}", title_justify="left")
    for column in ("file", "size", "what"):
        files.add_column(column, justify="right" if column == "size" else "left")
    for item in done.files:
        files.add_row(item.name, human_size(item.bytes) if item.bytes is not None else "", item.what)
    console.print(files)
    stages = "  ".join(f"{name} {seconds:.1f}s" for name, seconds in done.stages.items())
    console.print(f"time: {done.elapsed_s or 0:.1f}s ({stages})")
    for quant, rate in done.agreement.items():
        with_ties = done.agreement_with_ties[quant]
        colour = "green" if with_ties >= AGREEMENT_TARGET else "yellow"
        close = done.fidelity[quant]
        console.print(f"{quant}: [{colour}]{rate:.0%}[/] of the verification prompts get the adapter's reply "
                      f"({with_ties:.0%} counting near ties); same top token {close.same_top_token:.1%}, "
                      f"KL {close.kl:.3f}")
    if done.verified:
        first = next(iter(done.ggufs.values()))
        console.print("[green]verified[/]: chat template and stop token embedded, every reply stopped by itself.\n"
                      + escape(f"try it: chattune chat --model {done.out}/{first}   "
                               f"or: cd {done.out} && ollama create {done.ollama_name} -f Modelfile"))
    else:
        for problem in done.problems:
            console.print(f"[red]problem:[/] {escape(problem)}")
        console.print(f"[red]not verified[/]: the files are in {escape(done.out)}, but check verify.json before using them")

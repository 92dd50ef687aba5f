"""The export child process:
`python -m engine.export.child --workspace W [--run RUN] [--quant Q ...] [--out DIR] [--prompts N] [--max-tokens N]`.

stdout carries only JSON-line events (see engine.export.pipeline); everything the libraries and
tools print goes to <out>/export.log. SIGTERM or SIGINT cancels: the half-made export folder is
removed. Exit status: 0 done, 1 error, 3 cancelled. It runs at a lower CPU priority, so a chat
next to it stays responsive.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from engine.childproc import EventWriter, redirect_output
from engine.errors import ChattuneError
from engine.export.events import EXPORT_EVENTS
from engine.export.verify import DEFAULT_MAX_TOKENS, DEFAULT_PROMPTS

EXIT_DONE, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3
CPU_NICENESS = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.export.child")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--run")
    parser.add_argument("--quant", action="append")
    parser.add_argument("--out")
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    args = parser.parse_args(argv)
    emit = EventWriter(EXPORT_EVENTS, sys.stdout)

    from engine.export.pipeline import ExportCancelled, run_export
    from engine.export.preflight import LOG_FILE, plan_export
    from engine.workspace import Workspace

    def on_signal(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one cancel; the cleanup is not interrupted again
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"chattune: {signal.Signals(signum).name} received: cancelling", file=sys.stderr, flush=True)
        raise ExportCancelled()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        plan = plan_export(Workspace.open(args.workspace), args.run, args.quant, args.out)
    except ChattuneError as err:
        emit("error", stage="preflight", message=str(err), log=None)
        return EXIT_ERROR
    except ExportCancelled:
        emit("cancelled", stage=None)
        return EXIT_CANCELLED
    emit.stream = redirect_output(plan.out_dir / LOG_FILE)
    try:
        os.nice(CPU_NICENESS)
    except OSError:
        pass
    try:
        run_export(plan, emit, prompts=args.prompts, max_tokens=args.max_tokens)
        return EXIT_DONE
    except ExportCancelled:
        return EXIT_CANCELLED
    except ChattuneError as err:
        print(f"chattune: error: {err}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except BaseException:  # noqa: BLE001 -- run_export has reported it as an error event
        traceback.print_exc()
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

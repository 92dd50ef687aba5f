"""The training child process: `python -m engine.train.child RUN_DIR [--resume]`.

stdout carries only JSON-line events (see engine.train.events); everything else the libraries
print goes to RUN_DIR/train.log. SIGTERM or SIGINT cancels: the run keeps its last checkpoint.
Exit status: 0 done, 1 error, 3 cancelled (0 for a cancelled rank of a multi-GPU run: the launcher
treats any other status as a failure and kills the ranks still saving the checkpoint after 30 s).

On CPU it lowers its own priority, so the chat next to it stays responsive. Started by
`accelerate launch`, it is one rank of a multi-GPU run: rank 0 speaks and saves, the others train.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from engine.childproc import redirect_output
from engine.errors import ChattuneError
from engine.train import lock
from engine.train.events import LOG_FILE, EventLog

EXIT_DONE, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3
CPU_NICENESS = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.train.child")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    rank = int(os.environ.get("RANK", 0))
    log_path = run_dir / LOG_FILE

    events = redirect_output(log_path)
    log = EventLog(run_dir, events, enabled=rank == 0)

    from engine.train.recipe import Cancelled, CancelToken, run

    cancel = CancelToken()

    def on_signal(signum, _frame):
        print(f"chattune: {signal.Signals(signum).name} received: cancelling", file=sys.stderr, flush=True)
        cancel.request()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    held = None
    try:
        if rank == 0:
            held = lock.inherited(run_dir.parent)
            if held is None and lock.FD_ENV not in os.environ:  # started by hand, not by the runner
                held = lock.acquire(run_dir.parent, run_dir.name)
        _lower_priority_on_cpu(run_dir)
        outcome = run(run_dir, log, cancel, resume=args.resume)
        return _cancelled_status() if outcome == "cancelled" else EXIT_DONE
    except Cancelled:
        log.emit("cancelled", step=0, checkpoint=None, log=log_path)
        return _cancelled_status()
    except ChattuneError as err:
        print(f"chattune: error: {err}", file=sys.stderr, flush=True)
        log.emit("error", message=str(err), log=log_path)
        return EXIT_ERROR
    except BaseException as err:  # noqa: BLE001 -- every failure must reach the UI as an event
        traceback.print_exc()
        sys.stderr.flush()
        log.emit("error", message=_describe(err), log=log_path)
        return EXIT_ERROR
    finally:
        if held is not None:
            held.release()


def _cancelled_status() -> int:
    return EXIT_CANCELLED if int(os.environ.get("WORLD_SIZE", 1)) == 1 else EXIT_DONE


def _lower_priority_on_cpu(run_dir: Path) -> None:
    """Training on the CPU yields to the chat. On a GPU the CPU only feeds it, so priority stays."""
    from engine.train.rundir import load_config

    device = load_config(run_dir).device
    if device == "cpu" or device == "auto" and not _cuda_visible():
        try:
            os.nice(CPU_NICENESS)
        except OSError:
            pass


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def _describe(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    if isinstance(err, MemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text} (lower --batch-size or --max-seq-len, or use --qlora)"
    return text.splitlines()[0][:500] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())

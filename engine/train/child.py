"""The training child process's body: it trains the run (engine.train.recipe) and then has it evaluated,
with the evaluation it is handed. Its entry point is engine.jobs.train_and_evaluate, the one module that
knows training, evaluation and export together.

stdout carries only JSON-line events (see engine.runfolder); everything else the libraries
print goes to RUN_DIR/train.log. SIGTERM or SIGINT cancels: the run keeps its last checkpoint.
Exit status: 0 done, 1 error, 3 cancelled (0 for a cancelled rank of a multi-GPU run: the launcher
treats any other status as a failure and kills the ranks still saving the checkpoint after 30 s).

On CPU it lowers its own priority, so the chat next to it stays responsive. Started by
`accelerate launch`, it is one rank of a multi-GPU run: rank 0 speaks and saves, the others train.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine import runlock
from engine.childproc import redirect_output
from engine.errors import ChattuneError
from engine.runfolder import LOG_FILE, EventLog, read_run_config
from engine.train.config import TrainConfig

if TYPE_CHECKING:  # the recipe itself is imported once the output goes to train.log
    from engine.train.recipe import MergedChatSide

EXIT_DONE, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3
CPU_NICENESS = 10


def run_child(run_dir: Path, *, resume: bool, evaluate: Callable[[Path, EventLog], None],
              merged_chat_side: MergedChatSide) -> int:
    """Train `run_dir` (from its last checkpoint if `resume`), then `evaluate` it on rank 0 unless its
    config says not to; `merged_chat_side` builds the chat's adapter when it cannot be a GGUF LoRA."""
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
            held = runlock.inherited(run_dir.parent)
            if held is None and runlock.FD_ENV not in os.environ:  # started by hand, not by the runner
                held = runlock.acquire(run_dir.parent, run_dir.name)
        config = TrainConfig.from_dict(read_run_config(run_dir).config)
        _lower_priority_on_cpu(config.device)
        if run(run_dir, log, cancel, resume=resume, merged_chat_side=merged_chat_side) == "cancelled":
            return _cancelled_status()
        if rank == 0 and config.evaluate:
            evaluate(run_dir, log)
        return EXIT_DONE
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


def _lower_priority_on_cpu(device: str) -> None:
    """Training on the CPU yields to the chat. On a GPU the CPU only feeds it, so priority stays."""
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

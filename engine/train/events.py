"""The training child's voice: one JSON object per line, on stdout (for the runner) and in metrics.jsonl.

Events (every one carries "event" and "t", the unix time):
  status    phase ("base", "data", "load", "best", "save", "gguf", "eval"), message: what the child is busy with
  data      what the SFT mix holds (engine.train.mix): counts such as example-train, rewording-train,
            rewording-val, replay-train, replay-val
  start     run, method, examples (the user's), rows (training rows with rewordings and replay),
            val_examples (validation rows: held-out rewordings and replay), tokens (per epoch), epochs, device, quantization,
            precision, world_size, quantized_layers, step (> 0 when resumed), max_steps,
            trainable_params, total_params, resumed_from (checkpoint path or None)
  step      step, max_steps, epoch, loss, lr, grad_norm, tokens_per_s, eta_s, peak_mem_mb
            (DPO adds reward_margins, reward_accuracies)
  epoch     step, epoch, train_loss (mean of the epoch's logged losses)
  eval      step, epoch, eval_loss (the validation rows, after every epoch; the best epoch's adapter is kept)
  checkpoint step, path
  warning   kind ("few_examples", "overfitting", "too_long", "trimmed",
            "no_checkpoint", "gguf", "eval"), message
  done      adapter, gguf (None when the conversion failed), final_loss, eval_loss, steps,
            tokens_per_s, elapsed_s, cpu_s (CPU seconds the child used)
  scorecard path, verdict, reason, heldout_n, base_f1, adapter_f1, taught, taught_n, reworded,
            reworded_n, kept, general_n, forgetting_score, elapsed_s:
            the evaluation that follows `done` (engine.evaluate; skipped with --no-eval)
  cancelled step, checkpoint (None when cancelled before the first one), log
  error     message, log (and returncode when the runner wrote it for a child that died silently)
Consumers should ignore event kinds and fields they do not know.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import IO

from engine.childproc import parse_event

METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"


class EventLog:
    """Writes each event to the runner's pipe and appends it to the run's metrics.jsonl."""

    def __init__(self, run_dir: Path, stream: IO[str] | None, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.stream = stream
        self.enabled = enabled  # False on the non-main ranks of a multi-GPU run

    def emit(self, event: str, **fields) -> dict:
        record = {"event": event, "t": round(time.time(), 3), **{k: _clean(v) for k, v in fields.items()}}
        if not self.enabled:
            return record
        line = json.dumps(record, ensure_ascii=False)
        with (self.run_dir / METRICS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self.stream is not None:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The runner went away (the TUI quit): keep training, metrics.jsonl still has everything.
                self.stream = None
        return record

    def warn(self, kind: str, message: str) -> dict:
        return self.emit("warning", kind=kind, message=message)


def _clean(value):
    """JSON has no NaN/inf; paths become strings."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    if isinstance(value, Path):
        return str(value)
    return value


def read_events(run_dir: Path) -> list[dict]:
    """Every event a run has written so far (a torn last line from a killed child is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [event for line in lines if (event := parse_event(line))]

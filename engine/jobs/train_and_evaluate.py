"""`python -m engine.jobs.train_and_evaluate RUN_DIR [--resume]`: the training child's entry point
(engine.train.runner starts it). It trains the run (engine.train.child), with export's merged GGUF for
the llama.cpp chat when the adapter cannot be a GGUF LoRA (engine.export.chat_merge), then writes the
finished run's scorecard (engine.evaluate) unless the run's config says not to."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.export.chat_merge import merged_chat_side
from engine.runfolder import EventLog
from engine.scorecard_format import SCORECARD_JSON
from engine.train.child import run_child
from engine.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.jobs.train_and_evaluate")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    return run_child(args.run_dir.resolve(), resume=args.resume, evaluate=evaluate,
                     merged_chat_side=merged_chat_side)


def evaluate(run_dir: Path, log: EventLog) -> None:
    """The run's scorecard, after `done`: the adapter is already usable (and hot-swapped by the app)
    while this runs. A failed evaluation costs the scorecard, never the run; `chattune eval` redoes it."""
    import gc

    gc.collect()  # the trainer's copy of the model goes before the evaluation loads its own
    log.emit("status", phase="eval", message="evaluating: held-out split, forgetting check, verdict")
    try:
        from engine.evaluate.scorecard import evaluate_run

        card = evaluate_run(Workspace(run_dir.parent.parent), run_dir,
                            progress=lambda message: log.emit("status", phase="eval", message=message))
    except Exception as err:  # noqa: BLE001 - any failure here must leave the finished run intact
        log.warn("eval", f"evaluation failed: {type(err).__name__}: {err}; run `chattune eval --run "
                         f"{run_dir.name}` to try again")
        return
    heldout, forgetting, learning = card["heldout"], card["forgetting"], card["learning"]
    log.emit("scorecard", path=run_dir / SCORECARD_JSON, verdict=card["verdict"]["label"],
             reason=card["verdict"]["reason"], heldout_n=heldout["n"],
             base_f1=heldout["base"]["f1"], adapter_f1=heldout["adapter"]["f1"],
             taught=learning["taught"]["recalled"], taught_n=learning["taught"]["n"],
             reworded=learning["reworded"]["recalled"], reworded_n=learning["reworded"]["n"],
             kept=forgetting["kept"], general_n=forgetting["n"],
             forgetting_score=forgetting["score"], elapsed_s=card["elapsed_s"])


if __name__ == "__main__":
    sys.exit(main())

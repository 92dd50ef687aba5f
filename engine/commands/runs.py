"""`chattune runs [RUN]`: the training runs in the workspace, or one run in detail."""

from __future__ import annotations

import json

from engine.text import number
from engine.workspace import Workspace


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list training runs (status, losses), or show one",
                              description="Training runs, oldest first, with their status read from the run "
                                          "folders. Name a run to see its config, metrics and files.")
    p.add_argument("run", nargs="?", help="show this run in detail")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--data", action="store_true",
                   help="with RUN: every row it trained and validated on (your examples, their rewordings, replay)")
    p.set_defaults(func=run_runs)


def run_runs(args) -> int:
    from engine.runfolder import list_runs, load_run

    workspace = Workspace.open(args.workspace)
    if args.run:
        from engine.runfolder import read_run_config

        run_dir = workspace.run_dir(args.run)
        read_run_config(run_dir)  # a clear error when it is not a run
        info = load_run(run_dir)
        if args.data:
            return _show_data(run_dir, args.json)
        return _show_json([info]) if args.json else _show_one(info)
    runs = list_runs(workspace)
    if args.json:
        return _show_json(runs)
    if not runs:
        print(f"no training runs yet in {workspace.runs_dir} (start one with `chattune train`)")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "status", "method", "examples", "steps", "train loss", "eval loss", "created")
    for info in runs:
        table.add_row(info.name, info.status, info.method, f"{info.examples} (+{info.val_examples} for validation)",
                      f"{info.step}/{info.max_steps}" if info.max_steps else "-", number(info.final_loss, '.4f'),
                      number(info.eval_loss, '.4f'), info.created_at.replace("T", " ")[:16])
    Console().print(table)
    return 0


def _show_one(info) -> int:
    print(f"run        {info.name}  ({info.status})")
    print(f"folder     {info.run_dir}")
    print(f"base       {info.base}")
    print(f"method     {info.method}, {info.examples} of your examples, {info.val_examples} validation rows")
    print(f"progress   step {info.step}/{info.max_steps}, train loss {number(info.final_loss, '.4f')}, "
          f"eval loss {number(info.eval_loss, '.4f')}" + (f", {info.elapsed_s:.0f} s" if info.elapsed_s else ""))
    if info.message:
        print(f"note       {info.message}")
    if info.adapter:
        print(f"adapter    {info.adapter}")
    if info.gguf:
        print(f"gguf       {info.gguf}")
    print(f"log        {info.log}")
    print("config     " + ", ".join(f"{k}={v}" for k, v in info.config.items() if v not in (None, {}, [])))
    if info.eval_losses:
        print("eval loss  " + "  ".join(f"step {step}: {loss:.4f}" for step, loss in info.eval_losses))
    counts = _mix_counts(info.run_dir)
    if counts:
        print("data       " + ", ".join(f"{n} {what}" for what, n in counts.items())
              + f" (chattune runs {info.name} --data lists them)")
    return 0


def _mix_counts(run_dir) -> dict:
    from engine.train.prepare import read_listing

    counts: dict = {}
    for line in read_listing(run_dir):
        what = {"example": "examples", "rewording": "rewordings", "replay": "replay"}[line["kind"]]
        key = f"{what} ({'trained' if line['split'] == 'train' else 'validation'})"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _show_data(run_dir, as_json: bool) -> int:
    """The run's augment.jsonl: what it trained on and what it held out, and where each row came from."""
    from rich.console import Console
    from rich.table import Table

    from engine.text import clip
    from engine.train.prepare import read_listing

    listing = read_listing(run_dir)
    if as_json:
        print(json.dumps(listing, indent=2, ensure_ascii=False))
        return 0
    if not listing:
        print(f"run {run_dir.name} lists no data (a DPO run, or one from before rewordings and replay)")
        return 0
    table = Table("split", "kind", "source", "question", "answer", "system prompt")
    for line in sorted(listing, key=lambda line: (line["split"] != "train", line["kind"], line["question"])):
        table.add_row("trained" if line["split"] == "train" else "validation", line["kind"], line["source"],
                      clip(line["question"], 60), clip(line["answer"], 40), "yes" if line["system"] else "no")
    Console().print(table)
    return 0


def _show_json(runs) -> int:
    print(json.dumps([{
        "name": r.name, "status": r.status, "method": r.method, "examples": r.examples,
        "val_examples": r.val_examples, "step": r.step, "max_steps": r.max_steps, "final_loss": r.final_loss,
        "eval_loss": r.eval_loss, "created_at": r.created_at, "message": r.message, "run_dir": str(r.run_dir),
        "adapter": str(r.adapter) if r.adapter else None, "gguf": str(r.gguf) if r.gguf else None,
        "config": r.config,
    } for r in runs], indent=2))
    return 0

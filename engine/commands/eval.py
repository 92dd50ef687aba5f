"""`chattune eval`: the runs' scorecards (held-out score, forgetting, verdict, A/B) as rich tables."""

from __future__ import annotations

from engine.cli import positive_int
from engine.errors import ChattuneError
from engine.workspace import Workspace


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="score runs: held-out answers, forgetting, training health, A/B votes",
        description="Show each finished run's scorecard: its held-out score against the base, how many "
                    "general prompts it still answers as the base did, a training-health verdict and "
                    "the A/B win rate. Runs without a current scorecard are evaluated first "
                    "(the training child normally does this at the end of each run).")
    p.add_argument("--run", "-r", help="one run in detail (default: a table of all runs)")
    p.add_argument("--refresh", action="store_true", help="evaluate again even if a current scorecard exists")
    p.add_argument("--general", type=positive_int, metavar="N",
                   help="use only the first N general prompts when evaluating (quicker, less thorough)")
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from rich.console import Console

    from engine.evaluate.scorecard import current_ab, evaluate_run, is_current
    from engine.scorecard_format import load_scorecard

    workspace = Workspace.open(args.workspace)
    console = Console(highlight=False)
    run_dirs = [workspace.run_dir(args.run)] if args.run else _finished_runs(workspace)
    if args.run and not (run_dirs[0] / "config.json").is_file():
        raise ChattuneError(f"no run named {args.run!r} in {workspace.runs_dir}", "list runs with `chattune runs`")
    if not run_dirs:
        console.print(f"No finished runs in {workspace.runs_dir} yet: train one with `chattune train`.")
        return 0
    cards = []
    for run_dir in run_dirs:
        card = load_scorecard(run_dir)
        if args.refresh or not is_current(card, run_dir):
            with console.status(f"evaluating {run_dir.name}…") as status:
                card = evaluate_run(workspace, run_dir, progress=lambda m, s=status, n=run_dir.name:
                                    s.update(f"{n}: {m}"), general_limit=args.general)
        card["ab"] = current_ab(workspace, card["run"])
        cards.append(card)
    if args.run:
        _print_detail(console, cards[0], run_dirs[0])
    else:
        console.print(runs_table(cards))
    return 0


def _finished_runs(workspace: Workspace) -> list:
    from engine.runfolder import list_runs

    return [info.run_dir for info in list_runs(workspace) if info.status == "done" and (info.adapter or info.gguf)]


def runs_table(cards: list[dict]):
    """One row per run: held-out base → adapter, forgetting, verdict, A/B."""
    from rich.table import Table
    from rich.text import Text

    from engine.scorecard_format import summary_row
    from engine.text import number, percent

    # Short headers, "a→b" cells and no borders: the table fits 80 columns without cutting.
    # worded: recall on rewordings never trained on; test: the examples you pinned to test (F1 base→adapter)
    table = Table(title="Taught and reworded recall, pinned test F1 (base→adapter), general answers kept",
                  box=None, header_style="bold underline")
    for column in ("run", "taught", "worded", "test", "F1", "kept", "broke", "verdict", "A/B won"):
        table.add_column(column, justify="left" if column in ("run", "verdict") else "right", no_wrap=True)
    for card in cards:
        row = summary_row(card)
        held = bool(row["heldout_n"])
        table.add_row(
            Text(row["run"]), f"{row['taught']}/{row['taught_n']}",
            f"{row['reworded']}/{row['reworded_n']}" if row["reworded_n"] else "-", str(row["heldout_n"]),
            f"{number(row['base_f1'])}→{number(row['adapter_f1'])}" if held else "-",
            f"{row['kept']}/{row['general_n']}", str(row["broken"]),
            Text(row["verdict"], style=_VERDICT_STYLE.get(row["verdict"], "")),
            f"{percent(row['win_rate'])} of {row['votes']}" if row["votes"] else "-",
        )
    return table


_VERDICT_STYLE = {"good": "green", "overfitting": "red", "underfitting": "yellow", "too little data": "yellow"}


def _print_detail(console, card: dict, run_dir) -> None:
    from rich.table import Table
    from rich.text import Text

    from engine.scorecard_format import ab_line, change_note, forgetting_line, perplexity_line, recall_line
    from engine.text import clip, number, percent

    heldout, forgetting, verdict = card["heldout"], card["forgetting"], card["verdict"]
    console.print(Text(f"Run {card['run']}: base {card['base_model']}, {card['engine']} engine, "
                       f"evaluated {card['evaluated_at']} ({card['elapsed_s']:.0f} s)", style="bold"))
    console.print(Text.assemble(("Training health: ", "bold"), (verdict["label"], _VERDICT_STYLE[verdict["label"]]),
                                f" ({verdict['reason']})"))

    console.print(Text(f"Learned, asked under the default system prompt: {recall_line(card['learning'])}"))
    missed = card["learning"]["taught"]["missed"] + card["learning"]["reworded"]["missed"]
    if missed:
        table = Table(title="Not recalled")
        for column in ("question", "taught answer", "reply"):
            table.add_column(column)
        for e in missed:
            table.add_row(*(Text(clip(e[key], 40)) for key in ("prompt", "reference", "reply")))
        console.print(table)

    table = Table(title=f"Held-out score: {heldout['n']} examples ({heldout['source']})")
    for column in ("", "exact match", "token F1", "log-likelihood/token"):
        table.add_column(column, justify="right" if column else "left")
    for side in ("base", "adapter"):
        s = heldout[side]
        table.add_row(side, percent(s["exact_match"]), number(s["f1"]), number(s["loglik"]))
    console.print(table)
    changed = [e for e in heldout["examples"] if e["change"] != "same"]
    if changed:
        table = Table(title=f"{heldout['better']} better, {heldout['worse']} worse")
        for column in ("", "prompt", "reference", "base", "adapter"):
            table.add_column(column)
        for e in changed:
            table.add_row(Text(e["change"], style="green" if e["change"] == "better" else "red"),
                          *(Text(clip(e[key], 40)) for key in ("prompt", "reference", "base_answer", "adapter_answer")))
        console.print(table)

    console.print(Text(f"Forgetting: {forgetting_line(forgetting)}"))
    ppl = perplexity_line(forgetting)
    if ppl:
        console.print(Text(ppl))
    if forgetting["changed"]:
        table = Table(title="General prompts the adapter answers differently")
        for column in ("prompt", "category", "base", "adapter", ""):
            table.add_column(column)
        for c in forgetting["changed"]:
            note = Text(change_note(c), style={"broken": "red", "fixed": "green"}.get(change_note(c), ""))
            table.add_row(Text(c["id"]), c["category"], Text(clip(c["base_answer"], 40)),
                          Text(clip(c["adapter_answer"], 40)), note)
        console.print(table)
    console.print(Text(f"A/B: {ab_line(card['ab'])}"))
    console.print(Text(f"Scorecard: {run_dir / 'scorecard.md'}", style="dim"))

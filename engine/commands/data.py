"""`chattune data`: look at, fix, split, import and export the feedback store."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from engine.errors import ChattuneError
from engine.formats import FORMATS, VIEWS, export_file, import_file
from engine.splits import SPLITS
from engine.store import KINDS, FeedbackStore, Record
from engine.text import clip
from engine.workspace import Workspace

EXPORT_PATH_HELP = "the file to write, relative to the current folder (an existing one needs --force)"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="look at, edit, import and export your feedback data",
        description="The feedback store: every approval, correction, flag and A/B vote. "
                    "With no action, shows the stats.")
    parser.set_defaults(func=run_stats)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    actions.add_parser("stats", help="counts by kind and split").set_defaults(func=run_stats)

    p = actions.add_parser("list", help="records, newest first")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--split", choices=SPLITS)
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--offset", type=int, default=0, help="skip this many newest ones first")
    p.set_defaults(func=run_list)

    p = actions.add_parser("show", help="one record in full")
    p.add_argument("id", type=int)
    p.set_defaults(func=run_show)

    p = actions.add_parser("edit", help="write the correction in $EDITOR (a flagged or approved record "
                                        "becomes corrected)")
    p.add_argument("id", type=int)
    p.set_defaults(func=run_edit)

    p = actions.add_parser("rm", help="delete records (asks first unless --yes)")
    p.add_argument("ids", type=int, nargs="+", metavar="ID")
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    p.set_defaults(func=run_rm)

    p = actions.add_parser("split", help="pin a record to a split")
    p.add_argument("id", type=int)
    p.add_argument("split", choices=SPLITS)
    p.set_defaults(func=run_split)

    p = actions.add_parser("import", help="add examples from a file (all or nothing)",
                           description="Import OpenAI chat JSONL, ShareGPT, Alpaca or DPO JSONL (or a JSON "
                                       "array of such objects). Chat formats become approved records, DPO "
                                       "pairs become corrected ones. Duplicates are skipped and counted.")
    p.add_argument("file", type=Path)
    p.add_argument("--format", "-f", choices=FORMATS, help="default: detected from the first record's keys")
    p.set_defaults(func=run_import)

    p = actions.add_parser("export", help="write a training view to a JSONL file",
                           description=f"Write JSONL, oldest record first. FILE: {EXPORT_PATH_HELP}.")
    p.add_argument("file", type=Path, help=EXPORT_PATH_HELP)
    p.add_argument("--format", "-f", choices=FORMATS,
                   help="default: openai, or dpo with --view dpo")
    p.add_argument("--split", choices=SPLITS, help="only this split (default: all)")
    p.add_argument("--view", choices=VIEWS, help="sft: approved + corrected; dpo: corrected + A/B votes "
                                                 "(default: dpo for --format dpo, else sft)")
    p.add_argument("--force", action="store_true", help="write over FILE if it exists")
    p.set_defaults(func=run_export)


def _open(args: argparse.Namespace) -> tuple[Workspace, FeedbackStore]:
    workspace = Workspace.open(getattr(args, "workspace", None))
    return workspace, FeedbackStore(workspace.db_path)


def _console():
    from rich.console import Console

    return Console(highlight=False)


def run_stats(args) -> int:
    from rich.table import Table

    _, store = _open(args)
    with store:
        stats = store.stats()
    learned = stats["sft"]["train"]
    print(f"{stats['total']} records, {stats['usable']} usable for training; the next SFT run learns all "
          f"{learned} approved or corrected examples in train"
          + (f", not the {stats['sft']['test']} you pinned to test (a held-out exam)" if stats["sft"]["test"] else ""))
    table = Table()
    table.add_column("")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_column("all", justify="right")
    for kind in KINDS:
        table.add_row(kind, *(str(stats["kind_splits"][kind][s]) for s in SPLITS), str(stats["kinds"][kind]))
    table.add_section()
    for view in ("sft", "dpo"):
        table.add_row(f"{view} examples", *(str(stats[view][s]) for s in SPLITS), str(sum(stats[view].values())))
    table.add_row("records", *(str(stats["splits"][s]) for s in SPLITS), str(stats["total"]))
    _console().print(table)
    if stats["kinds"]["flagged"]:
        print(f"{stats['kinds']['flagged']} flagged records wait for a correction: chattune data list --kind flagged")
    return 0


def run_list(args) -> int:
    from rich.table import Table
    from rich.text import Text  # user text: "[b]" in a prompt is not markup

    _, store = _open(args)
    with store:
        records = store.records(kind=args.kind, split=args.split, limit=args.limit, offset=args.offset)
        total = store.stats()["total"]
    table = Table(caption=f"{len(records)} shown of {total}; * = split pinned by you")
    # Short columns keep their width (rich would shrink them to nothing on 80 columns); the prompt
    # and the answer share what is left, 3:2, cut with an ellipsis.
    console = _console()
    fixed = [max([2] + [len(str(r.id)) for r in records]), max(len(k) for k in KINDS), len("train*"),
             len("11-30 02:29")]
    left = max(20, console.width - sum(fixed) - 3 * 6 - 1)  # 6 columns: a border and 2 spaces each
    table.add_column("id", justify="right", no_wrap=True, min_width=fixed[0])
    table.add_column("kind", no_wrap=True, min_width=fixed[1])
    table.add_column("split", no_wrap=True, min_width=fixed[2])
    table.add_column("prompt", overflow="ellipsis", no_wrap=True, max_width=left * 3 // 5)
    table.add_column("answer", overflow="ellipsis", no_wrap=True, max_width=left - left * 3 // 5)
    table.add_column("created", no_wrap=True, min_width=fixed[3])
    for r in records:
        answer = r.answer if r.kind != "flagged" else f"(flagged) {r.reason or r.reply}"
        table.add_row(str(r.id), r.kind, r.split + ("*" if r.split_pinned else ""), Text(clip(r.prompt, 80)),
                      Text(clip(answer, 60)), r.created_at[5:16].replace("T", " "))
    console.print(table)
    return 0


def run_show(args) -> int:
    _, store = _open(args)
    with store:
        record = store.get(args.id)
    console = _console()
    console.print(f"record {record.id}: {record.kind}, split {record.split}"
                  f"{' (pinned)' if record.split_pinned else ''}", markup=False)
    console.print(f"model {record.model or '-'}, adapter {record.adapter or '-'}, params {record.params or '-'}",
                  markup=False)
    console.print(f"created {record.created_at}, updated {record.updated_at}", markup=False)
    if record.meta:
        console.print(f"meta {record.meta}", markup=False)
    for message in record.messages:
        _section(console, message["role"], message["content"])
    for title, text in _answers(record):
        _section(console, title, text)
    return 0


def _answers(record: Record) -> list[tuple[str, str]]:
    if record.kind == "approved":
        return [("reply (approved)", record.reply)]
    if record.kind == "preference":
        return [(f"chosen ({record.meta.get('chosen_by') or '?'})", record.correction),
                (f"rejected ({record.meta.get('rejected_by') or '?'})", record.reply)]
    shown = [("reply (wrong)", record.reply)]
    if record.reason:
        shown.append(("reason", record.reason))
    if record.correction is not None:
        shown.append(("correction", record.correction))
    return shown


def _section(console, title: str, text: str) -> None:
    console.rule(title, align="left")
    console.print(text, markup=False)


def run_edit(args) -> int:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise ChattuneError("no editor to open", "set $EDITOR (for example EDITOR=nano)")
    _, store = _open(args)
    with store:
        record = store.get(args.id)
        if record.kind == "preference":
            raise ChattuneError(f"record {record.id} is an A/B vote; its replies cannot be edited",
                                "delete it and vote again")
        before = record.correction if record.correction is not None else record.reply
        fd, name = tempfile.mkstemp(prefix=f"chattune-correction-{record.id}-", suffix=".md")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(before + "\n")
            try:
                status = subprocess.run([*shlex.split(editor), name]).returncode
            except OSError as err:
                raise ChattuneError(f"cannot run editor {editor!r}: {err.strerror}", "check $EDITOR") from err
            if status != 0:
                raise ChattuneError(f"the editor exited with status {status}; nothing changed")
            after = Path(name).read_text(encoding="utf-8").rstrip()
        finally:
            Path(name).unlink(missing_ok=True)
        if not after:
            raise ChattuneError("the correction is empty; nothing changed", "write the right answer")
        if after == before.rstrip():
            print(f"unchanged; record {record.id} left as it was")
            return 0
        store.set_correction(record.id, after)
    print(f"record {record.id} is now corrected")
    return 0


def run_rm(args) -> int:
    _, store = _open(args)
    with store:
        records = [store.get(record_id) for record_id in args.ids]
        if not args.yes:
            if not sys.stdin.isatty():
                raise ChattuneError("refusing to delete without confirmation (no terminal to ask on)",
                                    "pass --yes to delete")
            for r in records:
                print(f"  {r.id} {r.kind}: {clip(r.prompt, 70)}")
            try:
                answer = input(f"Delete {len(records)} record{'s' * (len(records) > 1)}? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        with store.transaction():
            for r in records:
                store.delete(r.id)
    print(f"deleted {len(records)} record{'s' * (len(records) > 1)}: {', '.join(str(r.id) for r in records)}")
    return 0


def run_split(args) -> int:
    _, store = _open(args)
    with store:
        store.set_split(args.id, args.split)
    print(f"record {args.id} is pinned to {args.split}")
    return 0


def run_import(args) -> int:
    _, store = _open(args)
    path = args.file.expanduser()
    with store:
        result = import_file(store, path, args.format)
        usable = store.stats()["usable"]
    print(f"imported {result.added} records from {path} ({result.format}); "
          f"skipped {result.duplicates} duplicate{'s' * (result.duplicates != 1)}; {usable} usable in the store")
    return 0


def writable_target(file: Path, force: bool) -> Path:
    """A file the user named: relative to the current folder, and never written over without --force."""
    target = file.expanduser().absolute()
    if target.is_dir():
        raise ChattuneError(f"{file} is a folder", "name a file to write, e.g. out.jsonl")
    if target.exists() and not force:
        raise ChattuneError(f"{file} already exists", "pass --force to write over it, or name another file")
    return target


def run_export(args) -> int:
    target = writable_target(args.file, args.force)
    _, store = _open(args)
    with store:
        fmt = args.format or ("dpo" if args.view == "dpo" else "openai")
        result = export_file(store, target, fmt, split=args.split, view=args.view)
    print(f"wrote {result.count} {result.view} examples ({result.format}) to {result.path}")
    return 0

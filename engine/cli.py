"""The `chattune` command line. Each subcommand lives in engine/commands/<name>.py with a
`register(subparsers)` that sets `func(args) -> int`. The TUI entry (tui/cli.py) passes in the
`chat` handler, so this module never imports textual.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from engine import __version__
from engine.errors import ChattuneError

COMMANDS = ("ask", "data", "train", "runs", "export", "eval", "bench")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", help="a .gguf file, an HF model folder or a cached hub id "
                        "(default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--engine", choices=("llamacpp", "transformers"), default=None,
                        help="inference engine (default: llamacpp for GGUF, transformers for HF folders)")
    parser.add_argument("--adapter", "-a", help="a run name, run folder or GGUF LoRA to load")
    parser.add_argument("--system", default="default", help="system prompt from prompts/system/ (default: default)")
    parser.add_argument("--template", help="chat-template override from prompts/templates/")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def build_parser(chat: Callable | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chattune",
        description="Chat with a local model, correct it, fine-tune it in the background, export it as GGUF.",
    )
    parser.add_argument("--version", action="version", version=f"chattune {__version__}")
    parser.add_argument("--workspace", "-w", help="folder for your data, runs and exports "
                        "(default: $CHATTUNE_WORKSPACE, else ./models)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chat_parser = sub.add_parser("chat", help="open the chat app (the default)")
    add_model_options(chat_parser)
    chat_parser.set_defaults(func=chat)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"engine.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"engine.commands.{name}":
                raise
            continue  # not built yet
        module.register(sub)
    parser.set_defaults(_commands=frozenset(sub.choices))
    return parser


def main(argv: list[str] | None = None, chat: Callable | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(chat)
    if not _names_command(argv, parser):
        # Bare `chattune` (maybe with --workspace/--model ...) opens the chat app.
        argv = _insert_chat(argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ChattuneError as err:
        print(f"chattune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chattune: interrupted", file=sys.stderr)
        return 130


def _names_command(argv: list[str], parser: argparse.ArgumentParser) -> bool:
    if any(flag in argv for flag in ("-h", "--help", "--version")):
        return True
    return any(token in parser.get_default("_commands") for token in argv)


def _insert_chat(argv: list[str]) -> list[str]:
    """Global options stay before `chat`; the rest (model options) go after it."""
    head: list[str] = []
    rest = list(argv)
    while rest and rest[0] in ("--workspace", "-w"):
        head += rest[:2]
        rest = rest[2:]
    return head + ["chat"] + rest

"""The `chattune` command line. Each subcommand lives in engine/commands/<name>.py with a
`register(subparsers)` that sets `func(args) -> int`. The TUI entry (tui/cli.py) passes in the
`chat` handler, so this module never imports textual.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from engine import __version__
from engine.errors import ChattuneError

COMMANDS = ("ask", "data", "train", "runs", "export", "eval", "bench", "doctor", "models")


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
    add_verbose_option(parser, default=False)
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
    for command in sub.choices.values():  # `chattune ask -v ...` as well as `chattune -v ask ...`
        add_verbose_option(command, default=argparse.SUPPRESS)
    parser.set_defaults(_commands=frozenset(sub.choices))
    return parser


def add_verbose_option(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", default=default,
                        help="show the log lines of llama.cpp, transformers and the other libraries")


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
    from engine import quiet

    quiet.configure(args.verbose)
    try:
        with _workspace_for_children(args.workspace):
            return int(args.func(args) or 0)
    except ChattuneError as err:
        print(f"chattune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chattune: interrupted", file=sys.stderr)
        return 130


@contextmanager
def _workspace_for_children(workspace: str | None) -> Iterator[None]:
    """--workspace, as an absolute path in $CHATTUNE_WORKSPACE while the command runs: the child
    processes it starts and the prompt lookups (<workspace>/prompts) then see the same workspace."""
    from engine.workspace import ENV_VAR, workspace_root

    if workspace is None:
        yield
        return
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(workspace_root(workspace))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


def _names_command(argv: list[str], parser: argparse.ArgumentParser) -> bool:
    if any(flag in argv for flag in ("-h", "--help", "--version")):
        return True
    return any(token in parser.get_default("_commands") for token in argv)


def _insert_chat(argv: list[str]) -> list[str]:
    """Global options stay before `chat`; the rest (model options) go after it."""
    head: list[str] = []
    rest = list(argv)
    while rest and rest[0] in ("--workspace", "-w", "--verbose", "-v"):
        take = 2 if rest[0] in ("--workspace", "-w") else 1
        head += rest[:take]
        rest = rest[take:]
    return head + ["chat"] + rest


if __name__ == "__main__":  # the evaluation child (engine.evaluate.runner) runs `python -m engine.cli eval`
    sys.exit(main())

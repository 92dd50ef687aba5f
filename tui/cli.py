"""Console entry point: `chattune` opens the chat app; subcommands run from engine.cli."""

from __future__ import annotations

import sys


def run_chat(args) -> int:
    from tui.app import run_app  # imported late: `chattune ask` never loads Textual

    return run_app(args)


def main(argv: list[str] | None = None) -> int:
    from engine.cli import main as engine_main

    return engine_main(argv, chat=run_chat)


if __name__ == "__main__":
    sys.exit(main())

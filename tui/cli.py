"""Console entry point: `chattune` opens the chat app; subcommands run from the engine's command line."""

from __future__ import annotations

import sys


def run_chat(args) -> int:
    from tui.app import run_app  # imported late: `chattune ask` never loads Textual

    return run_app(args)


def main(argv: list[str] | None = None) -> int:
    from engine.api import run_command_line

    return run_command_line(argv, chat=run_chat)


if __name__ == "__main__":
    sys.exit(main())

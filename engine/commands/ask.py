"""`chattune ask "PROMPT"`: one question, the reply streamed to stdout (or base then adapter with --ab)."""

from __future__ import annotations

import sys

from engine.cli import add_model_options, positive_int
from engine.engines.base import GenParams
from engine.errors import ChattuneError


def register(subparsers) -> None:
    parser = subparsers.add_parser("ask", help="ask one question and stream the reply to stdout")
    parser.add_argument("prompt", help="the question")
    add_model_options(parser)
    parser.add_argument("--ab", action="store_true",
                        help="answer twice: with the base model, then with --adapter (default: the newest "
                             "trained adapter), each under a header")
    parser.add_argument("--max-tokens", type=positive_int, default=GenParams.max_tokens,
                        help=f"longest reply in tokens (default: {GenParams.max_tokens})")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.adapters import newest_adapter, resolve_adapter
    from engine.model_catalog import listed_here
    from engine.prompts import system_prompt
    from engine.session import open_chat
    from engine.workspace import Workspace, workspace_root

    args.model = listed_here(args.model, workspace_root(args.workspace))  # --model N: `chattune models`' Nth
    if args.ab and not args.adapter:
        newest = newest_adapter(Workspace.open(args.workspace), args.model)
        if newest is None:
            raise ChattuneError("--ab compares the base model with an adapter, but no adapter is trained on this "
                                "model yet",
                                "train one with `chattune train`, or name one with --adapter RUN_OR_FILE")
        args.adapter = newest.name
    system = system_prompt(args.system, args.workspace)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": args.prompt}]
    params = GenParams(max_tokens=args.max_tokens)
    workspace, _spec, engine = open_chat(args)
    try:
        if not args.ab:
            _speak(engine, messages, params, header=False)
            return 0
        adapter = resolve_adapter(workspace, args.adapter).name
        for choice in (None, adapter):
            engine.set_adapter(choice)
            _speak(engine, messages, params, header=True)
        return 0
    finally:
        engine.close()


def _speak(engine, messages: list[dict], params: GenParams, header: bool) -> None:
    reply = engine.stream(messages, params)
    if header:
        print(f"== {reply.speaker} ==", flush=True)
    for piece in reply:
        sys.stdout.write(piece)
        sys.stdout.flush()
    print(flush=True)
    if reply.finish_reason == "length":
        print(f"chattune: the reply was cut at {params.max_tokens} tokens (raise --max-tokens)", file=sys.stderr)

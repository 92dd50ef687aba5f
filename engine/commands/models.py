"""`chattune models`: every model that opens here with no download, and what chattune can do with it."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the models you can open here without a download",
        description="The embedded model, GGUF files in the workspace, the Hugging Face cache, Ollama's blobs and "
                    "LM Studio's models folder, and HF model folders in the Hugging Face cache: architecture, "
                    "size, quantization, chat template, and whether chattune can train, hot-swap and export "
                    "each. Open one with `chattune --model PATH`.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_models)


def run_models(args) -> int:
    import logging

    from engine.model_catalog import local_models
    from engine.workspace import workspace_root

    logging.getLogger("hf-to-gguf").setLevel(logging.ERROR)  # the converter's notes on modules it skips
    entries = local_models(workspace_root(args.workspace))
    if args.json:
        print(json.dumps([entry.as_dict() for entry in entries], indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from engine.export.preflight import human_size

    table = Table("#", "model · where", "arch", "size", "quant", "template", "train", "swap", "export")
    for number, e in enumerate(entries, 1):
        table.add_row(str(number), f"{escape(e.name)} · {e.source}", e.architecture, human_size(e.size_bytes),
                      e.quantization, e.template, _yes(e.train), e.hot_swap if e.hot_swap != "no" else "[red]no[/]",
                      _yes(e.export))
    console = Console()
    console.print(table)
    for number, e in enumerate(entries, 1):  # whole paths, to copy after --model
        console.print(f"{number:>3}  {e.path}", highlight=False, markup=False, soft_wrap=True)
    console.print("hot-swap 'tested': the GGUF LoRA matches peft token for token in chattune's tests; "
                  "'converter': made by llama.cpp's converter classes for that architecture, not tested here. "
                  "'none → NAME': the model has no chat template, and the chat uses NAME.", highlight=False)
    notes = [f"{e.name}: {e.note}" for e in entries if e.note]
    for note in notes:
        console.print(note, highlight=False, markup=False)
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "[red]no[/]"

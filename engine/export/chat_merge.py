"""The adapter for the llama.cpp chat when it cannot be a GGUF LoRA (DoRA, trained embeddings, a layout
the converter reshapes): base and adapter merged into one GGUF that the chat loads as the adapter side.

Q8_0, straight from the converter: close to the merged weights (a LoRA's small update survives 8
bits, where a 4-bit rounding would erase much of it) at half the size of F16, with no quantize pass.
The chat loads it as a second model beside the base, so it costs that model's memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from engine.adapters import MERGED_FILE
from engine.errors import ChattuneError

MERGED_TYPE = "q8_0"
MERGE_LOG = "merge.log"  # the converter's output, in the run folder


def merged_chat_side(peft_dir: Path, base_dir: Path, run_dir: Path, why: ChattuneError,
                     say: Callable[[str], None] = lambda _msg: None) -> str:
    """Build `run_dir`/adapter-merged.gguf after the GGUF LoRA conversion failed with `why`; returns the
    one line that tells the user what the chat will do instead."""
    from engine.export.convert import convert_to_gguf
    from engine.export.merge import merge_adapter

    run_dir = Path(run_dir)
    work = run_dir / ".merged-hf"
    say("merging base and adapter into one GGUF for the llama.cpp chat")
    try:
        merge_adapter(Path(base_dir), Path(peft_dir), work, say=say)
        convert_to_gguf(work, run_dir / MERGED_FILE, MERGED_TYPE, name=run_dir.name, log_path=run_dir / MERGE_LOG)
    except (ChattuneError, OSError, ValueError, RuntimeError) as err:
        return (f"no GGUF LoRA for llama.cpp ({why.problem}), and merging base and adapter failed too ({err}): "
                "the adapter works with --engine transformers")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return (f"no GGUF LoRA for llama.cpp ({why.problem}): the chat loads base and adapter merged into {MERGED_FILE} "
            f"({MERGED_TYPE.upper()}) as the adapter side instead, a second model in memory")

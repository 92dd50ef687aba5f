"""The llama.cpp baseline: llama_cpp.Llama built the way a llama-cpp-python user builds it."""

from __future__ import annotations

import threading
from pathlib import Path

from engine.engines.llamacpp import MAX_CTX

# What the bench says about the one setting both sides share.
GUARD_NOTE = ("both sides load with use_extra_bufts=False: llama.cpp's AMX weight repacking segfaults on "
              "quantized models with a native build on AMX CPUs, so raw Llama() needs it too on such machines")
_LOCK = threading.Lock()


def raw_llama(path: Path, threads: tuple[int, int], lora_path: Path | None = None):
    """`Llama(path, lora_path=..., n_ctx, n_threads, n_threads_batch)` with our engine's context size and
    threads (`engine.threads`: the thread count changes llama.cpp's speed far more than any Python around
    it), and use_extra_bufts=False (see GUARD_NOTE), which Llama() only takes through the default model
    params it builds."""
    import llama_cpp
    from llama_cpp import llama_cpp as lib

    default_params = lib.llama_model_default_params

    def guarded():
        params = default_params()
        params.use_extra_bufts = False
        return params

    with _LOCK:
        lib.llama_model_default_params = guarded
        try:
            return llama_cpp.Llama(str(path), lora_path=str(lora_path) if lora_path else None, n_ctx=MAX_CTX,
                                   n_threads=threads[0], n_threads_batch=threads[1], verbose=False)
        finally:
            lib.llama_model_default_params = default_params

"""What the libraries print: nothing in normal output, everything with `-v`.

llama.cpp logs through a C callback (llama-cpp-python's own prints some lines whatever `verbose`
says); transformers and huggingface_hub through Python logging and tqdm bars, which environment
variables turn off (in the training and export children too: a bar redrawn in a log file is noise).
`configure` is called once by the CLI before any of them is imported; `quiet_llama_cpp` by the code
that loads llama.cpp, so `chattune --help` and the TUI import neither library.
"""

from __future__ import annotations

import os

_state = {"verbose": False}
_callbacks: list = []  # the C callback must outlive every llama.cpp call, so it is kept here


def configure(verbose: bool) -> None:
    """Set how talkative the libraries are for this process and the children it starts."""
    _state["verbose"] = verbose
    if verbose:
        return
    # Read by transformers / huggingface_hub / tqdm when they are imported or a bar is made.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantizer uses plain tqdm


def verbose() -> bool:
    return _state["verbose"]


def quiet_llama_cpp() -> None:
    """Route llama.cpp's (and ggml's) log lines to nowhere, unless -v."""
    if _state["verbose"] or _callbacks:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def drop(_level, _text, _user_data):
        return None

    _callbacks.append(drop)
    llama_cpp.llama_log_set(drop, None)

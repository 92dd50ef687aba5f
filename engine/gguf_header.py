"""A GGUF file's header, read directly (key/values and tensor infos, never the weights): gguf-py's
reader builds every vocabulary entry as an object, 12 s for SmolLM2's, against milliseconds here.
Neutral ground for the model catalog and engine.models, which both read headers.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.templates import TURN_TOKENS

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_TURN_TOKENS = {token for tokens in TURN_TOKENS.values() for token in tokens}


@dataclass(frozen=True)
class GgufHeader:
    fields: dict  # scalar and string key/values (arrays left out)
    turn_tokens: frozenset  # which of the shipped templates' turn tokens the vocabulary holds
    params: int


def read_gguf_header(path: Path) -> GgufHeader:
    """Key/values (no arrays), the shipped templates' turn tokens found in the vocabulary, and the
    parameter count, from a GGUF file's header."""
    with Path(path).open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        pos = 8

        def read(fmt: str):
            nonlocal pos
            (value,) = struct.unpack_from("<" + fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return value

        def read_string() -> str:
            nonlocal pos
            length = read("Q")
            pos += length
            return bytes(buf[pos - length:pos]).decode("utf-8", "replace")

        def skip_array(item: int, count: int, key: str, found: set) -> None:
            nonlocal pos
            if item in _SCALARS:
                pos += struct.calcsize(_SCALARS[item]) * count
            elif item == _STRING:
                for _ in range(count):
                    text = read_string()
                    if key == "tokenizer.ggml.tokens" and text in _TURN_TOKENS:
                        found.add(text)
            else:
                for _ in range(count):
                    skip_array(read("I"), read("Q"), "", found) if item == _ARRAY else read_value(item)

        def read_value(kind: int):
            if kind in _SCALARS:
                return read(_SCALARS[kind])
            if kind == _STRING:
                return read_string()
            raise ValueError(f"unknown GGUF value type {kind} in {path}")

        n_tensors, n_kv = read("Q"), read("Q")
        fields, found = {}, set()
        for _ in range(n_kv):
            key, kind = read_string(), read("I")
            if kind == _ARRAY:
                skip_array(read("I"), read("Q"), key, found)
            else:
                fields[key] = read_value(kind)
        params = 0
        for _ in range(n_tensors):
            read_string()
            params += math.prod(read("Q") for _ in range(read("I")))
            pos += 4 + 8  # type, offset
        return GgufHeader(fields, frozenset(found), params)

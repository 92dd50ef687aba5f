"""The quantization types an export can make, and what each costs on disk."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ChattuneError


@dataclass(frozen=True)
class Quant:
    name: str  # what the user types and what the file is called: "Q4_K_M"
    ftype: str  # llama.cpp's llama_ftype constant in llama_cpp (LLAMA_FTYPE_MOSTLY_*)
    # Bits per weight at most: k-quants fall back to wider types on rows whose width is not a
    # multiple of 256 (SmolLM2's 576), so the estimate takes the fallback's size.
    max_bits: float
    about: str  # one line for the export dialog and --help


QUANTS: dict[str, Quant] = {q.name: q for q in (
    Quant("Q4_K_M", "LLAMA_FTYPE_MOSTLY_Q4_K_M", 6.6, "smallest; the usual choice for laptops"),
    Quant("Q5_K_M", "LLAMA_FTYPE_MOSTLY_Q5_K_M", 7.2, "a little larger, a little closer to the original"),
    Quant("Q6_K", "LLAMA_FTYPE_MOSTLY_Q6_K", 8.5, "close to the original"),
    Quant("Q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0", 8.5, "practically the original; half the size of F16"),
    Quant("F16", "LLAMA_FTYPE_MOSTLY_F16", 16.0, "unquantized 16-bit; the largest"),
)}
DEFAULT_QUANTS = ("Q4_K_M",)
# The quants whose fallback tensors are q5_0, made from an error-compensated copy (engine.export.compensate).
COMPENSATED_QUANTS = ("Q4_K_M", "Q5_K_M")
# On a quantized base, the block weights llama.cpp would keep as k-quants go to this type instead
# (engine.export.quantize): compensated q5_0 for Q4_K_M (no larger on average), q8_0 for Q5_K_M.
WIDEN_TO = {"Q4_K_M": "q5_0", "Q5_K_M": "q8_0"}


def parse_quants(names) -> list[str]:
    """Canonical names, in the order given, without repeats; DEFAULT_QUANTS when none are given."""
    chosen: list[str] = []
    for raw in names or DEFAULT_QUANTS:
        name = str(raw).strip().upper()
        if name not in QUANTS:
            raise ChattuneError(f"unknown quantization type {raw!r}", f"choose from {', '.join(QUANTS)}")
        if name not in chosen:
            chosen.append(name)
    return chosen

"""Error-compensated rounding onto q5_0 (engine.export.compensate) against llama.cpp's plain rounding."""

from __future__ import annotations

import gguf
import numpy as np
import torch
from gguf.quants import dequantize, quantize

from engine.export.compensate import round_q5_0

Q5_0 = gguf.GGMLQuantizationType.Q5_0


def layer(seed: int = 0, rows: int = 48, cols: int = 96, samples: int = 400):
    """Weights and correlated inputs, like a layer's: GPTQ helps where inputs correlate."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=gen) / cols**0.5 + torch.eye(cols)
    inputs = torch.randn(samples, cols, generator=gen) @ mixing
    return torch.randn(rows, cols, generator=gen) * 0.05, inputs


def test_rounded_weights_are_on_q5_0s_grid_so_llama_cpp_stores_them_unchanged():
    weight, inputs = layer()
    rounded = round_q5_0(weight, inputs.T @ inputs).numpy()
    # gguf-py's q5_0 is llama.cpp's reference quantizer: it must give back exactly these values
    # (up to the f16 scale it stores), or the compensation would be rounded away again.
    again = dequantize(quantize(rounded.astype(np.float16).astype(np.float32), Q5_0), Q5_0)
    assert np.abs(again - rounded).max() <= 2e-3 * np.abs(rounded).max()
    assert not np.allclose(rounded, weight.numpy())


def test_layer_outputs_stay_closer_than_with_plain_rounding():
    weight, inputs = layer(seed=1)
    plain = torch.from_numpy(dequantize(quantize(weight.numpy(), Q5_0), Q5_0))
    compensated = round_q5_0(weight, inputs.T @ inputs)
    error_plain = ((inputs @ (weight - plain).T) ** 2).mean()
    error_compensated = ((inputs @ (weight - compensated).T) ** 2).mean()
    assert error_compensated < 0.7 * error_plain, (error_compensated, error_plain)


def test_an_all_zero_block_stays_zero():
    weight, inputs = layer(seed=2)
    weight[3, :32] = 0  # the first block: no earlier rounding error has been moved into it
    rounded = round_q5_0(weight, inputs.T @ inputs)
    assert torch.equal(rounded[3, :32], torch.zeros(32))

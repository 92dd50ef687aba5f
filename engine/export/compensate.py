"""Error-compensated rounding (GPTQ) of the weights a k-quant export stores as q5_0.

Small models whose rows are not a multiple of 256 wide (SmolLM2: 576) keep most of their weights in
q5_0, the k-quants' fallback. llama.cpp rounds each weight to the nearest q5_0 level on its own; on
the embedded model that noise is 7-15x the fine-tune's delta. GPTQ rounds the columns of a weight
matrix one after another and moves each rounding error onto the columns not yet rounded, weighted by
how the layer's inputs correlate (X^T X over calibration conversations), so the layer's outputs, not
its weights, stay close. Two refinements: the columns are rounded in order of decreasing input
energy (act order), with each block's scale fixed beforehand from the unrounded weights, and each
block's scale is searched: shrinking it (and clipping the largest value) can cut the other values'
error, weighed by their input energy.

The result is written into a copy of the F16 GGUF, on q5_0's exact grid (per 32 values: d = the
largest-magnitude value / -16, levels -16..15, that value at -16), which llama.cpp's own q5_0
quantizer then stores unchanged. llama.cpp still does the packing; this only chooses the values.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

BLOCK = 32  # values per q5_0 block
# Added to X^T X's diagonal, relative to its mean. GPTQ's usual 0.01 assumes far more calibration
# tokens than a run has (~1,600 here, for inputs up to 1,536 wide): with it the rounding fitted the
# calibration and KL from the adapter came out 0.047 on the embedded model, against 0.036 with 0.1.
DAMPING = 0.1
CLIP_STEPS = 8  # candidate scales per block, from 0.7x to 1x of its largest value
LAZY = 128  # columns whose error updates are batched into one matrix product
BATCH_TOKENS = 4096  # calibration tokens (padding included) per forward pass


def block_scales(weight, importance):
    """Per 32-value block of each row: (d, the index of the value that lands on level -16). llama.cpp
    takes d from the block's largest-magnitude value, so that value is stored as -16 d; the d tried are
    that value shrunk (the value clipped), and the one with the least importance-weighted rounding error
    of the block is kept. weight [rows, cols]; `importance` [cols]: X^T X's diagonal."""
    import torch

    rows, cols = weight.shape
    blocks = weight.reshape(rows, cols // BLOCK, BLOCK)
    anchor = blocks.abs().argmax(-1)
    peak = blocks.gather(-1, anchor[..., None])[..., 0]
    energy = importance.reshape(1, cols // BLOCK, BLOCK)
    best, best_error = peak, torch.full_like(peak, float("inf"))
    for shrink in torch.linspace(0.7, 1.0, CLIP_STEPS).tolist():
        top = (peak * shrink).half().float()  # the anchor is stored in f16: exactly this value
        d = torch.where(top == 0, torch.ones_like(top), top / -16)[..., None]
        error = torch.round(blocks / d).clamp_(-16, 15).mul_(d).sub_(blocks).square_().mul_(energy).sum(-1)
        better = error < best_error
        best, best_error = torch.where(better, top, best), torch.where(better, error, best_error)
    return best / -16, anchor


def round_q5_0(weight, hessian):
    """GPTQ onto q5_0's grid. weight [rows, cols] (cols: the input dimension, blocks run along it),
    hessian [cols, cols] = X^T X. Returns the rounded float32 weights."""
    import torch

    w = weight.detach().to(torch.float32)
    rows, cols = w.shape
    h = hessian.to(torch.float32).clone()
    dead = torch.diag(h) == 0  # inputs the calibration never used: nothing to compensate with
    h[dead, dead] = 1
    h += DAMPING * torch.mean(torch.diag(h)) * torch.eye(cols)
    d, anchor = block_scales(w, torch.diag(h))
    empty = (d == 0).repeat_interleave(BLOCK, dim=1)  # an all-zero block stays zero
    # Per value: its scale and the levels it may take (the anchor exactly -16, an empty block 0).
    scale = torch.where(d == 0, torch.ones_like(d), d).repeat_interleave(BLOCK, dim=1)
    high = torch.full((rows, cols // BLOCK, BLOCK), 15.0)
    high.scatter_(2, anchor[..., None], -16.0)
    high = high.reshape(rows, cols).masked_fill(empty, 0.0)
    low = torch.full((rows, cols), -16.0).masked_fill(empty, 0.0)
    # Columns as contiguous rows (transposed), in act order.
    order = torch.argsort(torch.diag(h), descending=True)
    wt, scale, low, high = (x.T[order].contiguous() for x in (w, scale, low, high))
    h = h[order][:, order]
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    out = torch.empty_like(wt)
    for start in range(0, cols, LAZY):
        end = min(start + LAZY, cols)
        block, hblock = wt[start:end].clone(), hinv[start:end, start:end]
        errors = torch.empty_like(block)
        for j in range(end - start):
            c = start + j
            rounded = torch.clamp(torch.round(block[j] / scale[c]), low[c], high[c]).mul_(scale[c])
            out[c] = rounded
            error = errors[j]
            torch.sub(block[j], rounded, out=error).div_(hblock[j, j])
            block[j:].addr_(hblock[j, j:], error, alpha=-1)
        wt[end:].addmm_(hinv[start:end, end:].T, errors, alpha=-1)
    return out[torch.argsort(order)].T.contiguous()


def compensated_copy(f16_gguf: Path, target: Path, model_dir: Path, tensors: list[str],
                     conversations: list[list[dict]], texts: list[str] = (), *, widen_except: set[str] | None = None,
                     widen_to: str = "q5_0", say: Callable[[str], None] = lambda _m: None) -> tuple[list[str], list[str]]:
    """Copy `f16_gguf` to `target` with `tensors` (GGUF names) GPTQ-rounded onto q5_0, calibrated on
    `conversations` and plain `texts` run through the merged model in `model_dir`. With
    `widen_except`, every other weight of the repeating blocks ("blk.*") not in that set is *widened*:
    rounded too when `widen_to` is q5_0, left as it is otherwise (the caller stores it as `widen_to`).
    Returns (the names rounded, the names widened); a tensor no linear layer of the model maps to keeps
    llama.cpp's plain rounding."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say("loading the merged model for error-compensated rounding")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    shutil.copyfile(f16_gguf, target)
    writable = gguf.GGUFReader(str(target), "r+")  # parsing it takes seconds (the vocabulary): only once
    arch_name = str(writable.fields["general.architecture"].contents())
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch_name)
    layers, widened = _layers(model, arch, tensors, widen_except)
    if widen_to != "q5_0":
        layers = {name: module for name, module in layers.items() if name not in widened}
    hessians, shared, tokens = _calibrate(model, tokenizer, layers, conversations, texts)
    del model
    say(f"measured the inputs of {len(layers)} layers on {tokens} tokens")

    tensors_by_name = {tensor.name: tensor for tensor in writable.tensors}
    rounded: list[str] = []
    for key, group in shared.items():
        group = [n for n in group if n in tensors_by_name and tensors_by_name[n].tensor_type == gguf.GGMLQuantizationType.F16]
        if not group:
            continue
        # Layers reading the same input (q/k/v, gate/up) are rounded as one matrix: one factorization.
        parts = [_matrix(tensors_by_name[n]) for n in group]
        result = round_q5_0(torch.from_numpy(np.concatenate(parts)), hessians[key]).numpy()
        for name, part in zip(group, np.split(result, np.cumsum([len(p) for p in parts])[:-1]), strict=True):
            tensors_by_name[name].data[...] = part.reshape(tensors_by_name[name].data.shape).astype(np.float16)
            rounded.append(name)
        if len(rounded) % 20 < len(group) or len(rounded) == len(layers):
            say(f"error-compensated rounding: {len(rounded)} of {len(layers)} tensors")
    writable.data.flush()
    return rounded, widened


def _layers(model, arch, tensors, widen_except) -> tuple[dict, list[str]]:
    """({GGUF name: linear layer} of `tensors` and the widened weights, the widened names)."""
    import gguf
    import torch

    names = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    wanted = set(tensors)
    layers, widened = {}, []
    for module_name, module in model.named_modules():
        name = names.get_name(module_name + ".weight", try_suffixes=(".weight",))
        if not isinstance(module, torch.nn.Linear) or module.in_features % BLOCK or not name:
            continue
        if name in wanted:
            layers[name] = module
        elif widen_except is not None and name.startswith("blk.") and name not in widen_except:
            layers[name] = module
            widened.append(name)
    return layers, widened


def _calibrate(model, tokenizer, layers, conversations, texts):
    """(X^T X per distinct input, the layer names sharing each, tokens seen)."""
    samples = [tokenizer.apply_chat_template(m, tokenize=True, return_tensors="pt", return_dict=True)["input_ids"]
               for m in conversations]
    samples += [tokenizer(text, return_tensors="pt")["input_ids"] for text in texts if text.strip()]
    hessians, shared = _input_statistics(model, layers, samples, tokenizer.pad_token_id or 0)
    return hessians, shared, sum(ids.shape[1] for ids in samples)


def _matrix(tensor):
    import numpy as np

    return np.asarray(tensor.data, dtype=np.float32).reshape(-1, tensor.data.shape[-1])


def _input_statistics(model, layers: dict, samples: list, pad: int) -> tuple[dict, dict[str, list[str]]]:
    """X^T X of each layer's input over `samples` (token ids [1, n] each), once per distinct input:
    ({key: X^T X}, {key: the layer names that read that input}). Samples of similar length go through
    together, padded (dozens of small forward passes are several times slower); padding is left out."""
    import torch

    # Which layers read the very same tensor: the probe keeps every input alive, so identity is safe.
    first_input: dict[str, object] = {}

    def probe(_module, inputs, _output, name):
        first_input.setdefault(name, inputs[0])  # (a forward hook that returns something replaces the output)

    probes = [module.register_forward_hook(lambda m, i, o, name=name: probe(m, i, o, name))
              for name, module in layers.items()]
    with torch.inference_mode():
        model(input_ids=samples[0][:, :8], logits_to_keep=1)
    for handle in probes:
        handle.remove()
    shared: dict[str, list[str]] = {}
    owner_of: dict[int, str] = {}
    for name in layers:
        if name in first_input:  # a layer the forward pass never reaches has nothing to calibrate on
            key = owner_of.setdefault(id(first_input[name]), name)
            shared.setdefault(key, []).append(name)
    first_input.clear()
    hessians = {key: torch.zeros(layers[key].in_features, layers[key].in_features) for key in shared}
    real = [torch.ones(0, dtype=torch.bool)]  # which positions of the current batch are not padding

    def collect(_module, inputs, _output, key):
        x = inputs[0].reshape(-1, inputs[0].shape[-1])[real[0]].to(torch.float32)
        hessians[key].add_(x.T @ x)

    hooks = [layers[key].register_forward_hook(lambda m, i, o, key=key: collect(m, i, o, key)) for key in shared]
    try:
        ordered = sorted(samples, key=lambda ids: ids.shape[1])
        while ordered:
            count = 1
            while count < len(ordered) and (count + 1) * ordered[count].shape[1] <= BATCH_TOKENS:
                count += 1
            group, ordered = ordered[:count], ordered[count:]
            longest = group[-1].shape[1]
            ids = torch.full((len(group), longest), pad)
            mask = torch.zeros((len(group), longest), dtype=torch.long)
            for row, sample in enumerate(group):
                ids[row, :sample.shape[1]], mask[row, :sample.shape[1]] = sample[0], 1
            real[0] = mask.reshape(-1).bool()
            with torch.inference_mode():  # the vocabulary-wide output layer is not needed
                model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
    finally:
        for hook in hooks:
            hook.remove()
    return hessians, shared

"""Replay as distillation: every training step also pulls the adapter's whole next-token
distribution on the base's own answers back to the base's (KL(base || adapter)).

Training on the base's greedy replies (plain replay) only teaches its top token. On a small model
that is not enough: taught "The capital of Moravelle is Lunquist.", SmolLM2-135M then answered
"Milan" for Italy although replay had shown it other capitals. Matching the full distribution
keeps what the base knew far better, at the price of one more forward pass over a few replay rows
per step (the base's side: the same weights with the adapter switched off, no gradient).
"""

from __future__ import annotations

import itertools
import random

TOP_K = 32  # teacher tokens kept per position: nearly all of the probability mass of a chat model


class ReplayDistiller:
    """Cycles through the replay rows, `per_step` of them at a time, as one padding-free sequence.

    The base's side is computed once, at the first step (one forward pass over all replay rows, the
    adapter switched off), and kept as its top TOP_K tokens per answer position; each step then costs
    only the adapter's own forward and backward pass over its rows."""

    def __init__(self, tokenizer, rows: list[dict], *, per_step: int, weight: float, seed: int = 0,
                 top_k: int = TOP_K):
        import torch

        self.torch = torch
        self.top_k = top_k
        self.weight = weight
        self.per_step = max(1, per_step)
        encoded = [_encode(tokenizer, row) for row in rows]
        self._encoded = [e for e in encoded if e[1]]
        random.Random(seed).shuffle(self._encoded)
        self._rows = None  # cycles over (prompt ids, answer ids, teacher top-k ids, teacher top-k logprobs)
        self.last_kl: float | None = None

    def __bool__(self) -> bool:
        return bool(self._encoded) and self.weight > 0

    def loss(self, model, peft_model):
        """weight x mean KL(base || adapter) over the answer tokens of the next replay rows."""
        torch = self.torch
        if self._rows is None:
            self._rows = itertools.cycle(self._teacher(peft_model))
        rows = [next(self._rows) for _ in range(self.per_step)]
        input_ids, position_ids, picked = self._flatten([(p, a) for p, a, _, _ in rows], model)
        student = model(input_ids=input_ids, position_ids=position_ids, logits_to_keep=picked).logits[0].float()
        top_ids = torch.cat([r[2] for r in rows]).to(student.device)
        top_logp = torch.cat([r[3] for r in rows]).to(student.device)
        # KL over the base's top tokens plus one bucket for all the others: exact for that coarser
        # distribution, zero when the adapter agrees, and no pull to sharpen onto the top tokens.
        student_logp = torch.log_softmax(student, dim=-1).gather(1, top_ids)
        p, q = top_logp.exp(), student_logp.exp()
        p_rest = (1 - p.sum(-1)).clamp_min(1e-8)
        q_rest = (1 - q.sum(-1)).clamp_min(1e-8)
        kl = ((p * (top_logp - student_logp)).sum(-1) + p_rest * (p_rest.log() - q_rest.log())).mean()
        self.last_kl = float(kl.detach())
        return self.weight * kl

    def _teacher(self, peft_model, chunk: int = 8) -> list:
        torch = self.torch
        found = []
        with torch.no_grad(), peft_model.disable_adapter():
            for start in range(0, len(self._encoded), chunk):
                part = self._encoded[start:start + chunk]
                input_ids, position_ids, picked = self._flatten(part, peft_model)
                logp = torch.log_softmax(peft_model(input_ids=input_ids, position_ids=position_ids,
                                                    logits_to_keep=picked).logits[0].float(), dim=-1)
                top = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1)
                offset = 0
                for prompt, answer in part:
                    n = len(answer)
                    found.append((prompt, answer, top.indices[offset:offset + n].cpu(),
                                  top.values[offset:offset + n].cpu()))
                    offset += n
        return found

    def _flatten(self, pairs: list[tuple[list[int], list[int]]], model):
        """One sequence with restarting position ids, and the positions that predict answer tokens
        (logits at position i predict token i + 1)."""
        torch = self.torch
        ids, positions, targets = [], [], []
        for prompt, answer in pairs:
            start = len(ids)
            ids += prompt + answer
            positions += list(range(len(prompt) + len(answer)))
            targets += range(start + len(prompt) - 1, start + len(prompt) + len(answer) - 1)
        device = next(p for p in model.parameters()).device
        return (torch.tensor([ids], device=device), torch.tensor([positions], device=device),
                torch.tensor(targets, device=device))


def _encode(tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of a prompt-completion row, the answer's end-of-turn included."""
    prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    if not full.startswith(prompt):
        return [], []
    encode = tokenizer
    prompt_ids = encode(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = encode(full[len(prompt):].rstrip("\n"), add_special_tokens=False)["input_ids"]
    return prompt_ids, answer_ids


def distilling(trainer_class):
    """`trainer_class` with the replay KL added to each training step's loss (when one is set)."""

    class Distilling(trainer_class):
        distiller: ReplayDistiller | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
            if not (self.distiller and model.training):
                return result
            extra = self.distiller.loss(model, self.accelerator.unwrap_model(model))
            if return_outputs:
                return result[0] + extra, result[1]
            return result + extra

    return Distilling

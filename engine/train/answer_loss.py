"""The training loss with the output head run only where it is scored.

The loss is taken on the answers alone, yet the model's own loss (labels passed to the model) runs its
output head on every position, the system prompt and question included. On a small model that head
is a large part of each step: SmolLM2-135M's is 576 x 49,152, about a fifth of the forward pass, and
its logits go through a softmax and back again. A padding-free batch (one flattened sequence) lets
the head run on the answer positions only, through the model's public `logits_to_keep` (a tensor of
positions), with the same cross-entropy and normalisation as the model's own loss.
"""

from __future__ import annotations

IGNORE = -100  # the label of a position that is not scored


def answer_positions(labels):
    """The positions whose logits predict a scored token (logits at i predict token i + 1), and those
    tokens. `labels` is one flattened sequence, shape (1, length)."""
    import torch

    following = torch.nn.functional.pad(labels[0, 1:], (0, 1), value=IGNORE)
    picked = (following != IGNORE).nonzero().squeeze(-1)
    return picked, following[picked]


def answer_loss(model, inputs: dict, num_items_in_batch=None):
    """(loss, outputs) of a padding-free batch, the head run on the answer positions only; None when the
    batch is not one flattened sequence (the caller then uses the model's own loss)."""
    import torch

    labels = inputs.get("labels")
    if labels is None or labels.dim() != 2 or labels.shape[0] != 1:
        return None
    picked, targets = answer_positions(labels)
    if not len(picked):
        return None
    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=picked)
    logits = outputs.logits[0].float()
    if num_items_in_batch is None:  # the model's own loss: a mean over the scored tokens of this batch
        return torch.nn.functional.cross_entropy(logits, targets), outputs
    # Gradient accumulation: a sum over this batch, divided by the scored tokens of every accumulated one.
    total = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch, outputs

"""Training health from the loss curves alone: good, overfitting, underfitting or too little data.

A pure function over the logged curves so it can be tested on synthetic ones. Step losses are noisy
(small batches), so the start and end of the training curve are averages over a fifth of its points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LABELS = ("good", "overfitting", "underfitting", "too little data")
MIN_EXAMPLES = 20  # fewer: validation is one or two examples and the curves are noise
SUGGESTED_EXAMPLES = 50  # the course material's advice for a curated set
EVAL_RISE = 0.10  # validation loss this far (relative) above its best at the end: overfitting
MIN_TRAIN_DROP = 0.20  # training loss must fall at least this much (relative), else underfitting
STILL_FALLING = 0.10  # validation loss still falling this much in the last epoch: more epochs would help
MEMORISED_RATIO = 0.25  # end training loss below this share of validation loss ...
MEMORISED_GAP = 0.5  # ... and at least this far below it (nats): the training set was memorised


@dataclass(frozen=True)
class Verdict:
    label: str  # one of LABELS
    reason: str  # one sentence

    def to_dict(self) -> dict:
        return asdict(self)


def training_verdict(train: list[tuple[float, float]], evals: list[tuple[float, float]],
                     n_examples: int) -> Verdict:
    """`train`: (step, loss) points; `evals`: (epoch, eval_loss) points; `n_examples`: training examples."""
    train = sorted(train)
    evals = sorted(evals)
    if n_examples < MIN_EXAMPLES:
        return Verdict("too little data", f"only {n_examples} training examples, too few for the curves to show "
                       f"whether it generalises; aim for about {SUGGESTED_EXAMPLES} curated examples.")
    if len(train) < 2:
        return Verdict("too little data", f"the run logged {len(train)} training step(s), too few to judge; "
                       "train for more steps.")
    start, end = _head_tail(train)
    more = f", and add varied examples (about {SUGGESTED_EXAMPLES}+)" if n_examples < SUGGESTED_EXAMPLES else ""
    if len(evals) >= 2:
        best_epoch, best = min(evals, key=lambda point: point[1])
        last_epoch, last = evals[-1]
        if best_epoch < last_epoch and last > best * (1 + EVAL_RISE) and end < start:
            return Verdict("overfitting", f"validation loss rose from {best:.3f} at epoch {best_epoch:g} to "
                           f"{last:.3f} at epoch {last_epoch:g} while training loss fell to {end:.3f}; train for "
                           f"about {best_epoch:g} epochs (--epochs {best_epoch:g}){more}.")
    if end > start * (1 - MIN_TRAIN_DROP):
        return Verdict("underfitting", f"training loss only went from {start:.3f} to {end:.3f}; train for more "
                       "epochs or with a higher learning rate.")
    if evals:
        last = evals[-1][1]
        if end < MEMORISED_RATIO * last and last - end > MEMORISED_GAP and last >= evals[0][1]:
            return Verdict("overfitting", f"training loss fell to {end:.3f} but validation loss stayed at "
                           f"{last:.3f}: it memorised the training set without generalising; use fewer epochs{more}.")
    if len(evals) >= 2 and evals[-1][1] < evals[-2][1] * (1 - STILL_FALLING):
        return Verdict("underfitting", f"validation loss was still falling fast in the last epoch "
                       f"({evals[-2][1]:.3f} to {evals[-1][1]:.3f}); more epochs would help.")
    if evals:
        return Verdict("good", f"training loss fell from {start:.3f} to {end:.3f} and validation loss ended at "
                       f"{evals[-1][1]:.3f}, near its best of {min(loss for _, loss in evals):.3f}.")
    return Verdict("good", f"training loss fell from {start:.3f} to {end:.3f} (no validation split to check "
                   "for overfitting).")


def _head_tail(points: list[tuple[float, float]]) -> tuple[float, float]:
    k = max(1, len(points) // 5)
    losses = [loss for _, loss in points]
    return sum(losses[:k]) / k, sum(losses[-k:]) / k

"""The training-health verdict on synthetic loss curves: one curve per case."""

import math

import pytest

from engine.evaluate.verdict import LABELS, training_verdict


def steps(start: float, end: float, n: int = 40) -> list[tuple[int, float]]:
    """An exponential-looking fall from `start` to `end` with a little step-to-step noise."""
    return [(i + 1, end + (start - end) * math.exp(-4 * i / n) + 0.02 * ((-1) ** i)) for i in range(n)]


def epochs(*losses: float) -> list[tuple[int, float]]:
    return [(i + 1, loss) for i, loss in enumerate(losses)]


def test_good_when_both_curves_fall_and_settle():
    verdict = training_verdict(steps(2.0, 0.6), epochs(1.4, 1.1, 1.05, 1.04), n_examples=120)
    assert verdict.label == "good"
    assert "1.040" in verdict.reason


def test_overfitting_when_validation_rises_while_training_falls():
    verdict = training_verdict(steps(2.0, 0.05), epochs(1.3, 1.1, 1.4, 1.9), n_examples=80)
    assert verdict.label == "overfitting"
    assert "epoch 2" in verdict.reason and "1.900" in verdict.reason


def test_overfitting_when_training_set_is_memorised_without_generalising():
    verdict = training_verdict(steps(2.0, 0.01), epochs(2.6), n_examples=60)
    assert verdict.label == "overfitting"
    assert "memorised" in verdict.reason


def test_underfitting_when_training_loss_barely_moves():
    verdict = training_verdict(steps(2.0, 1.9), epochs(2.1, 2.05), n_examples=200)
    assert verdict.label == "underfitting"
    assert "epochs" in verdict.reason


def test_underfitting_when_validation_still_falls_fast_at_the_end():
    verdict = training_verdict(steps(2.0, 0.9), epochs(1.8, 1.5, 1.2), n_examples=200)
    assert verdict.label == "underfitting"
    assert "still falling" in verdict.reason


@pytest.mark.parametrize("n", [0, 5, 19])
def test_too_little_data_below_twenty_examples_whatever_the_curves(n):
    verdict = training_verdict(steps(2.0, 0.6), epochs(1.4, 1.1), n_examples=n)
    assert verdict.label == "too little data"
    assert f"only {n} training examples" in verdict.reason


def test_too_little_data_when_the_run_logged_almost_nothing():
    assert training_verdict([(1, 2.0)], [], n_examples=100).label == "too little data"


def test_good_without_a_validation_split_says_so():
    verdict = training_verdict(steps(2.0, 0.5), [], n_examples=40)
    assert verdict.label == "good"
    assert "no validation" in verdict.reason


def test_every_reason_is_one_sentence_and_every_label_known():
    cases = [(steps(2.0, 0.6), epochs(1.4, 1.1, 1.05, 1.04), 120), (steps(2.0, 0.05), epochs(1.3, 1.1, 1.9), 80),
             (steps(2.0, 1.9), [], 200), (steps(2.0, 0.6), [], 3)]
    for train, evals, n in cases:
        verdict = training_verdict(train, evals, n)
        assert verdict.label in LABELS
        assert verdict.reason.endswith(".") and verdict.reason.count(". ") == 0

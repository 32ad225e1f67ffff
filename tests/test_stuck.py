"""Stuck-state arithmetic (common.stuck): on a synthetic stuck model, and on the vendored MNIST subset."""

import numpy as np
import pytest

from backends import get_backend
from common import stuck
from common.data import load_mnist, prepare
from common.spec import Spec
from common.training import train
from common.variants import VARIANTS
from common.weights import initial_weights
from tests_support import TEST_SUBSET


def test_clip_cost_is_minus_log_eps():
    assert stuck.clip_cost(1e-7) == pytest.approx(16.118, abs=5e-4)


def test_synthetic_stuck_model():
    """A model that predicts digit 1 for every row, scored the clipped way row by row, costs exactly what the
    arithmetic predicts, and its accuracy is digit 1's share."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=5000)
    eps = 1e-7
    p_true = np.where(labels == 1, 1 - eps, eps)  # certain of 1: right on 1s, clipped everywhere else
    measured_cost = float(np.mean(-np.log(p_true)))
    shares = np.bincount(labels, minlength=10) / len(labels)
    predicted = np.zeros(10)
    predicted[1] = 1.0
    record = {"label_shares": {"train": shares.tolist(), "test": shares.tolist()},
              "test_predicted_shares": predicted.tolist(), "epoch_costs": [measured_cost],
              "test_accuracy": float(np.mean(labels == 1)), "spec": Spec().to_dict(), "status": "ok", "seed": 1}
    explanation = stuck.explain(record)
    assert explanation.classes == (1,)
    assert explanation.predicted_cost == pytest.approx(measured_cost, rel=1e-6)
    assert explanation.predicted_accuracy == pytest.approx(record["test_accuracy"])
    assert "digit(s) 1" in stuck.describe([record])


def test_locked_classes_ignore_stray_predictions():
    assert stuck.locked_classes([0.005, 0.6, 0.0, 0.395]) == (1, 3)


def test_fit_class_sets_finds_the_set_that_made_a_figure():
    shares = [0.08, 0.09, 0.095, 0.1, 0.105, 0.11, 0.085, 0.075, 0.04, 0.22]  # no two pairs sum alike
    value = stuck.predicted_cost(shares, (8, 9), 1e-7)
    (best, *_) = stuck.fit_class_sets(value, lambda s: stuck.predicted_cost(shares, s, 1e-7))
    assert best.classes == (8, 9) and best.residual < 1e-9


def test_clipped_stuck_run_on_the_subset_follows_the_arithmetic():
    """JAX's fit with the clipped loss on raw pixels sticks by its second epoch on one class; the arithmetic
    gives its last cost (measured: to 1e-6) and its accuracy exactly. 1e-4: float32 epoch means."""
    spec = Spec(epochs=2, prob_loss="clipped", train_size=1000, test_size=1000)
    data = prepare(spec, load_mnist(TEST_SUBSET))
    trainer = get_backend("jax").make_trainer(spec, VARIANTS["fit_probs"], data, initial_weights(spec))
    outcome = train(spec, trainer, data)
    assert outcome.test_accuracy < 0.3
    record = {"label_shares": data.label_shares(), "test_predicted_shares": outcome.test_predicted_shares.tolist(),
              "epoch_costs": outcome.epoch_costs, "test_accuracy": outcome.test_accuracy, "spec": spec.to_dict()}
    explanation = stuck.explain(record)
    assert len(explanation.classes) == 1
    assert explanation.predicted_cost == pytest.approx(outcome.epoch_costs[-1], rel=1e-4)
    assert explanation.predicted_accuracy == pytest.approx(outcome.test_accuracy, abs=1e-9)

"""The numpy oracle: gradients agree with finite differences; losses and optimiser steps follow the formulas."""

import numpy as np
import pytest

from common import reference
from common.spec import Spec
from common.weights import initial_weights

SMALL = Spec(hidden_layers=2, hidden_units=6, init_stddev=0.3)


def small_batch(seed=0, n=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 784))
    y = np.eye(10)[rng.integers(0, 10, n)]
    return x, y


def numeric_grad(f, array, index, h=1e-6):
    saved = array[index]
    array[index] = saved + h
    up = f()
    array[index] = saved - h
    down = f()
    array[index] = saved
    return (up - down) / (2 * h)


@pytest.mark.parametrize("kind", reference.LOSS_KINDS)
@pytest.mark.parametrize("with_dropout", [False, True])
def test_gradients_match_finite_differences(kind, with_dropout):
    weights = {k: w.astype(np.float64) for k, w in initial_weights(SMALL).items()}
    weights["dense_2.bias"] += np.linspace(-0.5, 0.5, 10)
    x, y = small_batch()
    masks = None
    if with_dropout:
        rng = np.random.default_rng(1)
        masks = [rng.random((5, 6)) > 0.3 for _ in range(2)]
    f = lambda: reference.loss_and_grads(weights, x, y, kind, masks=masks, drop_rate=0.3)[0]  # noqa: E731
    _, grads = reference.loss_and_grads(weights, x, y, kind, masks=masks, drop_rate=0.3)
    rng = np.random.default_rng(2)
    for name in weights:
        for _ in range(4):
            index = tuple(rng.integers(0, s) for s in weights[name].shape)
            assert grads[name][index] == pytest.approx(numeric_grad(f, weights[name], index), rel=1e-5, abs=1e-8), name


def test_losses_agree_on_ordinary_inputs_and_split_on_saturated():
    x, y = small_batch()
    logits = x[:, :10]
    values = {k: reference.loss_from_logits(k, logits, y) for k in reference.LOSS_KINDS}
    assert values["native"] == pytest.approx(values["logits"], rel=1e-12)
    assert values["clipped"] == pytest.approx(values["logits"], rel=1e-12)
    saturated = np.array([[0.0, 200.0] + [0.0] * 8])  # true class 0: p_0 = e^-200, far below the 1e-7 clip
    target = np.eye(10)[[0]]
    assert reference.loss_from_logits("logits", saturated, target) == pytest.approx(200.0)
    assert reference.loss_from_logits("clipped", saturated, target) == pytest.approx(-np.log(1e-7))
    grad = reference.loss_grad_logits("clipped", saturated, target)
    assert not grad.any()  # the clip's gradient is exactly zero: the stuck mechanism
    huge = saturated * 5  # p_0 = e^-1000 is 0 even in float64
    assert not np.isfinite(reference.loss_from_logits("native", huge, target))
    assert np.isnan(reference.loss_grad_logits("native", huge, target)).any()


def test_adam_epsilon_forms():
    w = {"a": np.array([1.0, -2.0])}
    g = {"a": np.array([1.0, 1e-9])}
    state = reference.AdamState.zeros_like(w)
    hat, _ = reference.adam_step(w, g, state, 0.1, 0.9, 0.999, 1e-7, "hat")
    corrected, _ = reference.adam_step(w, g, state, 0.1, 0.9, 0.999, 1e-7, "corrected")
    # First step: m_hat/sqrt(v_hat) = sign(g) when eps is negligible -> both move by ~lr.
    assert hat["a"][0] == pytest.approx(0.9, rel=1e-4) and corrected["a"][0] == pytest.approx(0.9, rel=1e-4)
    # For a tiny gradient the placements differ: hat's effective eps is eps/sqrt(1-b2^t) = 3.2e-6 at t=1.
    step_hat, step_corrected = -2.0 - hat["a"][1], -2.0 - corrected["a"][1]
    assert step_hat == pytest.approx(0.1 * 1e-9 / (1e-9 + 1e-7 / np.sqrt(1e-3)), rel=1e-6)
    assert step_corrected == pytest.approx(0.1 * 1e-9 / (1e-9 + 1e-7), rel=1e-6)
    with pytest.raises(ValueError, match="epsilon_form"):
        reference.adam_step(w, g, state, 0.1, 0.9, 0.999, 1e-7, "middle")


def test_sgd_step():
    w, g = {"a": np.array([1.0])}, {"a": np.array([2.0])}
    assert reference.sgd_step(w, g, 0.25)["a"][0] == 0.5

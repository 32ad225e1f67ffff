"""Canonical initial weights: count, layout, determinism, distribution, save/load."""

import subprocess
import sys

import numpy as np
import pytest

from common.spec import Spec
from common.weights import (canonical_shapes, check_layout, initial_weights, load_weights, parameter_count,
                            save_weights)


def test_parameter_count_and_layout():
    weights = initial_weights(Spec())
    assert parameter_count(weights) == 1_195_018
    assert weights["dense_0.kernel"].shape == (784, 512) and weights["dense_4.kernel"].shape == (512, 10)
    assert all(w.dtype == np.float32 for w in weights.values())
    assert set(weights) == set(canonical_shapes(Spec()))


def test_deterministic_within_and_across_processes():
    a, b = initial_weights(Spec()), initial_weights(Spec())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["dense_0.kernel"], initial_weights(Spec(seed=1))["dense_0.kernel"])
    code = "from common.weights import initial_weights; from common.spec import Spec; " \
           "print(repr(float(initial_weights(Spec())['dense_3.kernel'][7, 11])))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert float(other) == float(a["dense_3.kernel"][7, 11])


def test_random_normal_kernels_and_zero_biases():
    weights = initial_weights(Spec())
    kernels = np.concatenate([w.ravel() for k, w in weights.items() if k.endswith("kernel")])
    # 1.19M draws: the sample mean is within ~4.6e-5 (1 sigma) of 0 and the std within ~3e-5 of 0.05.
    assert abs(kernels.mean()) < 3e-4
    assert abs(kernels.std() - 0.05) < 2e-4
    assert all(not w.any() for k, w in weights.items() if k.endswith("bias"))


def test_save_load_round_trip_and_layout_check(tmp_path):
    weights = initial_weights(Spec())
    save_weights(tmp_path / "w.npz", weights)
    loaded = load_weights(tmp_path / "w.npz", Spec())
    assert all(np.array_equal(loaded[k], weights[k]) for k in weights)
    transposed = dict(weights, **{"dense_1.kernel": weights["dense_1.kernel"][:, :100].T})
    with pytest.raises(ValueError, match="dense_1.kernel"):
        check_layout(Spec(), transposed)

"""Shared fixtures: the vendored MNIST subset (no network, no big file) and small specs on it."""

from __future__ import annotations

import os

# The suite runs a worker per core (pytest-xdist), so each worker's frameworks get one thread: with a pool per
# core each, idle threads spin on the other workers' cores (measured on 2 cores: 3 min 1 s with the default
# pools, 2 min 41 s with one thread). A caller's own setting wins.
for _variable in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_variable, "1")

# All frameworks share this pytest process. PyTorch goes first, through its backend, which sets OpenMP's wait
# policy before torch loads (busy-waiting threads ran ~30x slower on 2 cores) — and before TensorFlow, since
# importing TensorFlow first is the order that clashes (docs/design.md, "Performance").
import backends.torch_backend  # noqa: F401  isort: skip

import pytest

from common.data import Dataset, Mnist, load_mnist, prepare
from common.spec import Spec

from tests_support import TEST_SUBSET

@pytest.fixture(scope="session")
def subset_mnist() -> Mnist:
    return load_mnist(TEST_SUBSET)


@pytest.fixture(scope="session")
def subset_data(subset_mnist: Mnist) -> Dataset:
    """Raw-pixel subset: 3000 training rows (30 batches of 100), 1000 test rows."""
    return prepare(Spec(), subset_mnist)


@pytest.fixture(scope="session")
def subset_spec() -> Spec:
    """The post's spec for one epoch of the vendored subset."""
    return Spec(epochs=1)

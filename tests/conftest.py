"""Shared fixtures: the vendored MNIST subset (no network, no big file) and small specs on it."""

from __future__ import annotations

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

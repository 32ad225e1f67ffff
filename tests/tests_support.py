"""Helpers shared by several test modules (paths and small file writers)."""

from pathlib import Path

import numpy as np

from common.data import DataError, find_mnist

TEST_SUBSET = Path(__file__).parent / "data" / "mnist_subset.npz"


def full_mnist() -> Path | None:
    """The full MNIST file where the project looks for one (``$MNIST_PATH``, the caches), or None."""
    try:
        return find_mnist(download=False)
    except DataError:
        return None


def write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path

"""Helpers shared by several test modules (paths and small file writers)."""

from pathlib import Path

import numpy as np

TEST_SUBSET = Path(__file__).parent / "data" / "mnist_subset.npz"
SHARED_MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist.npz"


def write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path

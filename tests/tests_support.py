"""Helpers shared by several test modules (paths, small file writers, output checks)."""

import re
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


def startup_noise(stderr: str) -> list[str]:
    """Lines of the frameworks' C++ logging (absl's preamble, ``I0000 00:00:...`` records) in ``stderr``."""
    return [line for line in stderr.splitlines()
            if line.startswith("WARNING: All log messages before absl") or re.match(r"[IWEF]\d{4} ", line)]

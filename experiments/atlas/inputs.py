"""The probe inputs every framework's cells see: the same float32 logits, written once by the parent.

The logits are those of the post's model at the canonical initial weights (``common.weights``), eval mode
(no dropout), on the first ``PROBE_ROWS`` MNIST test images: ``raw`` pixels 0..255 as the post feeds them
(saturated: most rows' true-class softmax probability is below 1e-7 in float32, many exactly 0) and the same
rows as ``unit`` pixels / 255 (moderate: |z| < 1, nothing saturates). They come from the float64 numpy
reference model (``common.reference.forward``) rounded to float32, and travel to the children in one
``.npz``, so every framework probes bit-identical logits.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from common.data import Mnist, scale
from common.reference import forward
from common.spec import INPUT_SCALES, Spec
from common.weights import initial_weights

PROBE_ROWS = 100
INPUT_NAMES = INPUT_SCALES  # ("raw", "unit")


def probe_logits(mnist: Mnist, rows: int = PROBE_ROWS) -> dict[str, np.ndarray]:
    """``{input name: float32 logits (rows, 10)}`` at the canonical initial weights."""
    weights = initial_weights(Spec())
    images = mnist.x_test[:rows]
    return {name: forward(weights, scale(images, name))[0].astype(np.float32) for name in INPUT_NAMES}


def save(path: str | os.PathLike, logits: dict[str, np.ndarray], labels: np.ndarray) -> None:
    np.savez(path, labels=labels.astype(np.int64), **{f"logits_{name}": z for name, z in logits.items()})


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(logits by input name, integer labels)`` as ``save`` wrote them."""
    with np.load(path, allow_pickle=False) as npz:
        logits = {name: npz[f"logits_{name}"] for name in INPUT_NAMES}
        return logits, npz["labels"]


def digest(logits: dict[str, np.ndarray], labels: np.ndarray) -> str:
    """SHA-256 (first 16 hex digits) of the probe arrays: records from different runs compare only if equal."""
    sha = hashlib.sha256(labels.astype(np.int64).tobytes())
    for name in INPUT_NAMES:
        sha.update(np.ascontiguousarray(logits[name]).tobytes())
    return sha.hexdigest()[:16]

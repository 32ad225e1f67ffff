"""Per-epoch diagnostics that show *why* a variant trains, sticks or diverges.

After every epoch each backend evaluates a fixed probe batch (the first ``PROBE_SIZE`` training rows,
dropout off) and reports its logits and the global L2 norm of the training loss' gradient there. From
those this module derives, identically for every backend:

  saturated_share = share of probe rows with softmax(z)[true class] <= 1e-7   (log p <= ln 1e-7)
  max_abs_logit   = max |z|
  predicted_shares[k] = share of probe rows whose argmax is class k (a stuck model puts them on few classes)

A clipped loss is stuck when most rows are saturated (each contributes -ln(1e-7) = 16.12 with zero
gradient): ~89% saturated gives the post's stuck cost of ~14.3.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from common.data import class_shares
from common.reference import log_softmax

PROBE_SIZE = 1000
SATURATION_PROBABILITY = 1e-7

# Which computation a cross-entropy actually ran, as reported in records and findings.
LOSS_PATHS = {
    "logits": "logit cross-entropy (log-softmax of the logits)",
    "recovered_logits": "probability loss rewritten to use the logits behind the softmax output",
    "clipped_probs": "log of probabilities clipped to [1e-7, 1 - 1e-7]",
    "log_probs": "raw log of the softmax probabilities (no clip, no rewrite)",
}
# The path of each reference loss kind (common.reference.LOSS_KINDS) when the framework does not rewrite it,
# as in PyTorch, JAX and the numpy reference; Keras decides per engine.
PLAIN_LOSS_PATH = {"logits": "logits", "native": "log_probs", "clipped": "clipped_probs"}


@dataclasses.dataclass(frozen=True)
class EpochDiagnostics:
    epoch: int  # 1-based; 0 is before training
    saturated_share: float
    grad_norm: float
    max_abs_logit: float
    loss_path: str
    predicted_shares: tuple[float, ...] | None = None  # None: the logits were not finite

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["predicted_shares"] = None if self.predicted_shares is None else list(self.predicted_shares)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def probe_rows(n_train: int) -> slice:
    return slice(0, min(PROBE_SIZE, n_train))


def diagnose(epoch: int, logits: np.ndarray, y: np.ndarray, grad_norm: float, loss_path: str) -> EpochDiagnostics:
    if loss_path not in LOSS_PATHS:
        raise ValueError(f"loss_path={loss_path!r}; known: {', '.join(LOSS_PATHS)}")
    logits = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(logits).all():  # a diverged model: no meaningful probabilities to count
        return EpochDiagnostics(epoch, math.nan, float(grad_norm), math.nan, loss_path)
    true_log_prob = (log_softmax(logits) * y).sum(-1)
    saturated = float(np.mean(true_log_prob <= math.log(SATURATION_PROBABILITY)))
    max_abs = float(np.abs(logits).max())
    shares = tuple(round(float(s), 6) for s in class_shares(logits.argmax(-1), logits.shape[-1]))
    return EpochDiagnostics(epoch, saturated, float(grad_norm), max_abs, loss_path, shares)


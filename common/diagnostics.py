"""Per-epoch diagnostics that show *why* a variant trains, sticks or diverges.

After every epoch each backend evaluates a fixed probe batch (the first ``PROBE_SIZE`` training rows,
dropout off) and reports its logits and the global L2 norm of the training loss' gradient there. From
those this module derives, identically for every backend:

  saturated_share = share of probe rows with softmax(z)[true class] <= 1e-7   (log p <= ln 1e-7)
  max_abs_logit   = max |z|
  predicted_shares[k] = share of probe rows whose argmax is class k (a stuck model puts them on few classes)

A clipped loss is stuck when most rows are saturated (each contributes -ln(1e-7) = 16.12 with zero
gradient): ~89% saturated gives the post's stuck cost of ~14.3.

The trajectory of a stuck run (what moves it from one plateau to another) adds, per epoch:

  locked_classes     = the classes the model predicts (argmax, eval mode) for at least ``LOCKED_SHARE`` (1%) of
                       the class probe's rows at the end of the epoch (``common.stuck.locked_classes``); the class
                       probe is the first ``CLASS_PROBE_SIZE`` training rows (fixed, so epochs compare like with
                       like), with their shares in ``train_predicted_shares``
  unclipped_rows     = training rows whose true-class probability p_t, in the train step that visited them
                       (training mode, with the dropout that step drew), lay strictly inside the clip bounds:
                       clip_epsilon < p_t < 1 - clip_epsilon, compared in the framework's own float32
  nonzero_grad_steps = steps of the epoch whose parameter gradient had a non-zero entry (read off the output
                       layer's gradient; ``backends.jax_backend.step_counts`` says why that is the same)

The two counts are taken inside each backend's train step and read with the step losses, in the epoch's one
device-to-host transfer (``StepCounts``): JAX (fit and loop), PyTorch (fit and loop) and the Keras loops; Keras'
``fit`` runs Keras' own step and counts nothing (None). With the clipped loss only unclipped rows have a
gradient, so a step has one exactly when its batch holds such a row (Adam's momentum still carries earlier
updates on, decaying by beta_1 per step). A *hop* is a change of the locked class set between the ends of two
consecutive epochs (``class_hops``); the set at the end of epoch 1 is the first lock-in, not a hop.

The class probe is a subset because an eval pass over all 60,000 training rows is a third of an epoch's matrix
work (one forward pass against a step's forward and backward): measured on this project's 2-core CPU (shared with
other work), 0.8-1.1 s per epoch against 5.7-6.2 s for an epoch of the JAX fit path, the fastest. The first 10,000
rows take 0.12-0.16 s (2-3%) and resolve a class share to 0.01%, a hundred times finer than the 1% threshold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.data import class_shares
from common.reference import log_softmax
from common.stuck import locked_classes

PROBE_SIZE = 1000
CLASS_PROBE_SIZE = 10_000
SATURATION_PROBABILITY = 1e-7

# Which computation a cross-entropy actually ran, as reported in records and findings.
LOSS_PATHS = {
    "logits": "logit cross-entropy (log-softmax of the logits)",
    "recovered_logits": "probability loss rewritten to use the logits behind the softmax output",
    "clipped_probs": "log of probabilities clipped to [1e-7, 1 - 1e-7]",
    "log_probs": "raw log of the softmax probabilities (no clip, no rewrite)",
    "given": "a loss given to the trainer by its caller (common.training.GivenLoss), named by the spec's loss_cell",
}
# The path of each reference loss kind (common.reference.LOSS_KINDS) when the framework does not rewrite it,
# as in PyTorch, JAX and the numpy reference; Keras decides per engine.
PLAIN_LOSS_PATH = {"logits": "logits", "native": "log_probs", "clipped": "clipped_probs"}


@dataclasses.dataclass(frozen=True)
class StepCounts:
    """What the train steps of one epoch counted (module docstring), one entry per step, read with their losses."""

    unclipped_rows: np.ndarray  # (steps,) int: rows with clip_epsilon < p_true < 1 - clip_epsilon
    nonzero_gradient: np.ndarray  # (steps,) bool: some entry of the step's parameter gradient is non-zero

    @classmethod
    def from_columns(cls, counts: np.ndarray) -> StepCounts:
        """From a (steps, 2) integer array: unclipped rows, then 1 where the gradient was non-zero."""
        counts = np.asarray(counts)
        return cls(counts[:, 0].astype(np.int64), counts[:, 1] != 0)


@dataclasses.dataclass(frozen=True)
class EpochDiagnostics:
    epoch: int  # 1-based; 0 is before training
    saturated_share: float
    grad_norm: float
    max_abs_logit: float
    loss_path: str
    predicted_shares: tuple[float, ...] | None = None  # None: the logits were not finite
    # The trajectory (module docstring); None where not measured (epoch 0's counts, a path that does not count).
    train_predicted_shares: tuple[float, ...] | None = None
    locked_classes: tuple[int, ...] | None = None
    unclipped_rows: int | None = None
    nonzero_grad_steps: int | None = None

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        for name in ("predicted_shares", "train_predicted_shares", "locked_classes"):
            values[name] = None if values[name] is None else list(values[name])
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def probe_rows(n_train: int) -> slice:
    return slice(0, min(PROBE_SIZE, n_train))


def class_probe_rows(n_train: int) -> slice:
    """The training rows whose eval-mode predictions give the locked class set (module docstring)."""
    return slice(0, min(CLASS_PROBE_SIZE, n_train))


def diagnose(epoch: int, logits: np.ndarray, y: np.ndarray, grad_norm: float, loss_path: str,
             train_predicted: np.ndarray | None = None, counts: StepCounts | None = None) -> EpochDiagnostics:
    """The probe's figures from its eval-mode ``logits``, the locked classes from the class probe's predicted
    classes ``train_predicted``, and the epoch's totals of the train steps' ``counts``."""
    if loss_path not in LOSS_PATHS:
        raise ValueError(f"loss_path={loss_path!r}; known: {', '.join(LOSS_PATHS)}")
    totals = {} if counts is None else {"unclipped_rows": int(counts.unclipped_rows.sum()),
                                        "nonzero_grad_steps": int(counts.nonzero_gradient.sum())}
    logits = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(logits).all():  # a diverged model: no meaningful probabilities or predictions
        return EpochDiagnostics(epoch, math.nan, float(grad_norm), math.nan, loss_path, **totals)
    true_log_prob = (log_softmax(logits) * y).sum(-1)
    saturated = float(np.mean(true_log_prob <= math.log(SATURATION_PROBABILITY)))
    max_abs = float(np.abs(logits).max())
    shares = rounded_shares(logits.argmax(-1), logits.shape[-1])
    trajectory = {}
    if train_predicted is not None:
        train_shares = rounded_shares(np.asarray(train_predicted), logits.shape[-1])
        trajectory = {"train_predicted_shares": train_shares, "locked_classes": locked_classes(train_shares)}
    return EpochDiagnostics(epoch, saturated, float(grad_norm), max_abs, loss_path, shares, **trajectory, **totals)


def rounded_shares(predicted: np.ndarray, classes: int) -> tuple[float, ...]:
    return tuple(round(float(s), 6) for s in class_shares(predicted, classes))


@dataclasses.dataclass(frozen=True)
class Hop:
    """The locked class set changed during ``epoch``: it was ``before`` at the end of the previous epoch."""

    epoch: int
    before: tuple[int, ...]
    after: tuple[int, ...]

    def text(self) -> str:
        return f"epoch {self.epoch}: {{{', '.join(map(str, self.before))}}} → {{{', '.join(map(str, self.after))}}}"


def class_hops(diagnostics: Sequence[dict[str, Any]]) -> list[Hop]:
    """Every change of a record's locked class set between the ends of consecutive epochs, from epoch 1 on
    (the set after epoch 1 is where the run first locks in; the untrained model's set before it is no plateau).
    Epochs without a locked set (not measured, or a diverged model) break the chain: no hop across them."""
    hops, previous = [], None
    for entry in diagnostics:
        current = entry.get("locked_classes")
        current = None if current is None or entry["epoch"] < 1 else tuple(current)
        if previous is not None and current is not None and current != previous:
            hops.append(Hop(entry["epoch"], previous, current))
        previous = current
    return hops


"""The loss-path vocabulary of the atlas, the float64 references of every path, and the classifier.

A cross-entropy call is given the output of a head (``given``: the logits themselves, a softmax or sigmoid
of them, their log-softmax) and targets ``T`` (one-hot rows, or label-smoothed ones). What it computes is
decided here from measured numbers only: the loss the call returned on the probe rows is compared with the
reference value of every candidate path, computed in numpy from the same float32 logits ``z`` and the same
float32 head output. ``C`` is the number of classes, ``eps`` = 1e-7 (``keras.backend.epsilon()``, the
default of ``tf.compat.v1.losses.log_loss`` and of the hand-written forms).

Paths (per class k; ``P`` is a probability array the call works on, float32 as the library holds it: the
given output itself, or the call's own softmax (sigmoid for binary losses) of the given output or of the
logits it recovered behind it, computed in float32, underflow included):

  logits            the call treats ``given`` as logits and takes the exact log-softmax (categorical
                    families: log q_k = z_k - logsumexp(z)) or log-sigmoid (binary families:
                    log q_k = -softplus(-z_k), log(1 - q_k) = -softplus(z_k)); the given values are logits.
  recovered_logits  the same exact formula, of the logits ``z`` behind a probability output: the call was
                    given probabilities and found their logits (Keras on TensorFlow: ``_keras_logits``, or the
                    input of the producing Softmax/Sigmoid op in a traced graph).
  double_softmax    categorical families given probabilities: log q = log_softmax(P), the softmax applied a
                    second time (bounded loss, vanishing gradient through the first softmax).
  double_sigmoid    binary families given probabilities: log q = log_sigmoid(P), a sigmoid on top of them.
  clipped           log of P clipped to [eps, 1 - eps] (categorical: after or before renormalising
                    P / sum(P), or clipped to [eps, 1] for KL); binary: log c, log(1 - c), c = clip(P).
                    A clipped entry has a zero derivative.
  clipped_eps       binary: clip first, then add eps inside the log: log(c + eps), log(1 - c + eps).
  eps_added         log(P + eps) (binary also log(1 - P + eps)): no clip; a finite derivative 1/(P + eps).
                    Both binary forms also in the variant a TensorFlow graph computes, where constant folding
                    turns (1 - x) + eps into (1 + eps) - x with 1 + eps = 1.00000012 in float32.
  clamped           max(log P, -100) (binary also max(log(1 - P), -100)), PyTorch's BCE clamp.
  raw_log           log P as it is: -inf where P underflowed to 0, so the loss is inf, or NaN where a zero
                    target multiplies it (0 * -inf).
  no_log            the log forgotten: the loss is -sum_k T_k P_k, in [-1, 0].
  other             no candidate matches the measured loss.
  error             the call raised (the record's ``error`` holds the message).

Loss families (what the call computes from the log terms L_k, and from the probabilities Q_k behind them,
row by row; ``reduction`` then takes the mean over rows (``rows``) or over rows and classes (``elements``)):

  categorical        -sum_k T_k L_k
  kl                 KL(T || q) = sum_k T_k (log T_k - L_k): the same as categorical for one-hot targets
                     (0 log 0 = 0); Keras' clip of T to [eps, 1] adds less than 9 * eps * 17 per row.
  categorical_focal  -sum_k alpha T_k (1 - Q_k)^gamma L_k, alpha = 0.25, gamma = 2 (Keras' defaults)
  binary             -sum_k [T_k L1_k + (1 - T_k) L0_k]  (L1 = log q_k, L0 = log(1 - q_k))
  binary_focal       sum_k (1 - p_t)^gamma * bce_k, p_t = T_k Q_k + (1 - T_k)(1 - Q_k), gamma = 2

A path is a property of the call, not of the input: the atlas decides it jointly over its inputs (``decide``),
because on moderate logits (nothing saturated) several paths give the same numbers, and only saturated
rows tell them apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from common.reference import log_softmax

EPSILON = 1e-7
CLAMP = -100.0  # PyTorch's binary_cross_entropy clamps each log at -100
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
# Float32 clip bounds, as every library holds them: 1 - 1e-7 rounds to 0.99999988, so 1 - hi = 1.19e-7.
CLIP_LOW = float(np.float32(EPSILON))
CLIP_HIGH = float(np.float32(1.0 - EPSILON))
# In a TensorFlow graph, grappler's constant folding (ConstantPushDown) rewrites (1 - p) + eps as
# (1 + eps) - p, with 1 + eps rounded to float32: 1.00000012, so at p = 1 the log's argument is 1.19e-7, not 1e-7.
ONE_PLUS_EPS = float(np.float32(1.0) + np.float32(EPSILON))
# Agreement of a measured float32 loss with a float64 reference: float32 sums of 100 rows carry ~1e-6
# relative error; the nearest distinct paths on the saturated rows differ by more than 1e-3 relative.
RTOL = 1e-4
ATOL = 1e-6

LOSS_PATHS = {
    "logits": "exact cross-entropy of the given logits: log-softmax (log-sigmoid for binary losses)",
    "recovered_logits": "given probabilities, the call found the logits behind them and took the exact "
                        "log-softmax (log-sigmoid) of those",
    "double_softmax": "given probabilities, the call applied a softmax to them again: -sum T log_softmax(p)",
    "double_sigmoid": "given probabilities, the call applied a sigmoid to them again: BCE with logits = p",
    "clipped": "log of the probabilities clipped to [1e-7, 1 - 1e-7]: -sum T log(clip(p))",
    "clipped_eps": "clip to [1e-7, 1 - 1e-7], then 1e-7 added inside the log: log(clip(p) + 1e-7)",
    "eps_added": "1e-7 added inside the log, no clip: -sum T log(p + 1e-7)",
    "clamped": "each log clamped at -100: max(log p, -100), max(log(1 - p), -100)",
    "raw_log": "the raw log of the probabilities: inf (or NaN, 0 * -inf) once a probability underflows to 0",
    "no_log": "the log forgotten: -sum T p, a loss in [-1, 0]",
    "other": "no candidate path matches the measured loss",
    "error": "the call raised an exception",
}
# When several paths give the same numbers on every input, the first of them names the cell.
PREFERENCE = ("logits", "recovered_logits", "double_softmax", "double_sigmoid", "clipped", "clipped_eps",
              "eps_added", "clamped", "raw_log", "no_log")
FAMILIES = {
    "categorical": "-sum_k T_k log q_k",
    "kl": "sum_k T_k (log T_k - log q_k) (= categorical for one-hot targets)",
    "categorical_focal": "-sum_k 0.25 T_k (1 - q_k)^2 log q_k",
    "binary": "-sum_k [T_k log q_k + (1 - T_k) log(1 - q_k)]",
    "binary_focal": "sum_k (1 - p_t)^2 bce_k, p_t = T_k q_k + (1 - T_k)(1 - q_k)",
}
CATEGORICAL = ("categorical", "kl", "categorical_focal")
REDUCTIONS = ("rows", "elements")


@dataclasses.dataclass(frozen=True)
class Probe:
    """One input as a call saw it: float32 logits (n, C), the target distribution T (n, C), the head output."""

    logits: np.ndarray
    targets: np.ndarray
    given: np.ndarray

    @property
    def gives_probabilities(self) -> bool:
        """The head output is a probability array (every entry in [0, 1]), not logits or log-probabilities."""
        return _is_probability(np.asarray(self.given))


# --- log terms -------------------------------------------------------------------------------------------

def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(1 / (1 + exp(-x))) = -softplus(-x), stable for any sign."""
    return -np.logaddexp(0.0, -x)


def softmax32(x: np.ndarray) -> np.ndarray:
    """Softmax in float32, as a framework computes it (its underflows to exactly 0 included)."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def _normalise32(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return p / p.sum(axis=-1, keepdims=True)


def _clip(p: np.ndarray, high: float = CLIP_HIGH) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), CLIP_LOW, high)


# --- families ---------------------------------------------------------------------------------------------

def _rows_categorical(family: str, targets: np.ndarray, log_q: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        if family == "categorical_focal":
            return -(FOCAL_ALPHA * targets * (1.0 - q) ** FOCAL_GAMMA * log_q).sum(-1)
        return -(targets * log_q).sum(-1)


def _rows_binary(family: str, targets: np.ndarray, log_q: np.ndarray, log_not_q: np.ndarray,
                 q: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        bce = -(targets * log_q + (1.0 - targets) * log_not_q)
        if family == "binary_focal":
            p_t = targets * q + (1.0 - targets) * (1.0 - q)
            bce = (1.0 - p_t) ** FOCAL_GAMMA * bce
        return bce.sum(-1)


def reduce_rows(rows: np.ndarray, reduction: str, classes: int) -> float:
    """Mean over rows, divided by C as well for the ``elements`` reduction."""
    with np.errstate(invalid="ignore"):
        value = float(np.mean(rows))
    return value / classes if reduction == "elements" else value


# --- candidates -------------------------------------------------------------------------------------------

Candidate = tuple[str, np.ndarray]  # (path, per-row losses)


def _categorical_candidates(family: str, probe: Probe) -> list[Candidate]:
    t = probe.targets
    z = np.asarray(probe.logits, dtype=np.float64)
    given = np.asarray(probe.given, dtype=np.float64)
    as_probs = probe.gives_probabilities

    def rows(log_q: np.ndarray, q: np.ndarray) -> np.ndarray:
        return _rows_categorical(family, t, log_q, q)

    candidates = [
        ("double_softmax" if as_probs else "logits", rows(log_softmax(given), np.exp(log_softmax(given)))),
        ("recovered_logits" if as_probs else "logits", rows(log_softmax(z), np.exp(log_softmax(z)))),
    ]
    # Probabilities as the call may hold them (``_probability_arrays``); raw logits taken for probabilities
    # (a from_logits=False call on logits) only ever get clipped.
    for p32 in _probability_arrays(probe, softmax32):
        p = p32.astype(np.float64)
        clip_first = _clip(p)
        for c in (_clip(_normalise32(p32)),                        # normalise, then clip (Keras' categorical)
                  clip_first / clip_first.sum(-1, keepdims=True),  # clip, then renormalise (log, log-softmax)
                  _clip(p, high=1.0)):                             # clip to [eps, 1], no normalising (KL)
            candidates.append(("clipped", rows(_log(c), c)))
        if not _is_probability(p32):
            continue
        candidates += [
            ("eps_added", rows(_log(p32 + np.float32(EPSILON)), p)),
            ("clamped", rows(np.maximum(_log(p), CLAMP), p)),
            ("raw_log", rows(_log(p), p)),
        ]
        if family != "categorical_focal":
            candidates.append(("no_log", rows(p, p)))
    return candidates


def _binary_candidates(family: str, probe: Probe) -> list[Candidate]:
    t = probe.targets
    z = np.asarray(probe.logits, dtype=np.float64)
    given = np.asarray(probe.given, dtype=np.float64)
    as_probs = probe.gives_probabilities

    def rows(log_q: np.ndarray, log_not_q: np.ndarray, q: np.ndarray) -> np.ndarray:
        return _rows_binary(family, t, log_q, log_not_q, q)

    # Probabilities as the call may hold them (``_probability_arrays``), or raw logits taken for them.
    arrays = _probability_arrays(probe, sigmoid32)
    candidates = [("double_sigmoid" if as_probs else "logits",
                   rows(log_sigmoid(given), log_sigmoid(-given), np.exp(log_sigmoid(given))))]
    # The exact formula of the logits behind the output; a focal factor from whichever probabilities the
    # call holds.
    candidates += [("recovered_logits" if as_probs else "logits",
                    rows(log_sigmoid(z), log_sigmoid(-z), p32.astype(np.float64)))
                   for p32 in arrays if _is_probability(p32)]
    eps = np.float32(EPSILON)
    for p32 in arrays:
        p = p32.astype(np.float64)
        c = _clip(p)
        candidates += [("clipped", rows(_log(c), _log(1.0 - c), p)),
                       ("clipped_eps", rows(_log(c + EPSILON), _log(1.0 - c + EPSILON), p)),
                       ("clipped_eps", rows(_log(c + EPSILON), _log(ONE_PLUS_EPS - c), p))]
        if _is_probability(p32):
            candidates += [
                ("eps_added", rows(_log(p32 + eps), _log(np.float32(1.0) - p32 + eps), p)),
                ("eps_added", rows(_log(p32 + eps), _log(ONE_PLUS_EPS - p), p)),
                ("clamped", rows(np.maximum(_log(p), CLAMP), np.maximum(_log(1.0 - p), CLAMP), p)),
                ("raw_log", rows(_log(p), _log(1.0 - p), p)),
            ]
    return candidates


def _probability_arrays(probe: Probe, activation) -> list[np.ndarray]:
    """The float32 arrays a call may take for probabilities: the given output, the call's own activation of
    it, and the activation of the logits behind it (a call that recovered them, then applied its own)."""
    return [np.asarray(probe.given, np.float32), activation(probe.given), activation(probe.logits)]


def _is_probability(p: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0)


def references(family: str, reduction: str, probe: Probe) -> list[tuple[str, float]]:
    """Every candidate path with its reference loss on ``probe`` (a path may appear with several variants)."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}; known: {', '.join(FAMILIES)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; known: {', '.join(REDUCTIONS)}")
    make = _categorical_candidates if family in CATEGORICAL else _binary_candidates
    classes = probe.logits.shape[-1]
    return [(path, reduce_rows(rows, reduction, classes)) for path, rows in make(family, probe)]


def agrees(measured: float, reference: float) -> bool:
    """A non-finite loss agrees with a non-finite reference (inf and NaN alike); finite ones to RTOL/ATOL."""
    if not math.isfinite(measured) or not math.isfinite(reference):
        return not math.isfinite(measured) and not math.isfinite(reference)
    return abs(measured - reference) <= ATOL + RTOL * abs(reference)


def matching_paths(measured: float | None, family: str, reduction: str, probe: Probe) -> list[str]:
    """The paths whose reference agrees with the measured loss, in ``PREFERENCE`` order (no error: [])."""
    if measured is None:
        return []
    found = {path for path, value in references(family, reduction, probe) if agrees(measured, value)}
    return [path for path in PREFERENCE if path in found]


def decide(per_input: Sequence[list[str] | None]) -> str:
    """The path of a call from its matching paths on each input (``None``: the call raised there).

    The first path in ``PREFERENCE`` that matches on every input; ``error`` if the call raised on every input,
    ``other`` if no path fits them all (or it raised on some inputs only).
    """
    if all(paths is None for paths in per_input):
        return "error"
    if any(paths is None for paths in per_input):
        return "other"
    common = set.intersection(*(set(paths) for paths in per_input))
    return next((path for path in PREFERENCE if path in common), "other")


# --- the exact loss and its gradient ------------------------------------------------------------------------

def exact_rows(family: str, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row loss of the family's exact formula on the logits (float64): the ``logits`` path."""
    z = np.asarray(logits, dtype=np.float64)
    if family in CATEGORICAL:
        log_q = log_softmax(z)
        return _rows_categorical(family, targets, log_q, np.exp(log_q))
    return _rows_binary(family, targets, log_sigmoid(z), log_sigmoid(-z), 1.0 / (1.0 + np.exp(-z)))


def exact_loss(family: str, reduction: str, logits: np.ndarray, targets: np.ndarray) -> float:
    """The loss the call should return: the family's exact formula on the logits, reduced as the call does."""
    return reduce_rows(exact_rows(family, logits, targets), reduction, logits.shape[-1])


def exact_true_class_gradient(family: str, reduction: str, logits: np.ndarray, targets: np.ndarray,
                              labels: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """d(exact loss)/d z[r, label_r] for every row r, float64.

    Closed forms where they are short (categorical and KL: q_t sum(T) - T_t; binary: sigmoid(z_t) - T_t,
    written without cancellation), central differences of the per-row loss for the focal families.
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    z_t, t_t = z[rows, labels], targets[rows, labels]
    if family in ("categorical", "kl"):
        derivative = np.exp(log_softmax(z))[rows, labels] * targets.sum(-1) - t_t
    elif family == "binary":
        derivative = -t_t * np.exp(log_sigmoid(-z_t)) + (1.0 - t_t) * np.exp(log_sigmoid(z_t))
    else:
        bump = np.zeros_like(z)
        bump[rows, labels] = step
        derivative = (exact_rows(family, z + bump, targets) - exact_rows(family, z - bump, targets)) / (2 * step)
    scale = len(z) * (z.shape[-1] if reduction == "elements" else 1)
    return derivative / scale

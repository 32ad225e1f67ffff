"""Stuck-state arithmetic: why a stuck run's cost and accuracy take the values they do.

With the clipped probability loss, a row whose true-class probability is clipped at ``eps`` costs
``-ln(eps)`` (16.118 for 1e-7) and gives an exactly zero gradient. A stuck model predicts a few classes ``S``
with certainty: rows of ``S`` cost ~0, every other row costs ``-ln(eps)``. So, with ``share`` the share of
each class among the rows (from the data, never typed in):

    cost     ~= -ln(eps) * (1 - sum_{k in S} share_train[k])
    accuracy ~=             sum_{k in S} share_test[k]

``explain`` reads ``S`` off a record (the classes its test predictions fall on) and sets both predictions
beside the measured figures; ``fit_class_sets`` runs the arithmetic backwards, finding the class sets whose
shares give a printed figure (the post's costs and accuracy).

    >>> round(predicted_cost([0.5, 0.5], (0,), 1e-7), 3)
    8.059
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

# A class the model predicts for at least this share of the test rows counts as one it has locked in.
LOCKED_SHARE = 0.01


def clip_cost(eps: float) -> float:
    """``-ln(eps)``: what one clipped row costs."""
    return -math.log(eps)


def locked_classes(predicted_shares: Sequence[float], min_share: float = LOCKED_SHARE) -> tuple[int, ...]:
    """The classes a model predicts for at least ``min_share`` of the rows."""
    return tuple(k for k, share in enumerate(predicted_shares) if share >= min_share)


def predicted_cost(train_shares: Sequence[float], classes: Sequence[int], eps: float) -> float:
    """``-ln(eps) * (1 - sum of the training shares of classes)``."""
    return clip_cost(eps) * (1.0 - sum(train_shares[k] for k in classes))


def predicted_accuracy(test_shares: Sequence[float], classes: Sequence[int]) -> float:
    """``sum of the test shares of classes``: every row of those classes right, every other wrong."""
    return float(sum(test_shares[k] for k in classes))


@dataclasses.dataclass(frozen=True)
class Explanation:
    """A stuck run's figures against what its locked-in classes predict."""

    classes: tuple[int, ...]
    predicted_cost: float
    measured_cost: float
    predicted_accuracy: float
    measured_accuracy: float

    def text(self) -> str:
        digits = ", ".join(map(str, self.classes)) or "none"
        return (f"locks in digit(s) {digits}: predicted cost {self.predicted_cost:.3f} vs measured "
                f"{self.measured_cost:.3f}, predicted accuracy {self.predicted_accuracy:.4f} vs measured "
                f"{self.measured_accuracy:.4f}")


def explain(record: dict[str, Any]) -> Explanation | None:
    """The arithmetic for one finished run's last epoch; None when the record lacks what it needs."""
    shares, predicted = record.get("label_shares"), record.get("test_predicted_shares")
    costs = record.get("epoch_costs") or []
    if not shares or not predicted or not costs or costs[-1] is None or record.get("test_accuracy") is None:
        return None
    classes = locked_classes(predicted)
    eps = record["spec"]["clip_epsilon"]
    return Explanation(classes, predicted_cost(shares["train"], classes, eps), costs[-1],
                       predicted_accuracy(shares["test"], classes), record["test_accuracy"])


@dataclasses.dataclass(frozen=True)
class ClassSetFit:
    """A class set whose shares give ``value``, ``residual`` away from the figure it was fitted to."""

    classes: tuple[int, ...]
    value: float
    residual: float


def fit_class_sets(target: float, value_of: Callable[[tuple[int, ...]], float], classes: int = 10,
                   max_size: int = 2, best: int = 3) -> list[ClassSetFit]:
    """The ``best`` class sets of up to ``max_size`` classes whose ``value_of`` is closest to ``target``.

    Small sets only: a stuck model locks in one or two classes, and with larger sets some subset of the ten
    class shares comes close to almost any number.
    """
    fits = [ClassSetFit(subset, value_of(subset), abs(value_of(subset) - target))
            for size in range(1, max_size + 1) for subset in itertools.combinations(range(classes), size)]
    return sorted(fits, key=lambda fit: fit.residual)[:best]


def decompose_costs(costs: Sequence[float], train_shares: Sequence[float], eps: float,
                    max_size: int = 2) -> list[ClassSetFit]:
    """For each printed epoch cost, the class set whose clipped-cost arithmetic fits it best."""
    value_of = lambda subset: predicted_cost(train_shares, subset, eps)  # noqa: E731
    return [fit_class_sets(cost, value_of, len(train_shares), max_size, best=1)[0] for cost in costs]


def decompose_accuracy(accuracy: float, test_shares: Sequence[float], max_size: int = 2,
                       best: int = 3) -> list[ClassSetFit]:
    """The class sets whose test shares come closest to a printed accuracy."""
    value_of = lambda subset: predicted_accuracy(test_shares, subset)  # noqa: E731
    return fit_class_sets(accuracy, value_of, len(test_shares), max_size, best)


def describe(records: list[dict[str, Any]], stuck_below: float = 0.3) -> str:
    """One sentence per stuck seed of a cell: the classes it locked in and the arithmetic against its figures."""
    parts = []
    for record in records:
        explanation = explain(record) if (record.get("test_accuracy") or 0.0) < stuck_below else None
        if explanation and record["status"] == "ok":
            parts.append(f"Seed {record['seed']} {explanation.text()}.")
    return " ".join(parts)

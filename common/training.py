"""The training driver every backend shares: epochs, batch order, divergence, diagnostics, timing.

A backend supplies a ``Trainer`` for one (spec, variant): it owns the model, optimiser and compiled steps,
and runs one epoch over given batch indices. Everything else — which batches, when to stop, what to measure,
how to time it — happens here once, so fit and loop and all frameworks are driven identically.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common.data import Dataset, class_shares, epoch_batches, steps_per_epoch
from common.diagnostics import EpochDiagnostics, StepCounts, class_probe_rows, diagnose, probe_rows
from common.spec import Spec
from common.weights import Weights

EpochCallback = Callable[[int, float, EpochDiagnostics], None]
#: A loss the caller gives a trainer instead of its variant's own: ``loss(y, logits) -> scalar`` on the
#: framework's tensors (``y`` one-hot float rows), written in that framework by the caller (the atlas' cells,
#: which apply their head to the logits first); ``Spec.loss_cell`` names it, so records and their keys tell
#: it apart. The model then ends in its logits (a ``logits`` variant), and ``Trainer.loss_path`` is ``given``.
GivenLoss = Callable[[Any, Any], Any]


def check_given_loss(spec: Spec, variant_head: str, loss: GivenLoss | None) -> None:
    """A given loss comes with its name in ``spec.loss_cell`` and a ``logits`` variant, and only then."""
    if (loss is None) != (spec.loss_cell is None):
        raise ValueError(f"spec.loss_cell={spec.loss_cell!r} but {'no' if loss is None else 'a'} loss was given: "
                         "a given loss needs its name in spec.loss_cell, and a named one needs the loss")
    if loss is not None and variant_head != "logits":
        raise ValueError(f"the given loss {spec.loss_cell!r} trains the model's logits: use a logits variant "
                         f"(loop_logits, fit_logits), not a {variant_head} one")


class Trainer(abc.ABC):
    """One model + optimiser + training path, set up from canonical weights with its data on the device."""

    #: Which computation the training loss runs (a key of ``common.diagnostics.LOSS_PATHS``).
    loss_path: str
    #: Seconds spent compiling (tracing, XLA, torch.compile), measured by the backend; 0 for eager paths.
    compile_seconds: float = 0.0
    #: What the steps of the last ``run_epoch`` counted (``common.diagnostics.StepCounts``), read with its losses;
    #: None where the training path does not count.
    step_counts: StepCounts | None = None

    @abc.abstractmethod
    def run_epoch(self, batches: np.ndarray) -> np.ndarray:
        """Train on ``batches`` (steps, batch_size) of training-row indices; return the per-step losses.

        The losses stay on the device during the epoch and are read once at its end, with ``step_counts``.
        """

    @abc.abstractmethod
    def probe(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """Eval-mode logits on ``x`` and the global L2 norm of the training loss' gradient there."""

    @abc.abstractmethod
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Eval-mode mean loss (the variant's own loss) and the predicted class of every row (argmax)."""

    @abc.abstractmethod
    def weights(self) -> Weights:
        """Current parameters in the canonical layout."""

    def train_predictions(self, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Eval-mode predicted class of every row of ``x`` (training rows: the locked class set); None where the
        trainer cannot tell."""
        return self.evaluate(x, y)[1]


@dataclasses.dataclass
class TrainOutcome:
    epoch_costs: list[float]
    step_losses: np.ndarray
    diagnostics: list[EpochDiagnostics]
    status: str  # "ok" or "diverged"
    first_nonfinite_step: int | None
    test_loss: float
    test_accuracy: float
    test_predicted_shares: np.ndarray  # (classes,): share of test rows predicted as each class
    loss_path: str
    wall_seconds: float
    compile_seconds: float
    steps_per_second: float
    trainer: Trainer


def train(spec: Spec, trainer: Trainer, data: Dataset, on_epoch: EpochCallback | None = None) -> TrainOutcome:
    """Run ``spec.epochs`` epochs of the shared batch order; stop after a non-finite epoch if the spec says so."""
    n_train = len(data.x_train)
    probe, class_probe = probe_rows(n_train), class_probe_rows(n_train)
    probe_x, probe_y = data.x_train[probe], data.y_train[probe]

    def diagnostics_at(epoch: int, counts: StepCounts | None = None) -> EpochDiagnostics:
        logits, grad_norm = trainer.probe(probe_x, probe_y)
        predicted = trainer.train_predictions(data.x_train[class_probe], data.y_train[class_probe])
        return diagnose(epoch, logits, probe_y, grad_norm, trainer.loss_path, predicted, counts)

    diagnostics = [diagnostics_at(0)]
    costs: list[float] = []
    losses: list[np.ndarray] = []
    first_bad: int | None = None
    train_seconds = 0.0
    for epoch in range(spec.epochs):
        batches = epoch_batches(spec, epoch, n_train)
        start = time.perf_counter()
        epoch_losses = np.asarray(trainer.run_epoch(batches), dtype=np.float64)
        train_seconds += time.perf_counter() - start
        losses.append(epoch_losses)
        costs.append(float(epoch_losses.mean()))
        bad = np.flatnonzero(~np.isfinite(epoch_losses))
        if bad.size and first_bad is None:
            first_bad = epoch * steps_per_epoch(spec, n_train) + int(bad[0])
        diagnostics.append(diagnostics_at(epoch + 1, trainer.step_counts))
        if on_epoch is not None:
            on_epoch(epoch + 1, costs[-1], diagnostics[-1])
        if first_bad is not None and spec.stop_on_nonfinite:
            break
    test_loss, predicted = trainer.evaluate(data.x_test, data.y_test)
    test_accuracy = float(np.mean(np.asarray(predicted) == data.y_test.argmax(-1)))
    step_losses = np.concatenate(losses)
    run_seconds = max(train_seconds - trainer.compile_seconds, 1e-9)
    return TrainOutcome(
        epoch_costs=costs,
        step_losses=step_losses,
        diagnostics=diagnostics,
        status="ok" if first_bad is None else "diverged",
        first_nonfinite_step=first_bad,
        test_loss=float(test_loss),
        test_accuracy=test_accuracy,
        test_predicted_shares=class_shares(predicted, data.y_test.shape[-1]),
        loss_path=trainer.loss_path,
        wall_seconds=train_seconds,
        compile_seconds=trainer.compile_seconds,
        steps_per_second=len(step_losses) / run_seconds,
        trainer=trainer,
    )

"""The one experiment spec every backend runs: the seed post's numbers plus what the post left implicit.

A ``Spec`` is frozen, validated on construction, serialises to JSON and has a stable hash that keys results.

    >>> from common.spec import Spec
    >>> Spec().epochs, Spec().batch_size
    (15, 100)
    >>> Spec.from_json(Spec(epochs=1).to_json()) == Spec(epochs=1)
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

INPUT_DIM = 28 * 28
NUM_CLASSES = 10

INPUT_SCALES = ("raw", "unit")
DATA_ORDERS = ("shuffled", "sequential")
PROB_LOSSES = ("native", "clipped")
OPTIMIZERS = ("adam", "sgd")
# How the probs head's softmax is written (Keras tells them apart; PyTorch and JAX compute one softmax):
# ``activation``: Dense(10, activation="softmax") as in the post; ``layer``: Dense(10) + keras.layers.Softmax();
# ``op``: Dense(10) + a layer applying the engine's bare softmax op (tf.nn.softmax on TensorFlow).
SOFTMAXES = ("activation", "layer", "op")
# How a hand-written loop's step runs: op by op (``eager``) or traced and compiled (tf.function, torch.compile,
# jax.jit). Fit runs have none (``None``): each framework's fit path is its own.
LOOP_EXECS = ("eager", "compiled")
# Fields added after results were published: left out of the hash while None, so older records keep their keys.
HASHED_WHEN_SET = ("loss_cell",)


class SpecError(ValueError):
    """A spec value that makes no sense; the message names the field and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """The dropout MLP on MNIST of the seed post. Defaults are the post's values.

    Fields the post left implicit:
      input_scale: ``raw`` keeps pixels 0..255 as the post does (the cause of the saturated softmax);
        ``unit`` divides by 255.
      train_size / test_size: ``None`` is the full split; an int takes a deterministic subset (common.data).
      data_order: ``shuffled`` draws one permutation per epoch from ``seed`` (shared by every backend and by
        fit and loop alike); ``sequential`` keeps file order, as the post's ``tf.data`` loop does.
      prob_loss: the probability cross-entropy of the ``probs`` head: ``native`` is what a user of that
        framework writes, ``clipped`` is the Keras-2 eager formula -sum(y * log(clip(p, eps, 1 - eps))).
      softmax: how the probs head's softmax is written (``SOFTMAXES``); logits runs keep the default.
      loop_exec: how a loop variant's step runs (``LOOP_EXECS``); ``None`` for fit runs.
      tf_version: the TensorFlow release (``"2.13"``) a versions-study run used in its own environment;
        ``None``: the framework installed with this project.
      optimizer: ``adam`` (the post) or ``sgd`` (plain SGD with the same learning rate, for parity tests).
      loss_cell: the name of a loss the caller gives the trainer instead of the variant's own (an atlas cell,
        ``framework[/engine] | call | head | from_logits=X | exec``; ``common.training.GivenLoss``); ``None``:
        the variant's loss. Set, it is part of the hash like any field; unset, it stays out of it, so records
        made before the field existed keep their keys.
      stop_on_nonfinite: stop a run at the end of the epoch in which its loss first became NaN/inf.
    """

    hidden_layers: int = 4
    hidden_units: int = 512
    drop_rate: float = 0.3
    init_stddev: float = 0.05
    optimizer: str = "adam"
    learning_rate: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    batch_size: int = 100
    epochs: int = 15
    seed: int = 777
    input_scale: str = "raw"
    train_size: int | None = None
    test_size: int | None = None
    data_order: str = "shuffled"
    prob_loss: str = "native"
    softmax: str = "activation"
    loop_exec: str | None = None
    tf_version: str | None = None
    clip_epsilon: float = 1e-7
    stop_on_nonfinite: bool = True
    loss_cell: str | None = None

    def __post_init__(self) -> None:
        _check_choice("input_scale", self.input_scale, INPUT_SCALES)
        _check_choice("data_order", self.data_order, DATA_ORDERS)
        _check_choice("prob_loss", self.prob_loss, PROB_LOSSES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("softmax", self.softmax, SOFTMAXES)
        if self.loop_exec is not None:
            _check_choice("loop_exec", self.loop_exec, LOOP_EXECS)
        if self.tf_version is not None and not re.fullmatch(r"\d+\.\d+", str(self.tf_version)):
            raise SpecError(f"tf_version={self.tf_version!r} must be a TensorFlow release like '2.13', or None")
        for name in ("hidden_layers", "hidden_units", "batch_size", "epochs"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        for name in ("train_size", "test_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1, hint="or None for the full split")
        if self.train_size is not None and self.train_size < self.batch_size:
            raise SpecError(
                f"train_size={self.train_size} is smaller than batch_size={self.batch_size}: "
                "no full batch to train on; use a train_size of at least one batch"
            )
        _check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        _check_range("beta_1", self.beta_1, 0.0, 1.0, high_open=True)
        _check_range("beta_2", self.beta_2, 0.0, 1.0, high_open=True)
        _check_range("clip_epsilon", self.clip_epsilon, 0.0, 0.5, low_open=True, high_open=True)
        for name in ("init_stddev", "learning_rate", "epsilon"):
            _check_range(name, getattr(self, name), 0.0, float("inf"), low_open=True)
        if self.loss_cell is not None and (not isinstance(self.loss_cell, str) or not self.loss_cell.strip()):
            raise SpecError(f"loss_cell={self.loss_cell!r} must name a loss (a non-empty string), or be None")
        if not isinstance(self.stop_on_nonfinite, bool):
            raise SpecError(f"stop_on_nonfinite must be true or false, got {self.stop_on_nonfinite!r}")

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Widths from input to output: (784, 512, 512, 512, 512, 10) by default."""
        return (INPUT_DIM, *([self.hidden_units] * self.hidden_layers), NUM_CLASSES)

    def replace(self, **changes: Any) -> Spec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Spec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(f"unknown spec field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls.from_dict(json.loads(text))

    def hash(self) -> str:
        """First 16 hex digits of SHA-256 over the canonical JSON (less the ``HASHED_WHEN_SET`` fields that are
        None): stable across processes and machines."""
        values = {k: v for k, v in self.to_dict().items() if not (k in HASHED_WHEN_SET and v is None)}
        return hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{name}={value!r} is not allowed; use one of: {', '.join(allowed)}")


def _check_int(name: str, value: Any, minimum: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = f" ({hint})" if hint else ""
        raise SpecError(f"{name}={value!r} must be an integer >= {minimum}{extra}")


def _check_range(name, value, low, high, low_open=False, high_open=False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise SpecError(f"{name}={value!r} must be a number in {interval}")

"""The probe harness every framework's child shares: a cell, its measurement, its records.

A ``Cell`` is one cross-entropy call as a user writes it: a head put on the logits (``head``: the output a
model ends in) and a loss called on that output (``loss(targets, output) -> scalar``), run one way
(``exec``: op by op, ``eager``, or traced into a ``graph``: tf.function, jax.jit). The two callables are all a
training loop needs, so the same cell table can later train the post's model.

For each input (``experiments.atlas.inputs``) the child's ``measure`` function returns the loss, its gradient
with respect to the logits and the head's output; this module records, per cell and input, every Python
warning, logging record and line written to the process' stderr (TensorFlow's C++ log) while the call ran, the
exact reference loss, the gradient's health, and the loss path ``paths.decide`` reads from the measured
losses on all inputs. A call that raises is recorded with its error and the path ``error``. A graph cell is
traced on its first input and the traced graph reused for the next, as a user's compiled step is: a warning
raised while tracing appears in the first input's record only (a cell warns if any of its records does).

Gradient measures, on the wrong-class rows (argmax of the logits != label), at the true-class logit g_t,
the entry every cross-entropy must push:
  grad_finite      every entry of the gradient (all rows) is finite
  grad_zero_share  share of wrong-class rows whose g_t is exactly 0 (the row cannot learn)
  grad_signal      median over those rows of g_t / (exact g_t): 1 for the exact loss, 0 when clipped,
                   ~1e-30 through a saturated softmax applied twice; None when the gradient is not finite
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from common.results import capture_env
from experiments.atlas import inputs as probe_inputs
from experiments.atlas import paths

HEADS = {
    "softmax": "the softmax activation (keras.activations.softmax, as Dense(activation='softmax') applies it; "
               "F.softmax, jax.nn.softmax, tf.nn.softmax where the framework has one softmax)",
    "softmax_op": "the engine's bare softmax op on the logits (tf.nn.softmax, jax.nn.softmax, torch.softmax)",
    "sigmoid": "the sigmoid activation (keras.activations.sigmoid; torch.sigmoid, jax.nn.sigmoid, tf.sigmoid)",
    "logits": "no output activation: the logits themselves",
    "log_softmax": "log-softmax of the logits (F.log_softmax, jax.nn.log_softmax, tf.nn.log_softmax)",
}
EXECS = ("eager", "graph")
TARGETS = ("onehot", "index")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One call on one head, run one way; ``loss`` and ``head`` are the framework's own callables."""

    api: str
    head: str
    from_logits: bool | None
    exec: str
    family: str
    reduction: str
    targets: str
    make_head: Callable[[Any], Any] = dataclasses.field(compare=False, repr=False)
    loss: Callable[[Any, Any], Any] = dataclasses.field(compare=False, repr=False)
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for field, value, allowed in (("head", self.head, HEADS), ("exec", self.exec, EXECS),
                                      ("family", self.family, paths.FAMILIES),
                                      ("reduction", self.reduction, paths.REDUCTIONS),
                                      ("targets", self.targets, TARGETS)):
            if value not in allowed:
                raise ValueError(f"cell {self.api}: {field}={value!r}; known: {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What a framework measured for one cell on one input, as numpy arrays."""

    loss: float
    grad: np.ndarray  # d loss / d logits, (n, C)
    given: np.ndarray  # the head's output, (n, C)


Measure = Callable[[Cell, np.ndarray, np.ndarray], Measurement]


def cell_id(framework: str, engine: str | None, api: str, head: str, from_logits: bool | None, exec_: str) -> str:
    """``framework[/engine] | api | head | from_logits=X | exec``: the name a cell goes by in tests and reports."""
    where = f"{framework}/{engine}" if engine else framework
    return f"{where} | {api} | {head} | from_logits={from_logits} | {exec_}"


def record_cell_id(record: dict[str, Any]) -> str:
    return cell_id(record["framework"], record["engine"], record["api"], record["head"], record["from_logits"],
                   record["exec"])


def target_distribution(cell: Cell, labels: np.ndarray, classes: int) -> np.ndarray:
    """The float64 target distribution T the call's formula uses (one-hot, label-smoothed if asked)."""
    onehot = np.eye(classes)[labels]
    return onehot * (1.0 - cell.label_smoothing) + cell.label_smoothing / classes


def call_targets(cell: Cell, labels: np.ndarray, classes: int) -> np.ndarray:
    """The targets as the call takes them: float32 one-hot rows, or int64 labels."""
    return np.eye(classes, dtype=np.float32)[labels] if cell.targets == "onehot" else labels.astype(np.int64)


# --- capturing what a call says -----------------------------------------------------------------------------

class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """Collect, into the yielded list (filled on exit), every warning, log record and stderr line of the body.

    Python warnings are recorded with the filter ``always`` (a warning shown once per place would hide from
    the second cell); log records through a handler on the root logger and on every logger that does not
    propagate; TensorFlow's C++ log and anything else written to descriptor 2 through a temporary file.
    """
    lines: list[str] = []
    handler = _LogLines()
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger) and not logger.propagate]
    for logger in loggers:
        logger.addHandler(handler)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as stderr_copy:
        os.dup2(stderr_copy.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            for logger in loggers:
                logger.removeHandler(handler)
            stderr_copy.seek(0)
            written = stderr_copy.read().decode(errors="replace").splitlines()
        lines += [f"{w.category.__name__}: {w.message}" for w in caught]
        lines += handler.messages
        # A log record a handler also printed to stderr is kept once, as the record.
        lines += [f"stderr: {line}" for line in written
                  if line.strip() and not any(m.split(": ", 1)[-1] in line for m in handler.messages)]


# --- measuring --------------------------------------------------------------------------------------------

def number(value: float | None) -> float | str | None:
    """A JSON-safe number: non-finite ones as the strings 'nan', 'inf', '-inf' (``float()`` reads them back)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else str(value)


def gradient_health(grad: np.ndarray, cell: Cell, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """``grad_finite``, ``grad_zero_share`` and ``grad_signal`` (module docstring) of one measured gradient."""
    wrong = np.flatnonzero(logits.argmax(-1) != labels)
    finite = bool(np.all(np.isfinite(grad)))
    if not len(wrong):
        return {"grad_finite": finite, "grad_zero_share": None, "grad_signal": None, "wrong_rows": 0}
    g_true = grad[wrong, labels[wrong]].astype(np.float64)
    exact = paths.exact_true_class_gradient(cell.family, cell.reduction, logits,
                                            target_distribution(cell, labels, logits.shape[-1]), labels)[wrong]
    moved = exact != 0.0  # a row the exact loss itself no longer moves says nothing about this call
    signal = float(np.median(g_true[moved] / exact[moved])) if finite and moved.any() else None
    return {"grad_finite": finite, "grad_zero_share": float(np.mean(g_true == 0.0)), "grad_signal": signal,
            "wrong_rows": int(len(wrong))}


def probe_cell(cell: Cell, measure: Measure, logits_by_input: dict[str, np.ndarray], labels: np.ndarray,
               framework: str, engine: str | None) -> list[dict[str, Any]]:
    """One record per input for ``cell``; the loss path is decided from the losses measured on all inputs."""
    records, matches = [], []
    for name, logits in logits_by_input.items():
        classes = logits.shape[-1]
        targets = target_distribution(cell, labels, classes)
        measured, error = None, None
        with captured() as said:
            try:
                measured = measure(cell, logits, call_targets(cell, labels, classes))
            except Exception as exc:  # a call that raises is a finding, recorded as the path "error"
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        record = {
            "cell": cell_id(framework, engine, cell.api, cell.head, cell.from_logits, cell.exec),
            "input": name, "framework": framework, "engine": engine, "api": cell.api, "head": cell.head,
            "from_logits": cell.from_logits, "exec": cell.exec, "family": cell.family,
            "reduction": cell.reduction, "targets": cell.targets, "label_smoothing": cell.label_smoothing,
            "error": error, "warnings": said,
            "reference_loss": number(paths.exact_loss(cell.family, cell.reduction, logits, targets)),
        }
        if measured is None:
            matches.append(None)
            record.update(loss=None, matching_paths=[], grad_finite=None, grad_zero_share=None, grad_signal=None,
                          wrong_rows=None)
        else:
            probe = paths.Probe(logits, targets, measured.given)
            matches.append(paths.matching_paths(measured.loss, cell.family, cell.reduction, probe))
            record.update(loss=number(measured.loss), matching_paths=matches[-1],
                          **gradient_health(measured.grad, cell, logits, labels))
        records.append(record)
    path = paths.decide(matches)
    for record in records:
        record["loss_path"] = path
    return records


# --- the child process ----------------------------------------------------------------------------------------

def child_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Probe one framework's cross-entropy cells.")
    parser.add_argument("--inputs", required=True, help="the .npz the parent wrote (experiments.atlas.inputs)")
    parser.add_argument("--records", required=True, help="JSON lines out, one per cell and input")
    return parser


def run_child(args: argparse.Namespace, framework: str, engine: str | None, cells: list[Cell], measure: Measure,
              versions: dict[str, str], threads: dict[str, Any]) -> int:
    """Probe every cell on every input and write the records; exit status 0."""
    logits_by_input, labels = probe_inputs.load(args.inputs)
    shared = {"versions": versions, "env": capture_env(versions, "cpu", threads),
              "inputs_sha256": probe_inputs.digest(logits_by_input, labels)}
    with open(args.records, "w", encoding="utf-8") as out:
        for cell in cells:
            for record in probe_cell(cell, measure, logits_by_input, labels, framework, engine):
                out.write(json.dumps({**record, **shared}, sort_keys=False) + "\n")
    return 0

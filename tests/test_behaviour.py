"""What each framework does with the post's experiment on real data — one table, one parametrised test.

One epoch on the vendored MNIST subset (3,000 training images, raw pixels, the post's spec otherwise), all
four variants and both probability-loss flavours, every backend and the Keras engines, each run through the
real command line in its own process (as users run it). The expected outcome of every cell is the table
below; a framework upgrade that changes a behaviour fails with the cell named.

Outcomes (common.report.classify): ``trains`` — test accuracy >= 0.3 (one epoch of logits reaches ~0.7);
``stuck`` — finished with accuracy < 0.3 (the clip's zero gradient); ``diverged`` — the loss became NaN/inf.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.report import classify
from common.results import read_records
from tests_support import TEST_SUBSET

T, S, D = "trains", "stuck", "diverged"
# row -> {(variant, probability-loss flavour): expected outcome}; logits variants have no flavour (None).
EXPECTED = {
    # Keras 3 on TensorFlow: the softmax output carries its logits (`_keras_logits`), in fit and eagerly,
    # so the native probability loss trains everywhere; the post's clipped formula gets stuck.
    "keras/tensorflow": {("fit_probs", "native"): T, ("loop_probs", "native"): T,
                         ("fit_probs", "clipped"): S, ("loop_probs", "clipped"): S,
                         ("loop_logits", None): T, ("fit_logits", None): T},
    # Keras 3 on JAX clips probabilities and never looks for logits: the post's failure, now in fit too.
    "keras/jax": {("fit_probs", "native"): S, ("loop_probs", "native"): S,
                  ("fit_probs", "clipped"): S, ("loop_probs", "clipped"): S,
                  ("loop_logits", None): T, ("fit_logits", None): T},
    # PyTorch: log(softmax) of an underflowed probability is -inf; torch.compile does not rewrite it.
    "torch": {("fit_probs", "native"): D, ("loop_probs", "native"): D,
              ("fit_probs", "clipped"): S, ("loop_probs", "clipped"): S,
              ("loop_logits", None): T, ("fit_logits", None): T},
    # JAX: XLA does not rewrite log(softmax) either.
    "jax": {("fit_probs", "native"): D, ("loop_probs", "native"): D,
            ("fit_probs", "clipped"): S, ("loop_probs", "clipped"): S,
            ("loop_logits", None): T, ("fit_logits", None): T},
}
ROW_COMMANDS = {
    "keras/tensorflow": ["--backend", "keras", "--engine", "tensorflow"],
    "keras/jax": ["--backend", "keras", "--engine", "jax"],
    "torch": ["--backend", "torch"],
    "jax": ["--backend", "jax"],
}
CELLS = [(row, variant, flavour) for row, cells in EXPECTED.items() for (variant, flavour) in cells]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Run every row once (its own process), keyed by (row, variant, flavour)."""
    found = {}
    for row, flags in ROW_COMMANDS.items():
        out = tmp_path_factory.mktemp(row.replace("/", "_"))
        command = [sys.executable, "-m", "experiments.run", *flags, "--variants", "all", "--prob-loss", "both",
                   "--epochs", "1", "--data", str(TEST_SUBSET), "--out", str(out)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{row}: {' '.join(command)} failed:\n{result.stderr[-3000:]}"
        for r in read_records(out / "runs.jsonl"):
            found[(row, r["variant"], r["prob_loss"])] = r
    return found


@pytest.mark.parametrize("row, variant, flavour", CELLS, ids=[f"{r}-{v}-{f or 'logits'}" for r, v, f in CELLS])
def test_behaviour_cell(records, row, variant, flavour):
    record = records.get((row, variant, flavour))
    assert record is not None, f"{row} {variant} ({flavour}): no record"
    expected, actual = EXPECTED[row][(variant, flavour)], classify(record)
    assert actual == expected, (
        f"{row} {variant} ({flavour or 'logits'}): expected {expected}, got {actual} — status {record['status']}, "
        f"accuracy {record['test_accuracy']}, epoch cost {record['epoch_costs']}, loss path {record['loss_path']}, "
        f"error {record['error']}")
    if actual == S:  # stuck the post's way: clipped rows at -ln(1e-7) = 16.1 dominate the cost
        assert record["epoch_costs"][-1] >= 12 and record["diagnostics"][-1]["saturated_share"] > 0.5
    if actual == D:
        assert record["first_nonfinite_step"] is not None and record["first_nonfinite_step"] < 30

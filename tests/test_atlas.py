"""The cross-entropy atlas (experiments.atlas): the classifier on hand-made numbers, the capture of what a call
says, and the probe stage run once for real, every cell pinned to the loss path and warning it shows on the
installed libraries.

``EXPECTED`` is the atlas' table: one line per cell (framework[/engine] | call | head | from_logits | exec) with
the loss path decided from the measured losses and whether the call emitted a warning or log line on any
input. A library upgrade that changes a cell fails ``test_cell`` naming it; a cell added or removed fails
``test_every_cell_is_pinned``. Each line was checked against the source that produces it (findings.md cites it).
The module fixture runs ``python -m experiments.atlas`` once, on the vendored MNIST subset (its first 100 test
images are the atlas' probe rows): about a minute and a half on 2 cores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from experiments.atlas import paths, probe, report
from experiments.atlas.command import select_children

from tests_support import TEST_SUBSET

ROOT = Path(__file__).resolve().parent.parent
LN_EPS = -math.log(1e-7)  # 16.1181: the cost of a clipped row

# The saturated row of the notes on the libraries: softmax(z) is exactly one-hot in float32 (p_2 = e^-180 = 0).
Z = np.array([[150.0, 0.0, -30.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
ONEHOT = np.eye(10)[[2]]
SOFTMAX = paths.softmax32(Z)
SIGMOID = paths.sigmoid32(Z)


# --- the classifier on hand-made numbers ------------------------------------------------------------------

def decided(measured: float, family: str = "categorical", reduction: str = "rows", given=SOFTMAX) -> list[str]:
    return paths.matching_paths(measured, family, reduction, paths.Probe(Z, ONEHOT, given))


def test_categorical_paths_of_the_saturated_row():
    # exact: logsumexp(z) - z_2 = 150 + 30 = 180; double softmax: log(e + 9) - 0; clipped: -ln(1e-7).
    assert decided(180.0)[0] == "recovered_logits"
    assert decided(180.0, given=Z)[0] == "logits"
    assert decided(math.log(math.e + 9))[0] == "double_softmax"
    assert decided(LN_EPS)[0] == "clipped"
    assert decided(100.0) == ["clamped"]
    assert decided(float("nan")) == ["raw_log"]
    assert decided(float("inf")) == ["raw_log"]  # -log(p)[t] gives inf where the sum gives NaN
    assert decided(-0.0) == ["no_log"]  # -p_2 = -0
    assert decided(42.0) == []


def test_binary_paths_of_the_saturated_row():
    # Per-class sigmoid BCE of z, mean over the 10 classes: (softplus(150) + softplus(30) + 8 ln 2) / 10.
    exact = (150.0 + 30.0 + 8 * math.log(2.0)) / 10
    assert decided(exact, "binary", "elements")[0] == "recovered_logits"
    assert decided(exact, "binary", "elements", given=SIGMOID)[0] == "recovered_logits"
    assert decided(exact, "binary", "elements", given=Z)[0] == "logits"
    # Clipped probabilities: class 0 at 1 - 1e-7 in float32 (1 - p = 1.19e-7), class 2 at 1e-7, the rest ~0.
    clipped = (-math.log(1.0 - float(np.float32(1 - 1e-7))) + LN_EPS) / 10
    assert decided(clipped, "binary", "elements")[0] == "clipped"
    # TensorFlow's graph form of log(1 - p + eps): (1 + eps) - p with 1 + eps rounded to float32. On this row
    # (every p exactly 0 or 1) it coincides with the clip; the atlas' probe rows tell them apart.
    folded = (-math.log(float(np.float32(1) + np.float32(1e-7)) - 1.0) - math.log(1e-7)) / 10
    assert decided(folded, "binary", "elements")[:2] == ["clipped", "eps_added"]
    assert decided(20.0, "binary", "elements") == ["clamped"]  # (100 + 100) / 10


def test_eps_added_is_told_from_clipped_where_p_lies_between_0_and_eps():
    z = np.array([[20.0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], np.float32)  # p_2 = 1 / (e^20 + 9) = 2.06e-9
    p = paths.softmax32(z)
    p_true = float(p[0, 2])

    def matches(measured):
        return paths.matching_paths(measured, "categorical", "rows", paths.Probe(z, ONEHOT, p))

    assert matches(LN_EPS)[0] == "clipped"
    assert matches(-math.log(p_true + 1e-7)) == ["eps_added"]  # 16.098
    assert matches(-math.log(p_true))[0] == "recovered_logits"  # 20.0: the raw log is still exact here


def test_focal_paths():
    # Keras' CategoricalFocalCrossentropy(from_logits=True) on logits: softmax, clip: 0.25 (1 - 1e-7)^2 ln 1e7.
    assert decided(0.25 * (1 - 1e-7) ** 2 * LN_EPS, "categorical_focal", given=Z)[0] == "clipped"
    assert decided(0.25 * 180.0, "categorical_focal", given=Z)[0] == "logits"


def test_a_path_is_what_every_input_agrees_on():
    assert paths.decide([["recovered_logits", "clipped"], ["clipped"]]) == "clipped"
    assert paths.decide([["logits", "clipped"], ["logits", "clipped", "raw_log"]]) == "logits"
    assert paths.decide([["clipped"], ["raw_log"]]) == "other"
    assert paths.decide([None, None]) == "error"
    assert paths.decide([None, ["logits"]]) == "other"


def test_agreement_tolerance_and_non_finite_values():
    assert paths.agrees(float("nan"), float("inf"))
    assert not paths.agrees(float("nan"), 1.0)
    assert not paths.agrees(1.0, float("nan"))
    assert paths.agrees(59.5346, 59.5346 * (1 + 0.5 * paths.RTOL))
    assert not paths.agrees(59.5346, 59.5346 * (1 + 2 * paths.RTOL))


def test_probabilities_are_told_from_logits_by_their_values():
    assert paths.Probe(Z, ONEHOT, SOFTMAX).gives_probabilities
    assert not paths.Probe(Z, ONEHOT, Z).gives_probabilities
    with np.errstate(divide="ignore"):
        assert not paths.Probe(Z, ONEHOT, np.log(SOFTMAX)).gives_probabilities


def test_exact_gradient_at_the_true_class():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 10)) * 3
    labels = rng.integers(0, 10, 5)
    onehot = np.eye(10)[labels]
    p = np.exp(paths.log_softmax(z))
    expected = (p[np.arange(5), labels] - 1) / 5
    got = paths.exact_true_class_gradient("categorical", "rows", z, onehot, labels)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    sigmoid = 1 / (1 + np.exp(-z[np.arange(5), labels]))
    got = paths.exact_true_class_gradient("binary", "elements", z, onehot, labels)
    np.testing.assert_allclose(got, (sigmoid - 1) / 50, rtol=1e-12)
    # The focal families by central differences. On the saturated row, d/dz_2 of -0.25 (1 - q_2)^2 log q_2 is
    # -0.25 (1 - q_2)^3 + 0.5 q_2 (1 - q_2)^2 log q_2 = -0.25 to float64 precision (q_2 = e^-180).
    focal = paths.exact_true_class_gradient("categorical_focal", "rows", Z, ONEHOT, np.array([2]))
    assert focal[0] < 0 and abs(focal[0]) == pytest.approx(0.25, rel=1e-6)


def test_unknown_family_or_reduction_is_refused():
    with pytest.raises(ValueError, match="family='hinge'"):
        paths.references("hinge", "rows", paths.Probe(Z, ONEHOT, SOFTMAX))
    with pytest.raises(ValueError, match="reduction='sum'"):
        paths.references("categorical", "sum", paths.Probe(Z, ONEHOT, SOFTMAX))


# --- the harness -----------------------------------------------------------------------------------------------

def test_capture_keeps_warnings_log_records_and_stderr_lines():
    with probe.captured() as said:
        warnings.warn("first", UserWarning)
        warnings.warn("first", UserWarning)  # repeated: a second cell would see it too
        logging.getLogger("atlas-test").warning("a log record")
        os.write(2, b"a C++ line\n")
    assert said == ["UserWarning: first", "UserWarning: first", "WARNING atlas-test: a log record",
                    "stderr: a C++ line"]


def test_frameworks_are_selected_by_name_or_engine():
    assert [c.name for c in select_children("torch,keras/jax")] == ["keras/jax", "torch"]
    assert len(select_children("keras")) == 4
    with pytest.raises(Exception, match="unknown framework.*mxnet"):
        select_children("mxnet")


def run_atlas(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.atlas", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_bad_frameworks_stop_with_one_line(tmp_path):
    result = run_atlas("--out", str(tmp_path), "--frameworks", "keras,mxnet", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m experiments.atlas: error: argument --frameworks: unknown framework(s) mxnet; use a "
        "comma-separated list of keras, torch, jax, tensorflow or of keras/tensorflow, keras/tf_keras, "
        "keras/jax, keras/torch, torch, jax, tensorflow"]
    assert not (tmp_path / "atlas.jsonl").exists()


# --- the probe stage, run once ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> tuple[Path, dict[str, dict[str, dict]]]:
    out = tmp_path_factory.mktemp("atlas")
    result = run_atlas("--out", str(out), "--data", str(TEST_SUBSET))
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in (out / "atlas.jsonl").read_text().splitlines()]
    return out, report.cells_of(records)


EXPECTED = {
    'keras/tensorflow | keras.losses.categorical_crossentropy | softmax | from_logits=False | eager': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | softmax | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | softmax_op | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | sigmoid | from_logits=False | eager': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | sigmoid | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | logits | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | softmax | from_logits=True | eager': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.categorical_crossentropy | softmax | from_logits=True | graph': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.categorical_crossentropy | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | softmax_op | from_logits=True | graph': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.categorical_crossentropy | sigmoid | from_logits=True | eager': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.categorical_crossentropy | sigmoid | from_logits=True | graph': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.categorical_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/tensorflow | keras.losses.categorical_crossentropy | logits | from_logits=True | graph': ('logits', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=False | eager': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=False | eager': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | logits | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=True | eager': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=True | graph': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=True | graph': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=True | eager': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=True | graph': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/tensorflow | keras.losses.sparse_categorical_crossentropy | logits | from_logits=True | graph': ('logits', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | softmax | from_logits=False | eager': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | softmax | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | softmax_op | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | sigmoid | from_logits=False | eager': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | sigmoid | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | logits | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | softmax | from_logits=True | eager': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.binary_crossentropy | softmax | from_logits=True | graph': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.binary_crossentropy | softmax_op | from_logits=True | eager': ('double_sigmoid', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | softmax_op | from_logits=True | graph': ('double_sigmoid', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | sigmoid | from_logits=True | eager': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.binary_crossentropy | sigmoid | from_logits=True | graph': ('recovered_logits', True),
    'keras/tensorflow | keras.losses.binary_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/tensorflow | keras.losses.binary_crossentropy | logits | from_logits=True | graph': ('logits', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=True | eager': ('double_softmax', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=True | graph': ('double_softmax', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=True | graph': ('double_softmax', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=True | eager': ('double_softmax', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=True | graph': ('double_softmax', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=True | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=True | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=False | eager': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=False | eager': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=False | graph': ('recovered_logits', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=False | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=False | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=True | eager': ('double_sigmoid', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=True | graph': ('double_sigmoid', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=True | eager': ('double_sigmoid', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=True | graph': ('double_sigmoid', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=True | eager': ('double_sigmoid', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=True | graph': ('double_sigmoid', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=True | eager': ('logits', False),
    'keras/tensorflow | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=True | graph': ('logits', False),
    'keras/tensorflow | keras.losses.KLDivergence() | softmax | from_logits=None | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.KLDivergence() | softmax | from_logits=None | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.KLDivergence() | softmax_op | from_logits=None | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.KLDivergence() | softmax_op | from_logits=None | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.KLDivergence() | sigmoid | from_logits=None | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.KLDivergence() | sigmoid | from_logits=None | graph': ('clipped', False),
    'keras/tensorflow | keras.losses.KLDivergence() | logits | from_logits=None | eager': ('clipped', False),
    'keras/tensorflow | keras.losses.KLDivergence() | logits | from_logits=None | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | softmax | from_logits=False | eager': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | softmax | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | softmax_op | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | sigmoid | from_logits=False | eager': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | sigmoid | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | logits | from_logits=False | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | softmax | from_logits=True | eager': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.categorical_crossentropy | softmax | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.categorical_crossentropy | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | softmax_op | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.categorical_crossentropy | sigmoid | from_logits=True | eager': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.categorical_crossentropy | sigmoid | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.categorical_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/tf_keras | keras.losses.categorical_crossentropy | logits | from_logits=True | graph': ('logits', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=False | eager': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=False | eager': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | logits | from_logits=False | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=True | eager': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=True | eager': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/tf_keras | keras.losses.sparse_categorical_crossentropy | logits | from_logits=True | graph': ('logits', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | softmax | from_logits=False | eager': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | softmax | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | softmax_op | from_logits=False | eager': ('clipped_eps', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | softmax_op | from_logits=False | graph': ('clipped_eps', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | sigmoid | from_logits=False | eager': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | sigmoid | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | logits | from_logits=False | eager': ('clipped_eps', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | logits | from_logits=False | graph': ('clipped_eps', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | softmax | from_logits=True | eager': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.binary_crossentropy | softmax | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.binary_crossentropy | softmax_op | from_logits=True | eager': ('double_sigmoid', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | softmax_op | from_logits=True | graph': ('double_sigmoid', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | sigmoid | from_logits=True | eager': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.binary_crossentropy | sigmoid | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.binary_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/tf_keras | keras.losses.binary_crossentropy | logits | from_logits=True | graph': ('logits', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=False | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=False | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=False | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=False | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=False | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=False | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=True | eager': ('clipped', True),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=True | graph': ('clipped', True),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=True | graph': ('clipped', True),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=True | eager': ('clipped', True),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=True | graph': ('clipped', True),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=True | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=True | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=False | eager': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=False | eager': ('clipped_eps', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=False | graph': ('clipped_eps', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=False | eager': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=False | graph': ('recovered_logits', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=False | eager': ('clipped_eps', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=False | graph': ('clipped_eps', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=True | eager': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=True | eager': ('double_sigmoid', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=True | graph': ('double_sigmoid', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=True | eager': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=True | graph': ('recovered_logits', True),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=True | eager': ('logits', False),
    'keras/tf_keras | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=True | graph': ('logits', False),
    'keras/tf_keras | keras.losses.KLDivergence() | softmax | from_logits=None | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.KLDivergence() | softmax | from_logits=None | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.KLDivergence() | softmax_op | from_logits=None | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.KLDivergence() | softmax_op | from_logits=None | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.KLDivergence() | sigmoid | from_logits=None | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.KLDivergence() | sigmoid | from_logits=None | graph': ('clipped', False),
    'keras/tf_keras | keras.losses.KLDivergence() | logits | from_logits=None | eager': ('clipped', False),
    'keras/tf_keras | keras.losses.KLDivergence() | logits | from_logits=None | graph': ('clipped', False),
    'keras/jax | keras.losses.categorical_crossentropy | softmax | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.categorical_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.categorical_crossentropy | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.categorical_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.categorical_crossentropy | softmax | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.categorical_crossentropy | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.categorical_crossentropy | sigmoid | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.categorical_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/jax | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.sparse_categorical_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.sparse_categorical_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/jax | keras.losses.binary_crossentropy | softmax | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.binary_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.binary_crossentropy | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.binary_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.binary_crossentropy | softmax | from_logits=True | eager': ('double_sigmoid', False),
    'keras/jax | keras.losses.binary_crossentropy | softmax_op | from_logits=True | eager': ('double_sigmoid', False),
    'keras/jax | keras.losses.binary_crossentropy | sigmoid | from_logits=True | eager': ('double_sigmoid', False),
    'keras/jax | keras.losses.binary_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/jax | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=True | eager': ('double_softmax', False),
    'keras/jax | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=True | eager': ('clipped', False),
    'keras/jax | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=False | eager': ('clipped', False),
    'keras/jax | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=True | eager': ('double_sigmoid', False),
    'keras/jax | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=True | eager': ('double_sigmoid', False),
    'keras/jax | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=True | eager': ('double_sigmoid', False),
    'keras/jax | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=True | eager': ('clipped', False),
    'keras/jax | keras.losses.KLDivergence() | softmax | from_logits=None | eager': ('clipped', False),
    'keras/jax | keras.losses.KLDivergence() | softmax_op | from_logits=None | eager': ('clipped', False),
    'keras/jax | keras.losses.KLDivergence() | sigmoid | from_logits=None | eager': ('clipped', False),
    'keras/jax | keras.losses.KLDivergence() | logits | from_logits=None | eager': ('clipped', False),
    'keras/torch | keras.losses.categorical_crossentropy | softmax | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.categorical_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.categorical_crossentropy | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.categorical_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.categorical_crossentropy | softmax | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.categorical_crossentropy | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.categorical_crossentropy | sigmoid | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.categorical_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/torch | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.sparse_categorical_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.sparse_categorical_crossentropy | softmax | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.sparse_categorical_crossentropy | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.sparse_categorical_crossentropy | sigmoid | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.sparse_categorical_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/torch | keras.losses.binary_crossentropy | softmax | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.binary_crossentropy | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.binary_crossentropy | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.binary_crossentropy | logits | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.binary_crossentropy | softmax | from_logits=True | eager': ('double_sigmoid', False),
    'keras/torch | keras.losses.binary_crossentropy | softmax_op | from_logits=True | eager': ('double_sigmoid', False),
    'keras/torch | keras.losses.binary_crossentropy | sigmoid | from_logits=True | eager': ('double_sigmoid', False),
    'keras/torch | keras.losses.binary_crossentropy | logits | from_logits=True | eager': ('logits', False),
    'keras/torch | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.CategoricalFocalCrossentropy() | softmax_op | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.CategoricalFocalCrossentropy() | sigmoid | from_logits=True | eager': ('double_softmax', False),
    'keras/torch | keras.losses.CategoricalFocalCrossentropy() | logits | from_logits=True | eager': ('clipped', False),
    'keras/torch | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=False | eager': ('clipped', False),
    'keras/torch | keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=True | eager': ('double_sigmoid', False),
    'keras/torch | keras.losses.BinaryFocalCrossentropy() | softmax_op | from_logits=True | eager': ('double_sigmoid', False),
    'keras/torch | keras.losses.BinaryFocalCrossentropy() | sigmoid | from_logits=True | eager': ('double_sigmoid', False),
    'keras/torch | keras.losses.BinaryFocalCrossentropy() | logits | from_logits=True | eager': ('clipped', False),
    'keras/torch | keras.losses.KLDivergence() | softmax | from_logits=None | eager': ('clipped', False),
    'keras/torch | keras.losses.KLDivergence() | softmax_op | from_logits=None | eager': ('clipped', False),
    'keras/torch | keras.losses.KLDivergence() | sigmoid | from_logits=None | eager': ('clipped', False),
    'keras/torch | keras.losses.KLDivergence() | logits | from_logits=None | eager': ('clipped', False),
    'torch | F.cross_entropy(out, t) | logits | from_logits=None | eager': ('logits', False),
    'torch | F.cross_entropy(out, t) | softmax | from_logits=None | eager': ('double_softmax', False),
    'torch | F.cross_entropy(out, t) | sigmoid | from_logits=None | eager': ('double_softmax', False),
    'torch | F.cross_entropy(out, t) | log_softmax | from_logits=None | eager': ('logits', False),
    'torch | nn.CrossEntropyLoss()(out, t) | logits | from_logits=None | eager': ('logits', False),
    'torch | nn.CrossEntropyLoss()(out, t) | softmax | from_logits=None | eager': ('double_softmax', False),
    'torch | F.cross_entropy(out, y) | logits | from_logits=None | eager': ('logits', False),
    'torch | F.cross_entropy(out, y) | softmax | from_logits=None | eager': ('double_softmax', False),
    'torch | F.cross_entropy(out, t, label_smoothing=0.1) | logits | from_logits=None | eager': ('logits', False),
    'torch | F.cross_entropy(out, t, label_smoothing=0.1) | softmax | from_logits=None | eager': ('double_softmax', False),
    'torch | F.nll_loss(out, t) | log_softmax | from_logits=None | eager': ('logits', False),
    'torch | F.nll_loss(out, t) | softmax | from_logits=None | eager': ('no_log', False),
    'torch | nn.NLLLoss()(out, t) | log_softmax | from_logits=None | eager': ('logits', False),
    'torch | F.nll_loss(torch.log(out), t) | softmax | from_logits=None | eager': ('raw_log', False),
    'torch | -(y * torch.log(out)).sum(1).mean() | softmax | from_logits=None | eager': ('raw_log', False),
    'torch | F.binary_cross_entropy(out, y) | sigmoid | from_logits=None | eager': ('clamped', False),
    'torch | F.binary_cross_entropy(out, y) | softmax | from_logits=None | eager': ('clamped', False),
    'torch | F.binary_cross_entropy(out, y) | logits | from_logits=None | eager': ('error', False),
    'torch | nn.BCELoss()(out, y) | sigmoid | from_logits=None | eager': ('clamped', False),
    'torch | nn.BCELoss()(out, y) | softmax | from_logits=None | eager': ('clamped', False),
    'torch | F.binary_cross_entropy_with_logits(out, y) | logits | from_logits=None | eager': ('logits', False),
    'torch | F.binary_cross_entropy_with_logits(out, y) | sigmoid | from_logits=None | eager': ('double_sigmoid', False),
    'torch | F.binary_cross_entropy_with_logits(out, y) | softmax | from_logits=None | eager': ('double_sigmoid', False),
    'torch | nn.BCEWithLogitsLoss()(out, y) | logits | from_logits=None | eager': ('logits', False),
    'torch | nn.BCEWithLogitsLoss()(out, y) | sigmoid | from_logits=None | eager': ('double_sigmoid', False),
    "torch | F.kl_div(out, y, reduction='batchmean') | log_softmax | from_logits=None | eager": ('logits', False),
    "torch | F.kl_div(out, y, reduction='batchmean') | softmax | from_logits=None | eager": ('no_log', False),
    "torch | F.kl_div(torch.log(out), y, reduction='batchmean') | softmax | from_logits=None | eager": ('raw_log', False),
    'torch | F.kl_div(out, y) | log_softmax | from_logits=None | eager': ('logits', True),
    'jax | optax.softmax_cross_entropy(out, y) | logits | from_logits=None | graph': ('logits', False),
    'jax | optax.softmax_cross_entropy(out, y) | softmax | from_logits=None | graph': ('double_softmax', False),
    'jax | optax.softmax_cross_entropy(out, y) | sigmoid | from_logits=None | graph': ('double_softmax', False),
    'jax | optax.softmax_cross_entropy(out, y) | log_softmax | from_logits=None | graph': ('logits', False),
    'jax | optax.softmax_cross_entropy(jnp.log(out), y) | softmax | from_logits=None | graph': ('raw_log', False),
    'jax | optax.softmax_cross_entropy_with_integer_labels(out, t) | logits | from_logits=None | graph': ('logits', False),
    'jax | optax.softmax_cross_entropy_with_integer_labels(out, t) | softmax | from_logits=None | graph': ('double_softmax', False),
    'jax | optax.softmax_cross_entropy_with_integer_labels(out, t) | log_softmax | from_logits=None | graph': ('logits', False),
    'jax | optax.softmax_cross_entropy_with_integer_labels(jnp.log(out), t) | softmax | from_logits=None | graph': ('raw_log', False),
    'jax | optax.safe_softmax_cross_entropy(out, y) | logits | from_logits=None | graph': ('logits', False),
    'jax | optax.safe_softmax_cross_entropy(out, y) | softmax | from_logits=None | graph': ('double_softmax', False),
    'jax | optax.safe_softmax_cross_entropy(jnp.log(out), y) | softmax | from_logits=None | graph': ('raw_log', False),
    'jax | optax.sigmoid_binary_cross_entropy(out, y) | logits | from_logits=None | graph': ('logits', False),
    'jax | optax.sigmoid_binary_cross_entropy(out, y) | sigmoid | from_logits=None | graph': ('double_sigmoid', False),
    'jax | optax.sigmoid_binary_cross_entropy(out, y) | softmax | from_logits=None | graph': ('double_sigmoid', False),
    'jax | optax.sigmoid_focal_loss(out, y) | logits | from_logits=None | graph': ('logits', False),
    'jax | optax.sigmoid_focal_loss(out, y) | sigmoid | from_logits=None | graph': ('double_sigmoid', False),
    'jax | optax.kl_divergence(out, y) | log_softmax | from_logits=None | graph': ('logits', False),
    'jax | optax.kl_divergence(out, y) | softmax | from_logits=None | graph': ('no_log', False),
    'jax | optax.kl_divergence(jnp.log(out), y) | softmax | from_logits=None | graph': ('raw_log', False),
    'jax | -jnp.sum(y * jnp.log(out), -1) | softmax | from_logits=None | graph': ('raw_log', False),
    'jax | -jnp.log(out)[rows, t] | softmax | from_logits=None | graph': ('raw_log', False),
    'jax | -jnp.sum(y * jnp.log(out + 1e-7), -1) | softmax | from_logits=None | graph': ('eps_added', False),
    'jax | -jnp.sum(y * jnp.log(jnp.clip(out, 1e-7, 1.0)), -1) | softmax | from_logits=None | graph': ('clipped', False),
    'jax | -jnp.sum(y * out, -1) | log_softmax | from_logits=None | graph': ('logits', False),
    'jax | -jnp.sum(y * out, -1) | logits | from_logits=None | graph': ('other', False),
    'tensorflow | tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out) | logits | from_logits=None | eager': ('logits', False),
    'tensorflow | tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out) | logits | from_logits=None | graph': ('logits', False),
    'tensorflow | tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out) | softmax | from_logits=None | eager': ('double_softmax', False),
    'tensorflow | tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out) | softmax | from_logits=None | graph': ('double_softmax', False),
    'tensorflow | tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out) | sigmoid | from_logits=None | eager': ('double_softmax', False),
    'tensorflow | tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out) | sigmoid | from_logits=None | graph': ('double_softmax', False),
    'tensorflow | tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out) | log_softmax | from_logits=None | eager': ('logits', False),
    'tensorflow | tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out) | log_softmax | from_logits=None | graph': ('logits', False),
    'tensorflow | tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=out) | logits | from_logits=None | eager': ('logits', False),
    'tensorflow | tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=out) | logits | from_logits=None | graph': ('logits', False),
    'tensorflow | tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=out) | softmax | from_logits=None | eager': ('double_softmax', False),
    'tensorflow | tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=out) | softmax | from_logits=None | graph': ('double_softmax', False),
    'tensorflow | tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out) | logits | from_logits=None | eager': ('logits', False),
    'tensorflow | tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out) | logits | from_logits=None | graph': ('logits', False),
    'tensorflow | tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out) | sigmoid | from_logits=None | eager': ('double_sigmoid', False),
    'tensorflow | tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out) | sigmoid | from_logits=None | graph': ('double_sigmoid', False),
    'tensorflow | tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out) | softmax | from_logits=None | eager': ('double_sigmoid', False),
    'tensorflow | tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out) | softmax | from_logits=None | graph': ('double_sigmoid', False),
    'tensorflow | tf.compat.v1.losses.softmax_cross_entropy(y, out) | logits | from_logits=None | eager': ('logits', False),
    'tensorflow | tf.compat.v1.losses.softmax_cross_entropy(y, out) | logits | from_logits=None | graph': ('logits', False),
    'tensorflow | tf.compat.v1.losses.softmax_cross_entropy(y, out) | softmax | from_logits=None | eager': ('double_softmax', False),
    'tensorflow | tf.compat.v1.losses.softmax_cross_entropy(y, out) | softmax | from_logits=None | graph': ('double_softmax', False),
    'tensorflow | tf.compat.v1.losses.log_loss(y, out) | softmax | from_logits=None | eager': ('eps_added', False),
    'tensorflow | tf.compat.v1.losses.log_loss(y, out) | softmax | from_logits=None | graph': ('eps_added', False),
    'tensorflow | tf.compat.v1.losses.log_loss(y, out) | sigmoid | from_logits=None | eager': ('eps_added', False),
    'tensorflow | tf.compat.v1.losses.log_loss(y, out) | sigmoid | from_logits=None | graph': ('eps_added', False),
    'tensorflow | -tf.reduce_sum(y * tf.math.log(out), -1) | softmax | from_logits=None | eager': ('raw_log', False),
    'tensorflow | -tf.reduce_sum(y * tf.math.log(out), -1) | softmax | from_logits=None | graph': ('raw_log', False),
    'tensorflow | -tf.reduce_sum(y * tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)), -1) | softmax | from_logits=None | eager': ('clipped', False),
    'tensorflow | -tf.reduce_sum(y * tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)), -1) | softmax | from_logits=None | graph': ('clipped', False),
}


@pytest.mark.parametrize("cell", list(EXPECTED))
def test_cell(atlas, cell):
    _, cells = atlas
    assert cell in cells, f"{cell} was not measured"
    by_input = cells[cell]
    assert set(by_input) == {"raw", "unit"}
    path, warns = EXPECTED[cell]
    measured = {name: (r["loss_path"], r["loss"], r["matching_paths"], r["error"]) for name, r in by_input.items()}
    assert by_input["raw"]["loss_path"] == path, f"{cell}: measured {measured}, pinned {path}"
    assert report.warned(by_input) == warns, f"{cell}: warnings {[r['warnings'] for r in by_input.values()]}"


def test_every_cell_is_pinned(atlas):
    _, cells = atlas
    assert sorted(set(cells) - set(EXPECTED)) == [], "cells measured but not pinned"
    assert sorted(set(EXPECTED) - set(cells)) == [], "cells pinned but not measured"


def test_records_hold_the_keys_and_cover_every_framework(atlas):
    _, cells = atlas
    records = [r for cell in cells.values() for r in cell.values()]
    keys = {"input", "framework", "engine", "api", "head", "from_logits", "exec", "loss_path", "warnings", "loss",
            "reference_loss", "grad_finite", "grad_zero_share", "versions", "env"}
    assert all(keys <= set(r) for r in records)
    raw = [r for r in records if r["input"] == "raw"]
    assert len(raw) >= 150
    groups = {report.group_of(r) for r in raw}
    assert groups == {"keras/tensorflow", "keras/tf_keras", "keras/jax", "keras/torch", "torch", "jax", "tensorflow"}
    assert {r["loss_path"] for r in records} <= set(paths.LOSS_PATHS)
    assert len({r["inputs_sha256"] for r in records}) == 1


def one(cells, cell: str, name: str = "raw") -> dict:
    return cells[cell][name]


def test_acceptance_cells(atlas):
    """The cells the atlas must show on the saturated input, with their figures."""
    _, cells = atlas
    cce = "keras.losses.categorical_crossentropy"
    tf_probs = one(cells, f"keras/tensorflow | {cce} | softmax | from_logits=False | eager")
    jax_probs = one(cells, f"keras/jax | {cce} | softmax | from_logits=False | eager")
    assert tf_probs["loss_path"] == "recovered_logits" and tf_probs["loss"] == pytest.approx(
        tf_probs["reference_loss"], rel=1e-5)
    # Clipped: the saturated rows cost -ln(1e-7) each and give the true-class logit no gradient at all.
    assert jax_probs["loss_path"] == "clipped" and jax_probs["loss"] < 0.3 * jax_probs["reference_loss"]
    assert jax_probs["grad_zero_share"] > 0.9 and jax_probs["grad_signal"] == 0.0

    tf_true = cells[f"keras/tensorflow | {cce} | softmax | from_logits=True | eager"]
    assert tf_true["raw"]["loss_path"] == "recovered_logits"
    assert any("does not represent logits" in w for w in tf_true["raw"]["warnings"])
    jax_true = cells[f"keras/jax | {cce} | softmax | from_logits=True | eager"]
    assert jax_true["raw"]["loss_path"] == "double_softmax" and not report.warned(jax_true)

    # PyTorch's most-reported mistake: the softmax twice, no warning, a gradient that vanishes (exactly 0 on
    # the rows whose true-class probability underflowed, ~1e-29 of the exact one elsewhere).
    torch_double = cells["torch | nn.CrossEntropyLoss()(out, t) | softmax | from_logits=None | eager"]
    assert torch_double["raw"]["loss_path"] == "double_softmax" and not report.warned(torch_double)
    assert 0 < torch_double["raw"]["grad_zero_share"] and abs(torch_double["raw"]["grad_signal"]) < 1e-20

    for engine in ("tensorflow", "tf_keras", "jax", "torch"):
        focal = one(cells, f"keras/{engine} | keras.losses.CategoricalFocalCrossentropy() | logits | "
                           "from_logits=True | eager")
        assert focal["loss_path"] == "clipped", engine


def test_report_files_and_every_path_explained(atlas):
    out, cells = atlas
    for name in report.REPORT_FILES:
        assert (out / name).stat().st_size > 0
    findings = (out / "findings.md").read_text()
    assert "## Unexplained" not in findings
    atlas_md = (out / "atlas.md").read_text()
    for title in report.FRAMEWORK_TITLES.values():
        assert f"## {title}" in atlas_md
    assert atlas_md.count("\n| `") >= len({report.row_of(c["raw"]) for c in cells.values()})


def test_cells_where_the_libraries_surprise(atlas):
    """The cells the findings single out, as relations that hold on the saturated input."""
    _, cells = atlas
    raw = {name: cell["raw"] for name, cell in cells.items()}
    bfocal = "keras.losses.BinaryFocalCrossentropy() | softmax | from_logits=True | eager"
    # Keras 3's ops.sigmoid tags its input as the logits, so the focal loss "recovers" the probabilities.
    assert raw[f"keras/tensorflow | {bfocal}"]["loss_path"] == "double_sigmoid"
    assert not report.warned(cells[f"keras/tensorflow | {bfocal}"])
    assert raw[f"keras/tf_keras | {bfocal}"]["loss_path"] == "recovered_logits"
    assert report.warned(cells[f"keras/tf_keras | {bfocal}"])
    # A TensorFlow graph computes log(1 - p + eps) as log((1 + eps) - p): another number than eagerly.
    for eager in ("tensorflow | tf.compat.v1.losses.log_loss(y, out) | softmax | from_logits=None | eager",
                  "keras/tf_keras | keras.losses.binary_crossentropy | softmax_op | from_logits=False | eager"):
        graph = eager.replace("| eager", "| graph")
        assert raw[graph]["loss_path"] == raw[eager]["loss_path"]
        assert raw[graph]["loss"] < raw[eager]["loss"] * (1 - 1e-3)
    # binary_crossentropy on the post's softmax output: a per-class sigmoid BCE of the pre-softmax logits on TF.
    bce = "keras.losses.binary_crossentropy | softmax | from_logits={} | eager"
    assert raw[f"keras/tensorflow | {bce.format(False)}"]["loss"] == pytest.approx(
        raw[f"keras/tensorflow | {bce.format(False)}"]["reference_loss"], rel=1e-5)
    said = raw[f"keras/tensorflow | {bce.format(True)}"]["warnings"]
    assert any("produced by a Sigmoid activation" in w for w in said)  # the op it looked for, not the softmax
    # The categorical focal loss never looks for the logits on Keras 3, unlike categorical_crossentropy.
    focal = raw["keras/tensorflow | keras.losses.CategoricalFocalCrossentropy() | softmax | from_logits=False | eager"]
    assert focal["loss_path"] == "clipped" and focal["grad_zero_share"] > 0.9

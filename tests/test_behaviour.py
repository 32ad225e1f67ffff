"""What each framework does with the post's experiment on real data — one table, one parametrised test.

One epoch on the vendored MNIST subset (its first 1,000 training and 500 test images, raw pixels, the post's
spec otherwise), run through the real command line, one process per command (as users run it): every backend
and Keras engine with all four variants, both probability-loss flavours and the unit-input control; and the
mechanism cells of Keras on TensorFlow and on tf_keras (softmax activation / layer / op x fit / eager loop /
compiled loop). The expected outcome of every cell is the table below; a framework upgrade that changes a
behaviour fails with the cell named.

Outcomes (experiments.harness.report.classify): ``trains`` — test accuracy >= 0.3 (one epoch of logits reaches ~0.5);
``stuck`` — finished with accuracy < 0.3 (the clip's zero gradient); ``diverged`` — the loss became NaN/inf.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys

import pytest

from experiments.harness.report import classify
from common.results import read_records
from tests_support import TEST_SUBSET, startup_noise

T, S, D = "trains", "stuck", "diverged"
ROW_FLAGS = {
    "keras/tensorflow": ["--backend", "keras", "--engine", "tensorflow"],
    "keras/tf_keras": ["--backend", "keras", "--engine", "tf_keras"],
    "keras/jax": ["--backend", "keras", "--engine", "jax"],
    "keras/torch": ["--backend", "keras", "--engine", "torch"],
    "torch": ["--backend", "torch"],
    "jax": ["--backend", "jax"],
}
# 10 steps of 100 images: logits reach 0.46-0.53 test accuracy and unit inputs 0.56-0.61 (measured on every
# row), well clear of the 0.3 line, while stuck and diverged runs show at once (step 0).
SIZE_FLAGS = ["--train-size", "1000", "--test-size", "500"]
VARIANTS_FLAGS = ["--variants", "all", "--prob-loss", "both", "--controls"]
MECHANISM_FLAGS = ["--variants", "fit_probs,loop_probs", "--softmax", "all", "--loop-exec", "both"]
# The commands, as (row, flags), longest first: each runs in its own process into its own results directory,
# side by side (a cell two commands of a row share runs twice, and both runs must meet the expectation).
COMMANDS = [("keras/tensorflow", VARIANTS_FLAGS), ("keras/tensorflow", MECHANISM_FLAGS),
            ("keras/tf_keras", MECHANISM_FLAGS), ("torch", VARIANTS_FLAGS), ("keras/jax", VARIANTS_FLAGS),
            ("jax", VARIANTS_FLAGS), ("keras/torch", ["--variants", "fit_probs,loop_probs"])]


def cells(fit_native, loop_native, clipped=S, unit=T, default_loop=None) -> dict:
    """A row of the post's four variants: the probs outcomes given, the logits variants train everywhere.

    Keys: (variant, prob_loss, input_scale, softmax, loop_exec)."""
    return {("fit_probs", "native", "raw", "activation", None): fit_native,
            ("loop_probs", "native", "raw", "activation", default_loop): loop_native,
            ("fit_probs", "clipped", "raw", "activation", None): clipped,
            ("loop_probs", "clipped", "raw", "activation", default_loop): clipped,
            ("fit_probs", "native", "unit", "activation", None): unit,
            ("loop_probs", "native", "unit", "activation", default_loop): unit,
            ("fit_logits", None, "raw", None, None): T,
            ("loop_logits", None, "raw", None, default_loop): T}


def mechanism(stuck_cells: set[tuple[str, str | None]]) -> dict:
    """Keras' mechanism cells: softmax form x (fit, eager loop, compiled loop); those in ``stuck_cells`` stick."""
    return {("fit_probs" if run is None else "loop_probs", "native", "raw", softmax, run):
            S if (softmax, run) in stuck_cells else T
            for softmax in ("activation", "layer", "op") for run in (None, "eager", "compiled")}


EXPECTED = {
    # Keras 3 on TensorFlow: its softmax (activation or layer) carries its logits (`_keras_logits`), and a
    # traced graph shows the Softmax op of a bare tf.nn.softmax; only the bare op run eagerly leaves Keras
    # nothing but the clip — the post's failure, with today's code.
    "keras/tensorflow": {**cells(T, T, default_loop="eager"), **mechanism({("op", "eager")})},
    # Legacy Keras 2.21 (tf_keras): the same two rescues (its backend.softmax caches logits since 2.14).
    "keras/tf_keras": mechanism({("op", "eager")}),
    # Keras 3 on JAX clips probabilities and never looks for logits: the post's failure, now in fit too.
    "keras/jax": cells(S, S, default_loop="compiled"),
    # Keras 3 on torch clips as well (its loop runs eagerly; the two probability cells are enough to show it).
    "keras/torch": {("fit_probs", "native", "raw", "activation", None): S,
                    ("loop_probs", "native", "raw", "activation", "eager"): S},
    # PyTorch: log(softmax) of an underflowed probability is -inf; torch.compile does not rewrite it.
    "torch": cells(D, D, default_loop="eager"),
    # JAX: XLA does not rewrite log(softmax) either.
    "jax": cells(D, D, default_loop="compiled"),
}
CELLS = [(row, key) for row, row_cells in EXPECTED.items() for key in row_cells]


def expected_loss_path(row: str, key: tuple) -> str:
    """The computation behind each cell's loss, as the run measured it on a saturated probe (``loss_path``):
    the mechanism the outcomes above follow from."""
    variant, prob_loss, _, softmax, loop_exec = key
    if variant.endswith("_logits"):
        return "logits"
    if prob_loss == "clipped":  # the Keras-2 eager formula, spelled out in every framework
        return "clipped_probs"
    if row in ("torch", "jax"):  # nothing rewrites log(softmax(z))
        return "log_probs"
    if row in ("keras/jax", "keras/torch"):  # these engines never look for logits
        return "clipped_probs"
    # Keras on TF and tf_keras: logits recovered, unless a bare softmax op runs eagerly
    return "clipped_probs" if (softmax, loop_exec) == ("op", "eager") else "recovered_logits"


def cell_key(record: dict) -> tuple:
    return (record["variant"], record["prob_loss"], record["input_scale"], record["softmax"], record["loop_exec"])


def cell_id(row: str, key: tuple) -> str:
    return "-".join([row, *(str(part) for part in key if part is not None)])


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Run every command (three processes at a time, one thread each), keyed by (row, cell); a cell run by two
    commands of a row is kept as a list of both records."""
    outs = [tmp_path_factory.mktemp(row.replace("/", "_")) for row, _ in COMMANDS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        for failure in pool.map(run_command, COMMANDS, outs):
            assert failure is None, failure
    found = {}
    for (row, _), out in zip(COMMANDS, outs):
        for record in read_records(out / "runs.jsonl"):
            found.setdefault((row, cell_key(record)), []).append(record)
    return found


def run_command(command: tuple[str, list[str]], out) -> str | None:
    """One row's command into ``out``; what failed, or None. One thread per process: three run side by side
    (process start-up dominates one epoch of 1,000 images)."""
    row, flags = command
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1")
    argv = [sys.executable, "-m", "experiments.run", *ROW_FLAGS[row], *flags, "--epochs", "1", *SIZE_FLAGS,
            "--data", str(TEST_SUBSET), "--out", str(out)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    if result.returncode != 0:
        return f"{row}: {' '.join(argv)} failed:\n{result.stderr[-3000:]}"
    if startup_noise(result.stderr):  # a run's output starts with the project's own lines
        return f"{row}: framework start-up messages reached the terminal:\n{result.stderr[-3000:]}"
    return None


@pytest.mark.parametrize("row, key", CELLS, ids=[cell_id(row, key) for row, key in CELLS])
def test_behaviour_cell(records, row, key):
    runs = records.get((row, key))
    assert runs, f"{cell_id(row, key)}: no record"
    for record in runs:
        check_cell(row, key, record)


def check_cell(row: str, key: tuple, record: dict) -> None:
    expected, actual = EXPECTED[row][key], classify(record)
    assert actual == expected, (
        f"{cell_id(row, key)}: expected {expected}, got {actual} — status {record['status']}, accuracy "
        f"{record['test_accuracy']}, epoch cost {record['epoch_costs']}, loss path {record['loss_path']}, "
        f"error {record['error']}")
    assert record["loss_path"] == expected_loss_path(row, key), (
        f"{cell_id(row, key)}: loss path {record['loss_path']}, expected {expected_loss_path(row, key)}")
    if actual == S:  # stuck the post's way: clipped rows at -ln(1e-7) = 16.1 dominate the cost
        assert record["epoch_costs"][-1] >= 12 and record["diagnostics"][-1]["saturated_share"] > 0.5
    if actual == D:
        assert record["first_nonfinite_step"] is not None and record["first_nonfinite_step"] < 10


def test_every_run_is_a_cell(records):
    """No command ran a cell the table does not expect (a new axis value would otherwise go untested)."""
    unexpected = sorted(cell_id(row, key) for row, key in records if key not in EXPECTED[row])
    assert not unexpected, f"runs without an expected outcome: {unexpected}"

"""The atlas' training stage (experiments.atlas.training, train_child): a cell trains through the backends' given
loss and starts where its probe says; the runs are ordinary records that resume by key; the full stage picks
its cells from the quick records as documented.

The hook tests run one cell per framework in this process (Keras on its TensorFlow engine, as the suite's
other in-process Keras tests): each trains one epoch of 3 batches of the vendored subset, with dropout off so
that step 0's training-mode logits are the eval-mode logits the probe measures. The command test runs
``python -m experiments.atlas --train`` twice on two PyTorch cells: about 15 s on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import get_backend
from common.data import epoch_batches, prepare
from common.results import read_records
from common.spec import Spec
from common.variants import VARIANTS
from common.weights import initial_weights
from experiments.atlas import keras_cells, paths, probe, report, train_child, training
from experiments.harness.report import classify
from experiments.harness.runner import run_sweep

from tests_support import TEST_SUBSET

ROOT = Path(__file__).resolve().parent.parent
# One cell per framework, each a path that the training must reproduce at step 0: the softmax applied twice with
# integer labels (PyTorch), the hand-written eps under jax.jit, Keras' logits recovered behind its softmax
# activation (the head applied in the given loss must still carry them), and a raw TensorFlow call on integer
# labels in a traced graph (trained by a Keras model on the TensorFlow engine).
CELLS = {
    "torch": "torch | nn.CrossEntropyLoss()(out, t) | softmax | from_logits=None | eager",
    "jax": "jax | -jnp.sum(y * jnp.log(out + 1e-7), -1) | softmax | from_logits=None | graph",
    "keras/tensorflow": "keras/tensorflow | keras.losses.categorical_crossentropy | softmax | from_logits=False | eager",
    "tensorflow": "tensorflow | tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=out) | softmax | "
                  "from_logits=None | graph",
}
SMALL = Spec(epochs=1, train_size=300, test_size=100, drop_rate=0.0)


def measure_of(group: str):
    """The measurement the probe stage uses for the group's cells."""
    if group.startswith("keras/"):
        return keras_cells.framework_cells(group.split("/")[1]).measure
    return __import__(f"experiments.atlas.{train_child.CELL_MODULES[group]}", fromlist=["measure"]).measure


@pytest.mark.parametrize("group", list(CELLS))
def test_a_cell_trains_through_the_given_loss_from_its_probe_loss(group, subset_mnist):
    name, engine = training.TRAINED_BY[group]
    backend = get_backend(name, engine=engine)
    cells, index_targets = train_child.group_cells(group, backend)
    name = CELLS[group]
    cell = cells[name]
    spec = training.cell_spec(SMALL, name, cell.exec, "raw", 777)
    data = prepare(spec, subset_mnist)
    weights = initial_weights(spec)
    trainer = backend.make_trainer(spec, training.VARIANT, data, weights,
                                   loss=training.given_loss(cells, index_targets)(spec))
    batches = epoch_batches(spec, 0, len(data.x_train))
    x, y = data.x_train[batches[0]], data.y_train[batches[0]]
    logits, _ = trainer.probe(x, y)
    labels = y.argmax(-1)
    probed = measure_of(group)(cell, np.asarray(logits, np.float32), probe.call_targets(cell, labels, 10))
    losses = trainer.run_epoch(batches)
    assert trainer.loss_path == "given"
    assert paths.agrees(float(losses[0]), probed.loss), (losses[0], probed.loss)
    assert np.isfinite(losses).all() and len(losses) == 3
    moved = [name for name, value in trainer.weights().items() if not np.array_equal(value, weights[name])]
    assert moved, "three steps changed no weight"


def test_a_given_loss_needs_its_name_in_the_spec_and_a_logits_variant(subset_data):
    backend = get_backend("torch")
    loss = lambda y, z: z.sum()  # noqa: E731
    with pytest.raises(ValueError, match="no loss was given"):
        backend.make_trainer(SMALL.replace(loss_cell="x"), training.VARIANT, subset_data, initial_weights(SMALL))
    with pytest.raises(ValueError, match="needs its name in spec.loss_cell"):
        backend.make_trainer(SMALL, training.VARIANT, subset_data, initial_weights(SMALL), loss=loss)
    with pytest.raises(ValueError, match="use a logits variant"):
        backend.make_trainer(SMALL.replace(loss_cell="x"), VARIANTS["loop_probs"], subset_data,
                             initial_weights(SMALL), loss=loss)


def test_the_cell_keys_the_run_and_an_unset_cell_leaves_the_hash_as_it_was():
    assert Spec().hash() == "895c5e75ed09abad"  # the post's spec, as every published record keys it
    a, b = (training.cell_spec(SMALL, name, "eager", "raw", 777).hash() for name in ("a", "b"))
    assert a != b != SMALL.hash()


def test_a_cell_trains_in_its_own_execution_except_keras_on_jax_under_jit():
    def loop_exec(cell, exec_):
        return training.cell_spec(SMALL, cell, exec_, "raw", 777).loop_exec

    assert loop_exec("keras/tensorflow | x | softmax | from_logits=False | eager", "eager") == "eager"
    assert loop_exec("keras/tensorflow | x | softmax | from_logits=False | graph", "graph") == "compiled"
    assert loop_exec("torch | x | softmax | from_logits=None | eager", "eager") == "eager"
    assert loop_exec("keras/jax | x | softmax | from_logits=False | eager", "eager") == "compiled"


def test_runs_resume_by_key(tmp_path, monkeypatch):
    backend = get_backend("torch")
    cells, index_targets = train_child.group_cells("torch", backend)
    chosen = [(name, "eager") for name in list(cells)[:2]]
    base = Spec(epochs=1, train_size=200, test_size=100)
    plan = training.plan(base, chosen, "unit", 777)
    builder = training.given_loss(cells, index_targets)
    first = run_sweep(backend, plan, tmp_path, data_path=str(TEST_SUBSET), given_loss=builder)
    assert [r["spec"]["loss_cell"] for r in first] == [name for name, _ in chosen]
    monkeypatch.setattr(backend, "make_trainer", lambda *a, **k: pytest.fail("a finished run ran again"))
    again = run_sweep(backend, plan, tmp_path, data_path=str(TEST_SUBSET), given_loss=builder)
    assert again == first and len(read_records(tmp_path / "runs.jsonl")) == 2


# --- choosing the full stage's cells ----------------------------------------------------------------------------

def probe_record(cell: str, path: str, group: str = "torch", exec_: str = "eager",
                 family: str = "categorical") -> dict:
    framework, _, engine = group.partition("/")
    return {"cell": cell, "framework": framework, "engine": engine or None, "exec": exec_, "loss_path": path,
            "family": family, "input": "raw"}


def run_record(cell: str, input_scale: str, seed: int, status: str, accuracy: float | None,
               first_bad: int | None = None) -> dict:
    spec = training.cell_spec(Spec(**training.QUICK), cell, "eager", input_scale, seed)
    return {"spec": spec.to_dict(), "spec_hash": spec.hash(), "backend": "torch", "engine": None,
            "variant": "loop_logits", "seed": seed, "device": "cpu", "input_scale": input_scale, "status": status,
            "test_accuracy": accuracy, "first_nonfinite_step": first_bad}


def test_the_full_stage_takes_the_cells_that_learned_something_on_raw_pixels_and_double_softmax_on_unit():
    probed = [probe_record("exact", "logits"), probe_record("twice", "double_softmax"),
              probe_record("clip", "clipped"), probe_record("log", "raw_log"), probe_record("late", "raw_log"),
              probe_record("raises", "error"), probe_record("bce", "logits", family="binary")]
    quick = [run_record("exact", "raw", 777, "ok", 0.9), run_record("exact", "raw", 778, "ok", 0.9),
             run_record("twice", "raw", 777, "ok", 0.1), run_record("twice", "raw", 778, "ok", 0.4),  # one trains
             run_record("clip", "raw", 777, "ok", 0.1),  # stuck
             run_record("log", "raw", 777, "diverged", 0.1, first_bad=0),  # diverged at step 0
             run_record("late", "raw", 777, "diverged", 0.1, first_bad=12),  # learned for 12 steps first
             run_record("exact", "unit", 777, "ok", 0.9)]
    selection = training.full_selection(probed, quick)
    assert [c.cell for c in selection["raw"]] == ["exact", "twice", "late"]
    assert [c.cell for c in selection["unit"]] == ["exact", "twice"]  # the double softmax and its baseline


def test_the_full_table_sets_each_run_beside_the_first_logits_cell_of_its_group():
    """The baseline is the first categorical logits cell in atlas order (as the full stage picks it); a second
    logits cell is measured against it, and the baseline itself says so."""
    probed = [probe_record(cell, path) for cell, path in
              (("first", "logits"), ("second", "logits"), ("twice", "double_softmax"))]
    full = [{**run_record(cell, "raw", 777, "ok", accuracy), "spec": training.cell_spec(
        Spec(), cell, "eager", "raw", 777).to_dict(), "epoch_costs": [0.1]}
        for cell, accuracy in (("first", 0.97), ("second", 0.96), ("twice", 0.90))]
    rows = report.full_markdown(probed, report.Trained({}, full)).splitlines()[2:]
    assert [row.split(" | ")[-2:] for row in rows] == [
        ["0.97", "(the baseline) |"], ["0.97", "+0.0100 |"], ["0.97", "+0.0700 |"]]


def test_a_gap_across_machine_classes_is_marked_and_the_classes_are_counted():
    """A run and its baseline made on different machine classes: the gap is marked, the legend and the full
    findings' heading count the runs of each class (a run re-made elsewhere is not bit-identical)."""
    probed = [{**probe_record(cell, path), "api": cell, "head": "softmax", "from_logits": None}
              for cell, path in (("first", "logits"), ("twice", "double_softmax"))]
    made = {"first": "x86_64-intel-6.207-avx512", "twice": "x86_64-amd-25.1-avx2"}
    full = [{**run_record(cell, "unit", 777, "ok", accuracy), "env": {"machine_class": made[cell]},
             "spec": training.cell_spec(Spec(), cell, "eager", "unit", 777).to_dict(), "epoch_costs": [0.1]}
            for cell, accuracy in (("first", 0.97), ("twice", 0.90))]
    table = report.full_markdown(probed, report.Trained({}, full)).splitlines()
    assert [row.split(" | ")[-1] for row in table[2:4]] == ["(the baseline) |", "+0.0700 ‡ |"]
    assert table[-1].startswith("‡ the run and its baseline were made on different machine classes (1 run; the "
                                "runs by class: `x86_64-intel-6.207-avx512` (1 run), `x86_64-amd-25.1-avx2` (1 run))")
    heading = report.full_findings(probed, report.Trained({}, full))[0]
    assert heading.endswith("2 of the 2 planned runs, made on `x86_64-intel-6.207-avx512` (1 run), "
                            "`x86_64-amd-25.1-avx2` (1 run)):")


def test_the_training_findings_count_paths_by_outcome_and_pair_the_double_softmax_with_its_logits_cell():
    probed = [{**probe_record(cell, path), "api": cell, "head": "softmax"} for cell, path in
              (("exact", "logits"), ("twice", "double_softmax"), ("clip", "clipped"), ("eps", "eps_added"))]
    accuracy = {("exact", "raw"): [0.8, 0.8], ("twice", "raw"): [0.1, 0.4], ("clip", "raw"): [0.1, 0.1],
                ("eps", "raw"): [0.5, 0.6], ("exact", "unit"): [0.9, 0.8], ("twice", "unit"): [0.7, 0.5]}
    quick = {}
    for (cell, input_scale), values in accuracy.items():
        runs = [run_record(cell, input_scale, 777 + i, "ok", value) for i, value in enumerate(values)]
        quick.setdefault(cell, {})[input_scale] = runs
    raw, unit = report.training_findings(probed, report.Trained(quick, []))
    assert raw == ("- Raw pixels: 1 of the 1 trained cells with an exact path train in every seed; of the 3 others, "
                   "1 train in every seed (`eps` on softmax (eps_added)), 1 in some, 1 in none.")
    # gaps 0.9 - 0.7 and 0.8 - 0.5: mean 0.25, paired t (1 df) 0.25 +- 12.706 * 0.0707 / 1.414
    assert unit.startswith("- Unit pixels: 1 of the 1 softmax-applied-twice cells train in every seed, 0.250 behind "
                           "their group's logits cell in test accuracy (paired t 95% CI [-0.385, 0.885] over 2 ")


def test_the_full_findings_name_what_stopped_training_and_pair_each_double_softmax_with_its_baseline():
    probed = [{**probe_record(cell, path), "api": cell, "head": "softmax", "from_logits": None} for cell, path in
              (("exact", "logits"), ("clip", "clipped"), ("twice", "double_softmax"), ("again", "double_softmax"))]
    quick = {"exact": {"raw": [run_record("exact", "raw", 777, "ok", 0.9)]},
             "clip": {"raw": [run_record("clip", "raw", 777, "ok", 0.5)]},  # trains for one epoch: picked
             "twice": {"raw": [run_record("twice", "raw", 777, "ok", 0.1)]},  # stuck: raw not picked
             "again": {"raw": [run_record("again", "raw", 777, "ok", 0.1)]}}
    full = [{**run_record(cell, input_scale, 777, "ok", accuracy),
             "spec": training.cell_spec(Spec(), cell, "eager", input_scale, 777).to_dict()}
            for cell, input_scale, accuracy in (("exact", "raw", 0.97), ("clip", "raw", 0.1), ("exact", "unit", 0.98),
                                                ("twice", "unit", 0.90), ("again", "unit", 0.88))]
    heading, raw, unit = report.full_findings(probed, report.Trained(quick, full))
    # planned: exact and clip on raw pixels; both double softmax cells and their baseline on unit pixels
    assert heading.endswith("seed 777, one run per cell, 5 of the 5 planned runs):")
    assert raw == ("  - raw pixels: 1 of the 2 cells run train (test accuracy 0.970-0.970); the others: "
                   "PyTorch `clip` on softmax, eager: stuck 0.1.")
    # gaps 0.98 - 0.90 and 0.98 - 0.88: mean 0.09, t (1 df) 0.09 +- 12.706 * 0.01414 / 1.414
    assert unit.startswith("  - unit pixels: 2 of the 2 softmax-applied-twice cells run beside their logits cell "
                           "train, ending 0.090 behind it in test accuracy (t 95% CI [-0.037, 0.217] over the 2 ")


def test_the_quick_records_are_the_largest_shorter_than_full_family():
    tiny = training.cell_spec(Spec(epochs=1, train_size=600, test_size=200), "a", "eager", "raw", 777)
    records = [run_record("a", "raw", 777, "ok", 0.5), run_record("b", "raw", 777, "ok", 0.5),
               {**run_record("a", "raw", 777, "ok", 0.5), "spec": tiny.to_dict(), "spec_hash": tiny.hash()}]
    full = training.cell_spec(Spec(), "a", "eager", "raw", 777)
    records.append({**records[0], "spec": full.to_dict(), "spec_hash": full.hash()})
    assert [r["spec"]["loss_cell"] for r in training.quick_records(records)] == ["a", "b"]
    assert [training.is_full(r) for r in records] == [False, False, False, True]


# --- the command, end to end ------------------------------------------------------------------------------------

def run_atlas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.atlas", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_the_training_stage_records_every_run_and_resumes(tmp_path):
    args = ["--train", "--quick", "--frameworks", "torch", "--data", str(TEST_SUBSET), "--out", str(tmp_path),
            "--train-size", "600", "--test-size", "200", "--seeds", "1", "--inputs", "raw",
            "--cell", "torch | F.cross_entropy(out, t) |", "--cell", "torch | F.nll_loss(torch.log(out), t) |"]
    first = run_atlas(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    records = read_records(tmp_path / "runs.jsonl")
    cells = {r["spec"]["loss_cell"]: r for r in records}
    assert len(records) == len(cells) == 5  # F.cross_entropy(out, t) on four heads, and the forgotten log
    exact = cells["torch | F.cross_entropy(out, t) | logits | from_logits=None | eager"]
    assert classify(exact) == "trains"  # 6 steps of the exact loss: 0.495 on the vendored subset
    assert classify(cells["torch | F.nll_loss(torch.log(out), t) | softmax | from_logits=None | eager"]) == "diverged"
    assert all(r["loss_path"] == "given" and r["backend"] == "torch" for r in records)
    atlas_md = (tmp_path / "atlas.md").read_text()
    assert f"`logits` · 59.53<br>raw ✓ {exact['test_accuracy']:.3f} |" in atlas_md
    assert "`raw_log` ∇NaN · inf<br>raw ✗ |" in atlas_md
    headline = (tmp_path / "headline.md").read_text()
    trains = sum(classify(r) == "trains" for r in records)
    assert f"| PyTorch | 29 | 11 | 8 | 4 | 5 | 1 | {trains} of 5 | 0 of 0 |" in headline  # no unit-pixel runs
    again = run_atlas(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "5 of 5 runs already finished" in again.stdout + again.stderr
    assert len(read_records(tmp_path / "runs.jsonl")) == 5
    sweeps = [json.loads(line) for line in (tmp_path / "sweeps.jsonl").read_text().splitlines()]
    assert [s["runs_this_session"] for s in sweeps] == [5, 0]


def test_the_full_stage_needs_quick_records(tmp_path):
    (tmp_path / "atlas.jsonl").write_text(json.dumps(probe_record("torch | x | logits | from_logits=None | eager",
                                                                  "logits")) + "\n")
    result = run_atlas("--train", "--frameworks", "torch", "--out", str(tmp_path), "--data", str(TEST_SUBSET))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"python -m experiments.atlas: error: no quick training records in {tmp_path / 'runs.jsonl'}")

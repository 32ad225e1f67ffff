"""Run records: fixed keys, whole-line appends that survive a crash, resumable keys, environment."""

import json
import subprocess

import numpy as np
import pytest

from common.diagnostics import EpochDiagnostics
from common.results import (RECORD_KEYS, append_record, capture_env, finished_keys, make_record, read_records,
                            record_key)
from common.spec import Spec
from common.training import TrainOutcome
from common.variants import VARIANTS


def outcome(status="ok", costs=(2.0, 1.0), accuracy=0.9):
    return TrainOutcome(
        epoch_costs=list(costs), step_losses=np.array(costs), status=status,
        diagnostics=[EpochDiagnostics(0, 0.5, float("nan"), 142.0, "logits")],
        first_nonfinite_step=3 if status == "diverged" else None, test_loss=float("nan"),
        test_accuracy=accuracy, test_predicted_shares=np.array([0.25, 0.75]), loss_path="logits", wall_seconds=1.0, compile_seconds=0.25,
        steps_per_second=8.0, trainer=None)


def record(variant="loop_logits", seed=777, **kwargs):
    return make_record(Spec(seed=seed), VARIANTS[variant], "torch", None, "cpu", "abc", {"python": "3"},
                       outcome(**kwargs))


def test_record_has_the_fixed_keys_and_no_nan():
    r = record(costs=(float("nan"), 1.0), status="diverged")
    assert tuple(r) == RECORD_KEYS
    assert r["epoch_costs"] == [None, 1.0] and r["test_loss"] is None
    assert r["diagnostics"][0]["grad_norm"] is None and r["first_nonfinite_step"] == 3
    assert r["prob_loss"] is None  # logits variants have no probability-loss flavour
    assert make_record(Spec(), VARIANTS["fit_probs"], "jax", None, "cpu", "abc", {}, outcome())["prob_loss"] == "native"
    json.dumps(r, allow_nan=False)


def test_new_axes_round_trip(tmp_path):
    """softmax, loop_exec, the predicted-class and label shares are written and read back as given."""
    spec = Spec(softmax="op", loop_exec="compiled")
    shares = {"train": [0.4, 0.6], "test": [0.5, 0.5]}
    written = make_record(spec, VARIANTS["loop_probs"], "keras", "tensorflow", "cpu", "abc", {}, outcome(),
                          label_shares=shares)
    append_record(tmp_path / "runs.jsonl", written)
    (read,) = read_records(tmp_path / "runs.jsonl")
    assert read == written
    assert (read["softmax"], read["loop_exec"]) == ("op", "compiled")
    assert read["test_predicted_shares"] == [0.25, 0.75] and read["label_shares"] == shares
    assert Spec.from_dict(read["spec"]) == spec
    logits = make_record(spec, VARIANTS["fit_logits"], "keras", "tensorflow", "cpu", "abc", {}, outcome())
    assert logits["softmax"] is None  # the logits head has no softmax form


def test_failed_record():
    r = make_record(Spec(), VARIANTS["fit_probs"], "keras", "jax", "cpu", "abc", {}, error="RuntimeError: boom")
    assert r["status"] == "failed" and r["error"] == "RuntimeError: boom" and r["engine"] == "jax"
    assert tuple(r) == RECORD_KEYS


def test_append_and_read_back(tmp_path):
    path = tmp_path / "out" / "runs.jsonl"
    append_record(path, record(seed=1))
    append_record(path, record(seed=2))
    assert [r["seed"] for r in read_records(path)] == [1, 2]
    assert read_records(tmp_path / "missing.jsonl") == []


def test_half_written_last_line_is_skipped_and_next_append_is_clean(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, record(seed=1))
    append_record(path, record(seed=2))
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[0][:57])  # a crash mid-write of a third record
    with pytest.warns(UserWarning, match="skipped 1 incomplete"):
        assert [r["seed"] for r in read_records(path)] == [1, 2]
    append_record(path, record(seed=3))
    with pytest.warns(UserWarning, match="skipped 1"):
        assert [r["seed"] for r in read_records(path)] == [1, 2, 3]


def test_finished_keys_skip_failed_runs(tmp_path):
    path = tmp_path / "runs.jsonl"
    ok, diverged = record(seed=1), record(seed=2, status="diverged")
    failed = make_record(Spec(seed=3), VARIANTS["loop_logits"], "torch", None, "cpu", "abc", {}, error="x")
    for r in (ok, diverged, failed):
        append_record(path, r)
    assert finished_keys(path) == {record_key(ok), record_key(diverged)}


def test_environment_names_machine_and_versions():
    env = capture_env({"torch": "2.13.0"}, "cpu", {"intra_op": 2})
    assert env["frameworks"] == {"torch": "2.13.0"}
    assert env["threads"] == {"intra_op": 2, "inter_op": None, "omp_wait_policy": None}  # every record: same keys
    with pytest.raises(ValueError, match="tf_intra_op"):
        capture_env({}, "cpu", {"tf_intra_op": 2})
    assert env["python"].count(".") == 2 and env["numpy"] == np.__version__
    assert env["cpu"] and env["cpu_count"] >= 1
    assert env["git_commit"] is None or len(env["git_commit"].split("+")[0]) == 40


def test_results_files_do_not_make_the_tree_dirty(tmp_path, monkeypatch):
    """A sweep appends to committed results files: that must not mark the records it writes next as dirty,
    while a change to code does."""
    from common import results
    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / results.RESULTS_DIR).mkdir(parents=True)
    (tmp_path / results.RESULTS_DIR / "runs.jsonl").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(results, "CHECKOUT", tmp_path)
    (tmp_path / results.RESULTS_DIR / "runs.jsonl").write_text("{}\n{}\n")
    assert results.tracked_changes() == [] and not results.git_commit().endswith("+dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results.tracked_changes() == ["code.py"] and results.git_commit().endswith("+dirty")

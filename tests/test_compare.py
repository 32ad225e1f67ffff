"""The comparison command end to end on a tiny spec: one process per backend, resumable, report written."""

import json
import subprocess
import sys

import pytest

from common.results import read_records
from tests_support import TEST_SUBSET

TINY = ["--variants", "loop_logits,fit_probs", "--epochs", "1", "--train-size", "500", "--test-size", "200",
        "--data", str(TEST_SUBSET)]


def compare(out, *extra):
    return subprocess.run([sys.executable, "-m", "experiments.compare", "--backends", "jax", *TINY, *extra,
                           "--out", str(out)], capture_output=True, text=True, timeout=600)


def test_compare_runs_resumes_and_reports(tmp_path):
    first = compare(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    records = read_records(tmp_path / "runs.jsonl")
    assert sorted(r["variant"] for r in records) == ["fit_probs", "loop_logits"]
    for name in ("table.md", "table.csv", "findings.md", "curves.png", "accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| jax |" in (tmp_path / "table.md").read_text()

    again = compare(tmp_path)  # same command: nothing new runs
    assert again.returncode == 0 and "2 of 2 runs finished" in again.stdout
    assert len(read_records(tmp_path / "runs.jsonl")) == 2
    sweeps = [json.loads(line) for line in (tmp_path / "sweeps.jsonl").read_text().splitlines()]
    assert [s["runs_this_session"] for s in sweeps] == [2, 0]
    assert sweeps[0]["command"].startswith("python -m experiments.compare --backends jax")

    # A run lost to a crash (its line never written) is the only one re-run.
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    (tmp_path / "runs.jsonl").write_text(lines[0] + "\n" + lines[1][:40])  # half of the second line
    resumed = compare(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with pytest.warns(UserWarning, match="skipped 1 incomplete line"):  # the torn line stays, unread
        variants = [r["variant"] for r in read_records(tmp_path / "runs.jsonl")]
    assert sorted(variants) == ["fit_probs", "loop_logits"]
    assert variants[0] == json.loads(lines[0])["variant"]  # the finished run was kept, not repeated


def test_unknown_backend_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.compare", "--backends", "jax,mxnet", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "mxnet" in result.stderr and "keras, torch, jax" in result.stderr

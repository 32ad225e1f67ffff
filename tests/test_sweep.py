"""The sweep driver with the local executor, and the directory lock: one sweep per results directory."""

import os
import subprocess
import sys
import time

import pytest

from common.dirlock import DirectoryInUse, locked
from common.results import read_records
from experiments.harness import sweep
from sweep_support import TINY, tiny_units


def test_lock_refuses_a_second_holder(tmp_path):
    with locked(tmp_path) as path:
        assert path == tmp_path / ".sweep.lock"
        with pytest.raises(DirectoryInUse, match=rf"in use by another sweep \(lock .*\.sweep\.lock, pid {os.getpid()}\)"):
            with locked(tmp_path):
                pass
    with locked(tmp_path):  # released when the first holder is done
        pass


@pytest.mark.parametrize("module", ["experiments.compare", "experiments.run"])
def test_a_second_sweep_on_a_directory_in_use_exits_2(tmp_path, module):
    backend = ["--backends", "jax"] if module == "experiments.compare" else ["--backend", "jax"]
    with locked(tmp_path):
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", module, *backend, *TINY, "--out", str(tmp_path)],
                                capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and f"pid {os.getpid()}" in result.stderr
    assert f"{tmp_path} is in use by another sweep (lock {tmp_path / '.sweep.lock'}" in result.stderr
    assert elapsed < 10
    assert not (tmp_path / "runs.jsonl").exists()


def test_a_child_that_exits_non_zero_leaves_its_runs_failed(tmp_path):
    units = tiny_units([777], data=tmp_path / "missing.npz")  # the child stops at once: no data file
    count = sweep.run_units(units, tmp_path, sweep.LocalExecutor(cpus=1))
    assert (count.planned, count.finished) == (1, 0)
    [record] = read_records(tmp_path / "runs.jsonl")
    assert record["status"] == "failed" and record["seed"] == 777
    assert record["error"] == "the torch seed 777 process exited with status 2; see its output"


def test_make_units_splits_rows_per_seed():
    units = tiny_units([777, 778])
    assert [(u.backend, u.seed, len(u.planned)) for u in units] == [("torch", 777, 1), ("torch", 778, 1)]
    assert units[1].args[-2:] == ("--seed", "778") and "--out" not in units[1].args


def test_executor_ray_without_ray_names_the_extra(monkeypatch, capsys):
    from experiments.compare import command as compare

    parser = compare.build_parser()
    monkeypatch.setattr(sweep.importlib.util, "find_spec", lambda name: None)  # as if Ray were not installed
    with pytest.raises(SystemExit) as exit_:
        sweep.make_executor(parser, parser.parse_args(["--executor", "ray"]))
    assert exit_.value.code == 2
    assert "--executor ray needs Ray, the 'ray' extra: pip install -c constraints.txt -e '.[ray]'" in \
        capsys.readouterr().err


def test_ray_is_imported_only_when_asked_for():
    code = "import sys, experiments.compare, experiments.harness.sweep; assert 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0

"""The Ray executor on a local Ray instance (2 CPUs): same records as the local executor, a killed worker,
a resumed sweep. One Ray instance serves the module (its start-up takes seconds)."""

import os
import signal
import threading
import time

import pytest

from common.results import read_records
from experiments import sweep
from sweep_support import tiny_units

ray = pytest.importorskip("ray")

COMPARED = ("spec", "spec_hash", "backend", "engine", "variant", "seed", "device", "data_sha256", "status",
            "epoch_costs", "test_loss", "test_accuracy", "test_predicted_shares", "diagnostics", "loss_path")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def by_key(path):
    return {(r["seed"], r["variant"], r["status"]): {k: r[k] for k in COMPARED} for r in read_records(path)}


def test_ray_sweep_gives_the_local_records(local_ray, tmp_path):
    units = tiny_units([777, 778])
    on_ray = sweep.run_units(units, tmp_path / "ray", sweep.RayExecutor(cpus=1))
    local = sweep.run_units(units, tmp_path / "local", sweep.LocalExecutor(cpus=1))
    assert on_ray == local == sweep.SweepCount(planned=2, finished=2, this_session=2)
    assert by_key(tmp_path / "ray" / "runs.jsonl") == by_key(tmp_path / "local" / "runs.jsonl")


def test_killed_worker_fails_its_runs_and_a_rerun_resumes(local_ray, tmp_path):
    units = tiny_units([777, 778])
    count = {}
    driver = threading.Thread(target=lambda: count.update(first=sweep.run_units(units, tmp_path, sweep.RayExecutor(cpus=1))))
    driver.start()
    _, worker = wait_for_child(seed=778)
    os.kill(worker, signal.SIGKILL)  # the Ray worker running seed 778's unit dies mid-task
    driver.join(timeout=300)
    assert count["first"] == sweep.SweepCount(planned=2, finished=1, this_session=1)
    first = {r["seed"]: r for r in read_records(tmp_path / "runs.jsonl")}
    assert first[777]["status"] == "ok"
    assert first[778]["status"] == "failed" and "the Ray worker died running torch seed 778" in first[778]["error"]

    again = sweep.run_units(units, tmp_path, sweep.RayExecutor(cpus=1))  # retries only the failed unit
    assert again == sweep.SweepCount(planned=2, finished=2, this_session=1)
    assert sorted((r["seed"], r["status"]) for r in read_records(tmp_path / "runs.jsonl")) == [
        (777, "ok"), (778, "failed"), (778, "ok")]  # in the order the units ended


def wait_for_child(seed, timeout=120):
    """(pid, parent pid) of the experiments.run child of ``seed``'s unit, once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
                with open(f"/proc/{pid}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if b"experiments.run" in argv and str(seed).encode() in argv and b"--out" in argv:
                return int(pid), parent
        time.sleep(0.05)
    raise TimeoutError(f"no experiments.run child for seed {seed}")

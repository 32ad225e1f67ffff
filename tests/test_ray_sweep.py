"""The Ray executor on a local Ray instance (2 CPUs): same records as the local executor, a killed worker,
a resumed sweep. One Ray instance serves the module (its start-up takes seconds)."""

import os
import signal
import threading
import time

import pytest

from common.results import read_records
from experiments.harness import sweep
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
    units = tiny_units([777], variants="loop_logits,loop_probs")  # one unit (a process) of two runs
    on_ray = sweep.run_units(units, tmp_path / "ray", sweep.RayExecutor(cpus=1))
    local = sweep.run_units(units, tmp_path / "local", sweep.LocalExecutor(cpus=1))
    assert on_ray == local == sweep.SweepCount(planned=2, finished=2, this_session=2)
    assert by_key(tmp_path / "ray" / "runs.jsonl") == by_key(tmp_path / "local" / "runs.jsonl")


def test_killed_worker_fails_its_runs_and_a_rerun_resumes(local_ray, tmp_path):
    # Seed 778's unit has a second, slower run (fit compiles), during which its worker is killed.
    units = tiny_units([777]) + tiny_units([778], variants="loop_logits,fit_logits")
    count = {}

    def first_sweep():
        count["first"] = sweep.run_units(units, tmp_path, sweep.RayExecutor(cpus=1))

    driver = threading.Thread(target=first_sweep)
    driver.start()
    wait_for_record(tmp_path / "runs.jsonl", seed=778)  # the unit's first run has streamed back ...
    child, worker = wait_for_child(seed=778)
    os.kill(worker, signal.SIGKILL)  # ... then the Ray worker running it dies mid-task
    driver.join(timeout=300)
    # Ray stops the children of a worker that dies (measured with this Ray version): none trains on alone.
    assert gone(child, timeout=10), "the killed worker's experiments.run child is still running"
    assert count["first"] == sweep.SweepCount(planned=3, finished=2, this_session=2)
    first = {(r["seed"], r["variant"]): r for r in read_records(tmp_path / "runs.jsonl")}
    assert first[777, "loop_logits"]["status"] == "ok"
    assert first[778, "loop_logits"]["status"] == "ok"  # kept: it ended before the worker died
    assert first[778, "fit_logits"]["status"] == "failed"
    assert "the Ray worker died running torch seed 778" in first[778, "fit_logits"]["error"]

    again = sweep.run_units(units, tmp_path, sweep.RayExecutor(cpus=1))  # retries only the failed run
    assert again == sweep.SweepCount(planned=3, finished=3, this_session=1)
    assert [(r["seed"], r["variant"], r["status"]) for r in read_records(tmp_path / "runs.jsonl")
            if r["seed"] == 778] == [(778, "loop_logits", "ok"), (778, "fit_logits", "failed"),
                                     (778, "fit_logits", "ok")]


def gone(pid, timeout=30):
    """Whether process ``pid`` has ended (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def wait_for_record(path, seed, timeout=120):
    """Until the driver has written a record of ``seed`` to ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["seed"] == seed for r in read_records(path)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no record of seed {seed} in {path}")


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

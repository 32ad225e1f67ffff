"""Full-length statistical checks (opt-in: ``pytest -m slow``; ~1-2 hours on a 2-core CPU).

The post's full spec (15 epochs, all 60,000 images) for three seeds per backend: the logits variants reach the
post's accuracy, and the clipped probability loss stays stuck the whole way, as the post's loop did.
Needs full MNIST: ``--data``-style discovery (``$MNIST_PATH``, the Keras cache, ...).
"""

from __future__ import annotations

import statistics
import subprocess
import sys

import pytest

from common.data import find_mnist
from experiments.harness.report import classify
from common.results import read_records

pytestmark = pytest.mark.slow
SEEDS = ("777", "778", "779")


@pytest.mark.parametrize("backend", ["keras", "torch", "jax"])
def test_full_runs_match_the_post(tmp_path, backend):
    command = [sys.executable, "-m", "experiments.run", "--backend", backend, "--variants", "loop_logits,loop_probs",
               "--prob-loss", "clipped", "--data", str(find_mnist(download=False)), "--out", str(tmp_path)]
    for seed in SEEDS:
        command += ["--seed", seed]
    subprocess.run(command, check=True, capture_output=True, timeout=4 * 3600)
    records = read_records(tmp_path / "runs.jsonl")
    logits = [r["test_accuracy"] for r in records if r["variant"] == "loop_logits"]
    stuck = [r for r in records if r["variant"] == "loop_probs"]
    assert len(logits) == len(stuck) == len(SEEDS)
    # The post's loop_logits reached 0.9701; three seeds of ours should average within a point of it.
    assert statistics.mean(logits) > 0.96 and statistics.stdev(logits) < 0.01, logits
    # The post's stuck loop ended at 0.2092 with costs 12.8-14.3 throughout.
    for r in stuck:
        assert classify(r) == "stuck" and min(r["epoch_costs"]) > 12, r["epoch_costs"]

"""The shared command line: bad input is one clear line naming what is accepted, exit status 2."""

import os
import subprocess
import sys

import pytest

from backends.keras_backend.engine import STARTUP_LOGS_ENV
from experiments.harness import cli
from tests_support import TEST_SUBSET


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, words",
    [
        (["experiments.run", "--backend", "nope"], ["--backend", "nope", "keras, torch, jax"]),
        (["experiments.torch_mnist", "--variants", "fit_prob"], ["fit_prob", "fit_probs, loop_probs"]),
        (["experiments.jax_mnist", "--epochs", "0"], ["epochs=0", ">= 1"]),
        (["experiments.jax_mnist", "--prob-loss", "soft"], ["--prob-loss", "native, clipped, both"]),
        (["experiments.jax_mnist", "--device", "tpu"], ["--device", "cpu, gpu"]),
        (["experiments.jax_mnist", "--engine", "jax"], ["--engine", "keras backend only"]),
        (["experiments.keras_mnist", "--engine", "theano"], ["--engine", "tensorflow, jax, torch, tf_keras"]),
        (["experiments.jax_mnist", "--seeds", "0"], ["--seeds 0"]),
        (["experiments.jax_mnist", "--seed", "-1"], ["--seed -1", "0 or more"]),
        (["experiments.torch_mnist", "--variants", ""], ["no variant", "all", "fit_probs, loop_probs"]),
        (["experiments.compare", "--out", str(TEST_SUBSET)], ["--out", "is a file", "directory"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words):
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_missing_data_file_is_one_line_and_exit_2(tmp_path):
    result = run("experiments.jax_mnist", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path))
    assert result.returncode == 2
    errors = [line for line in result.stderr.strip().splitlines() if "error" in line]
    assert errors == [f"python -m experiments.jax_mnist: error: MNIST file not found at {tmp_path / 'none.npz'} "
                      "(from --data); point --data or MNIST_PATH at a good copy of Keras' mnist.npz, or delete it to "
                      "re-download"]
    assert not (tmp_path / "runs.jsonl").exists()


def test_startup_logs_flag_reaches_this_process_and_those_it_starts(monkeypatch):
    """``--startup-logs`` is an environment variable once parsed: the framework loaded later here, and the
    backend processes ``experiments.compare`` starts, see it."""
    # setenv first, so that the teardown also removes what the flag sets (delenv of an unset name records
    # nothing to undo, and the variable would leak into later tests' subprocesses)
    monkeypatch.setenv(STARTUP_LOGS_ENV, "")
    monkeypatch.delenv(STARTUP_LOGS_ENV)
    parser = cli.Parser(prog="p")
    cli.add_run_flags(parser)
    assert parser.parse_args([]).startup_logs is False and STARTUP_LOGS_ENV not in os.environ
    assert parser.parse_args(["--startup-logs"]).startup_logs is True and os.environ[STARTUP_LOGS_ENV] == "1"

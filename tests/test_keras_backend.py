"""What only the Keras backend has: ``fit``'s in-graph step losses, fit and loop on the same batches, and the
engines — one per process, lazily imported, each with its own loss path, quiet while it starts.

In-process tests run Keras 3 on the TensorFlow engine; the torch and tf_keras engines run in subprocesses
through the experiment module, as a user runs them (Keras on JAX is a row of ``test_behaviour.py``). Numbers
shared by every backend (forward, losses, gradients, training steps, dropout, determinism) are in
``test_parity.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import BackendError, get_backend
from backends.keras_backend.engine import STARTUP_LOGS_ENV
from common.data import prepare
from common.spec import Spec
from common.training import train
from common.variants import VARIANTS
from common.weights import initial_weights

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT / "tests" / "data" / "mnist_subset.npz"
# 500 raw-pixel images: 5 steps an epoch.
SMALL = Spec(epochs=1, train_size=500, test_size=100)


@pytest.fixture(scope="module")
def backend():
    return get_backend("keras", engine="tensorflow")


@pytest.fixture(scope="module")
def outcomes(backend, subset_mnist):
    """One epoch of each fit and loop variant (native flavour) and of clipped ``fit_probs``, on 500 images."""
    data = prepare(SMALL, subset_mnist)
    runs = {}
    for name, flavour in [("fit_probs", "native"), ("loop_probs", "native"), ("loop_logits", "native"),
                          ("fit_logits", "native"), ("fit_probs", "clipped")]:
        spec = SMALL.replace(prob_loss=flavour)
        runs[name, flavour] = train(spec, backend.make_trainer(spec, VARIANTS[name], data, initial_weights(spec)),
                                    data)
    return runs


# --- fit and loop ----------------------------------------------------------------------------------------

def test_fit_step_losses_are_the_losses_keras_reports(outcomes):
    """Each ``fit`` call's recorded per-step losses average to Keras' own ``history['loss']``; the first epoch
    is one fit of its first batch (compile time) and one of the rest."""
    for key in [("fit_probs", "native"), ("fit_logits", "native"), ("fit_probs", "clipped")]:
        trainer = outcomes[key].trainer
        assert [steps for steps, _, _ in trainer.fit_calls] == [1, 4]
        for _, keras_loss, losses in trainer.fit_calls:
            assert losses.mean() == pytest.approx(keras_loss, rel=1e-5)
        assert trainer.compile_seconds > 0


def test_fit_and_loop_see_the_same_batches(outcomes):
    """Same batches, same dropout masks (seeded per layer), same loss: fit and loop agree step by step (to fp32
    rounding of graph versus eager kernels), which they could not if fit reordered the data."""
    for head in ("probs", "logits"):
        fit, loop = outcomes[f"fit_{head}", "native"], outcomes[f"loop_{head}", "native"]
        np.testing.assert_allclose(fit.step_losses, loop.step_losses, rtol=1e-4)


# --- engines ---------------------------------------------------------------------------------------------

def test_another_engine_in_this_process_is_refused(backend):
    with pytest.raises(BackendError, match="own process"):
        get_backend("keras", engine="jax")


def test_gpu_is_used_or_refused_clearly(backend):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        assert get_backend("keras", device="gpu").device_name() != "cpu"
    else:
        with pytest.raises(BackendError, match="no GPU"):
            get_backend("keras", device="gpu")


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_is_lazy_and_a_missing_engine_names_the_extra():
    out = run_python(
        "import sys\n"
        "import backends.keras_backend\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'tf_keras', 'jax') if m in sys.modules))\n"
        "sys.modules['jax'] = None  # as if jax were not installed\n"
        "from backends import BackendError, get_backend\n"
        "try:\n"
        "    get_backend('keras', engine='jax')\n"
        "except BackendError as exc:\n"
        "    print(exc)\n"
    )
    imported, message = out.splitlines()
    assert imported == "[]"
    assert "'jax'" in message and "pip install -e '.[keras,jax]'" in message


def startup_noise(stderr: str) -> list[str]:
    """Lines of the frameworks' C++ logging (absl's preamble, ``I0000 00:00:...`` records) in ``stderr``."""
    return [line for line in stderr.splitlines()
            if line.startswith("WARNING: All log messages before absl") or re.match(r"[IWEF]\d{4} ", line)]


@pytest.mark.parametrize("keep", [False, True])
def test_startup_messages_are_held_back_unless_asked_for(keep):
    """What the C++ runtime writes to descriptor 2 while a framework starts goes nowhere, unless
    ``--startup-logs`` (its environment variable) asks to keep it; what comes after is shown as written."""
    code = ("import os\n"
            "from backends.keras_backend.engine import quiet_startup\n"
            "with quiet_startup():\n"
            "    os.write(2, b'I0000 00:00:1.0 cuda_platform.cc:52] failed call to cuInit\\n')\n"
            "os.write(2, b'ours\\n')\n")
    env = {k: v for k, v in os.environ.items() if k != STARTUP_LOGS_ENV}
    if keep:
        env[STARTUP_LOGS_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == (["I0000 00:00:1.0 cuda_platform.cc:52] failed call to cuInit"] if keep
                                        else []) + ["ours"]


def run_experiment(tmp_path, engine: str, variants: str, prob_loss: str = "native") -> dict:
    """``python -m experiments.keras_mnist`` on the subset in a new process; its records by (variant, flavour)."""
    command = [sys.executable, "-m", "experiments.keras_mnist", "--engine", engine, "--variants", variants,
               "--prob-loss", prob_loss, "--epochs", "1", "--data", str(SUBSET), "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not startup_noise(done.stderr), done.stderr[-3000:]  # the run's output starts with our own lines
    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert all(r["engine"] == engine and r["backend"] == "keras" for r in records)
    return {(r["variant"], r["prob_loss"]): r for r in records}


def test_torch_engine_clips_too(tmp_path):
    records = run_experiment(tmp_path, "torch", "loop_probs")
    stuck = records["loop_probs", "native"]
    assert stuck["env"]["frameworks"]["torch"]
    assert stuck["loss_path"] == "clipped_probs"
    assert stuck["epoch_costs"][0] >= 12 and stuck["test_accuracy"] < 0.3


def test_tf_keras_recovers_logits_in_its_eager_loop(tmp_path):
    """Legacy Keras 2.21 (tf_keras) also attaches ``_keras_logits`` to its softmax output, so the post's
    eager failure only comes back with the clipped formula of the Keras 2 of the post's time."""
    records = run_experiment(tmp_path, "tf_keras", "loop_probs", prob_loss="both")
    native, clipped = records["loop_probs", "native"], records["loop_probs", "clipped"]
    assert native["env"]["frameworks"]["tf_keras"].startswith("2.")
    assert native["loss_path"] == "recovered_logits" and native["test_accuracy"] >= 0.5
    assert clipped["loss_path"] == "clipped_probs"
    assert clipped["epoch_costs"][0] >= 12 and clipped["test_accuracy"] < 0.3

"""What only the Keras backend has: ``fit``'s in-graph step losses, fit and loop on the same batches, and the
engines — one per process, lazily imported, quiet while they start.

In-process tests run Keras 3 on the TensorFlow engine. Each engine's outcomes and loss paths (Keras on TF,
tf_keras, JAX and torch, run as a user runs them) are rows of ``test_behaviour.py``; numbers shared by every
backend (forward, losses, gradients, training steps, dropout, determinism) are in ``test_parity.py``.
"""

from __future__ import annotations

import os
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

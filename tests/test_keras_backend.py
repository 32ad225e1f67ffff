"""The Keras backend: parity with the numpy reference, what Keras does with a probability loss, and the
post's variants on the vendored subset (raw pixels, 1 epoch).

In-process tests run Keras 3 on the TensorFlow engine (one engine per process); the jax, torch and tf_keras
engines run in subprocesses through the experiment module, as a user runs them.

Tolerances (fp32 against the float64 reference, DESIGN.md "Tests"): unit-scaled inputs 1e-5 absolute; raw
pixels 1e-5 of the largest |logit| (~142), since fp32 matmuls over 784 raw inputs differ by ~1e-4 absolute.
Losses 1e-5 relative; parameter gradients 1e-4 of each tensor's largest entry (measured <= 1e-5: fp32 sums over
the batch). "Trains" means test accuracy >= 0.5 after one subset epoch (measured ~0.74; the epoch's mean cost
stays high from the huge first steps on raw pixels); "stuck" means epoch cost >= 12 and accuracy < 0.3.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import BackendError, get_backend
from common import reference as ref
from common.data import prepare
from common.spec import Spec
from common.training import train
from common.variants import VARIANTS
from common.weights import initial_weights, parameter_count

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT / "tests" / "data" / "mnist_subset.npz"
CLIP_CAP = -math.log(1e-7)  # 16.12: the per-sample loss of a clipped, saturated true class


@pytest.fixture(scope="module")
def backend():
    return get_backend("keras", engine="tensorflow")


@pytest.fixture(scope="module")
def unit_data(subset_mnist):
    return prepare(Spec(input_scale="unit"), subset_mnist)


def assert_logits_close(actual, expected, raw: bool):
    tolerance = 1e-5 * np.abs(expected).max() if raw else 1e-5
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance)


# --- model and weights -----------------------------------------------------------------------------------

def test_model_holds_the_canonical_weights(backend, subset_spec):
    weights = initial_weights(subset_spec)
    for head in ("probs", "logits"):
        got = backend.get_weights(backend.build_model(subset_spec, head, weights))
        assert parameter_count(got) == 1_195_018
        assert all(np.array_equal(got[name], weights[name]) for name in weights)


@pytest.mark.parametrize("scale", ["raw", "unit"])
def test_forward_matches_reference(backend, subset_spec, subset_data, unit_data, scale):
    from backends.keras_backend import model as mlp

    data = subset_data if scale == "raw" else unit_data
    weights = initial_weights(subset_spec)
    expected, _ = ref.forward(weights, data.x_test)
    logits_model = backend.build_model(subset_spec, "logits", weights)
    assert_logits_close(backend.forward(logits_model, data.x_test), expected, raw=scale == "raw")
    # The softmax head: its pre-activation is the same logits, its output Keras' softmax of them.
    probs_model = backend.build_model(subset_spec, "probs", weights)
    pre_activation = backend.keras_engine.to_numpy(mlp.logits(backend.keras_engine, probs_model, data.x_test))
    assert_logits_close(pre_activation, expected, raw=scale == "raw")
    np.testing.assert_allclose(backend.forward(probs_model, data.x_test), ref.softmax(pre_activation), atol=1e-6)


# --- losses ----------------------------------------------------------------------------------------------

# Keras 3 on TensorFlow: the native probability loss is the logit loss (recovered logits), so its reference
# is the logit cross-entropy, not the log of the probabilities.
REFERENCE_KIND = {("logits", "native"): "logits", ("probs", "native"): "logits", ("probs", "clipped"): "clipped"}


@pytest.mark.parametrize("scale", ["raw", "unit"])
@pytest.mark.parametrize("head,prob_loss", list(REFERENCE_KIND))
def test_losses_and_gradients_match_reference(backend, subset_spec, subset_data, unit_data, scale, head, prob_loss):
    data = subset_data if scale == "raw" else unit_data
    x, y = data.x_train[:100], data.y_train[:100]
    weights = initial_weights(subset_spec)
    spec = subset_spec.replace(prob_loss=prob_loss)
    loss, grads = backend.loss_and_grads(spec, head, backend.build_model(spec, head, weights), x, y)
    expected_loss, expected_grads = ref.loss_and_grads(weights, x, y, REFERENCE_KIND[head, prob_loss])
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert set(grads) == set(expected_grads)
    for name, expected in expected_grads.items():
        np.testing.assert_allclose(grads[name], expected, rtol=0, atol=1e-4 * np.abs(expected).max(), err_msg=name)


# One ordinary row and one saturated row: softmax([0, 200, 3])[0] is exactly 0 in float32.
LOGITS = np.array([[1.0, 2.0, 3.0], [0.0, 200.0, 3.0]], np.float32)
TARGETS = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32)


@pytest.mark.parametrize("head,prob_loss", [("logits", "native"), ("probs", "native")])
def test_logit_and_native_probability_loss_are_the_logit_cross_entropy(backend, head, prob_loss):
    """On saturated logits the native probability loss stays finite and equals the logit loss: Keras' softmax
    output carries ``_keras_logits`` and ``categorical_crossentropy`` uses them (eagerly, too)."""
    loss, grad = backend.loss_and_grad_logits(head, prob_loss, LOGITS, TARGETS)
    assert loss == pytest.approx(ref.loss_from_logits("logits", LOGITS, TARGETS), rel=1e-6)
    np.testing.assert_allclose(grad, ref.loss_grad_logits("logits", LOGITS, TARGETS), atol=1e-6)


def test_clipped_loss_is_capped_with_zero_gradient_when_saturated(backend):
    loss, grad = backend.loss_and_grad_logits("probs", "clipped", LOGITS, TARGETS)
    assert loss == pytest.approx(ref.loss_from_logits("clipped", LOGITS, TARGETS), rel=1e-6)
    assert loss == pytest.approx((ref.loss_from_logits("logits", LOGITS[:1], TARGETS[:1]) + CLIP_CAP) / 2, rel=1e-6)
    assert np.all(grad[1] == 0.0)  # exactly zero: the clip passes no gradient
    np.testing.assert_allclose(grad, ref.loss_grad_logits("clipped", LOGITS, TARGETS), atol=1e-6)


# --- the variants on the vendored subset -----------------------------------------------------------------

@pytest.fixture(scope="module")
def outcomes(backend, subset_spec, subset_data):
    """Every (variant, flavour) run once, one epoch; the outcome and its trainer."""
    runs = {}
    for name, flavour in [("fit_probs", "native"), ("loop_probs", "native"), ("loop_logits", "native"),
                          ("fit_logits", "native"), ("loop_probs", "clipped"), ("fit_probs", "clipped")]:
        spec = subset_spec.replace(prob_loss=flavour)
        trainer = backend.make_trainer(spec, VARIANTS[name], subset_data, initial_weights(spec))
        runs[name, flavour] = train(spec, trainer, subset_data)
    return runs


@pytest.mark.parametrize("name,flavour,path", [
    ("fit_probs", "native", "recovered_logits"), ("loop_probs", "native", "recovered_logits"),
    ("loop_logits", "native", "logits"), ("fit_logits", "native", "logits"),
])
def test_every_native_variant_trains_on_tensorflow(outcomes, name, flavour, path):
    outcome = outcomes[name, flavour]
    assert outcome.status == "ok"
    assert outcome.loss_path == path
    assert outcome.test_accuracy >= 0.5


@pytest.mark.parametrize("name", ["loop_probs", "fit_probs"])
def test_clipped_probability_loss_is_stuck(outcomes, name):
    """The post's failure, with the Keras-2 eager formula; fit does not rescue a user-written formula either."""
    outcome = outcomes[name, "clipped"]
    assert outcome.loss_path == "clipped_probs"
    assert outcome.epoch_costs[0] >= 12 and outcome.test_accuracy < 0.3
    last = outcome.diagnostics[-1]
    assert last.saturated_share > 0.5 and last.grad_norm == 0.0


def test_fit_step_losses_are_the_losses_keras_reports(outcomes, subset_spec, subset_data):
    """Each ``fit`` call's recorded per-step losses average to Keras' own ``history['loss']``; the first epoch
    is one fit of its first batch (compile time) and one of the rest."""
    for key in [("fit_probs", "native"), ("fit_logits", "native"), ("fit_probs", "clipped")]:
        trainer = outcomes[key].trainer
        assert [steps for steps, _, _ in trainer.fit_calls] == [1, 29]
        for _, keras_loss, losses in trainer.fit_calls:
            assert losses.mean() == pytest.approx(keras_loss, rel=1e-5)
        assert trainer.compile_seconds > 0


def test_fit_and_loop_see_the_same_batches(outcomes):
    """Same batches, same dropout masks (seeded per layer), same loss: fit and loop agree step by step (to fp32
    rounding of graph versus eager kernels), which they could not if fit reordered the data."""
    for head in ("probs", "logits"):
        fit, loop = outcomes[f"fit_{head}", "native"], outcomes[f"loop_{head}", "native"]
        np.testing.assert_allclose(fit.step_losses, loop.step_losses, rtol=1e-4)


@pytest.mark.parametrize("name", ["fit_logits", "loop_logits"])
def test_same_seed_gives_identical_epoch_costs(backend, subset_mnist, name):
    spec = Spec(epochs=2, train_size=500, test_size=100)
    data = prepare(spec, subset_mnist)
    runs = [train(spec, backend.make_trainer(spec, VARIANTS[name], data, initial_weights(spec)), data)
            for _ in range(2)]
    assert runs[0].epoch_costs == runs[1].epoch_costs
    assert np.array_equal(runs[0].step_losses, runs[1].step_losses)


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


def run_experiment(tmp_path, engine: str, variants: str, prob_loss: str = "native") -> dict:
    """``python -m experiments.keras_mnist`` on the subset in a new process; its records by (variant, flavour)."""
    command = [sys.executable, "-m", "experiments.keras_mnist", "--engine", engine, "--variants", variants,
               "--prob-loss", prob_loss, "--epochs", "1", "--data", str(SUBSET), "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert all(r["engine"] == engine and r["backend"] == "keras" for r in records)
    return {(r["variant"], r["prob_loss"]): r for r in records}


def test_jax_engine_clips_so_fit_probs_is_stuck(tmp_path):
    """Keras 3 on JAX: jax arrays take no ``_keras_logits`` and the JAX ``categorical_crossentropy`` clips."""
    records = run_experiment(tmp_path, "jax", "fit_probs,fit_logits")
    stuck, logits = records["fit_probs", "native"], records["fit_logits", None]
    assert stuck["env"]["frameworks"]["jax"] and stuck["env"]["frameworks"]["keras"].startswith("3.")
    assert stuck["loss_path"] == "clipped_probs"
    assert stuck["epoch_costs"][0] >= 12 and stuck["test_accuracy"] < 0.3
    assert logits["loss_path"] == "logits" and logits["test_accuracy"] >= 0.5


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

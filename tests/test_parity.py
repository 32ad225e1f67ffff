"""Parity suite: every backend computes the same model, losses, dropout and training steps as the numpy oracle.

Every check loads the canonical initial weights into each backend (Keras on its TensorFlow engine, PyTorch,
JAX) in this one process and compares with ``common.reference`` (float64) and with each other. Each training
path on every Keras engine — Adam steps against the reference, dropout on, determinism, and the dropout check
on the engines that need a process of their own — is in ``test_training_paths.py``. A failure names the
backend (pair), the tensor or layer and the largest difference. Tolerances (fp32 frameworks against a float64
oracle) are stated where they are used, with the measurement behind them (docs/design.md, "Parity").
"""

from __future__ import annotations

import itertools
import math

import dropout_check
import numpy as np
import pytest
from training_paths_check import TOLERANCE, TRAIN_SPEC, trajectory_mismatches

from backends import BACKEND_NAMES, get_backend
from common import reference
from common.data import epoch_batches, prepare, scale
from common.reference_trainer import ReferenceTrainer
from common.spec import Spec
from common.variants import MODES, VARIANTS
from common.weights import canonical_shapes, initial_weights, parameter_count


@pytest.fixture(scope="module")
def backends():
    return {name: get_backend(name) for name in BACKEND_NAMES}


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def assert_all_close(outputs: dict[str, np.ndarray], tensor: str, tolerance: float) -> None:
    """Every pair of ``outputs`` within ``tolerance`` (max |diff|); the message names each failing pair."""
    failures = []
    for (a, x), (b, y) in itertools.combinations(outputs.items(), 2):
        diff = max_diff(x, y)
        if not diff <= tolerance:
            failures.append(f"{a} vs {b}: {tensor} differ by {diff:.3g} (tolerance {tolerance:.3g})")
    assert not failures, "; ".join(failures)


# 1. Static ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["probs", "logits"])
def test_every_backend_has_the_canonical_parameters(backends, head):
    spec = Spec()
    weights = initial_weights(spec)
    for name, backend in backends.items():
        loaded = backend.get_weights(backend.build_model(spec, head, weights))
        assert {k: tuple(v.shape) for k, v in loaded.items()} == canonical_shapes(spec), name
        assert parameter_count(loaded) == 1_195_018, name
        for key in weights:  # exact round trip: a transposed or shuffled kernel fails here
            assert np.array_equal(loaded[key], weights[key]), f"{name}: {key} differs after loading"


# 2. Forward -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("input_scale", ["unit", "raw"])
def test_forward_matches_reference_and_each_other(backends, subset_mnist, input_scale):
    spec = Spec(input_scale=input_scale)
    weights = initial_weights(spec)
    x = scale(subset_mnist.x_test, input_scale)  # 1,000 test images
    logits = {"numpy": reference.forward(weights, x)[0]}
    probs = {"numpy": reference.softmax(logits["numpy"])}
    for name, backend in backends.items():
        logits[name] = backend.forward(backend.build_model(spec, "logits", weights), x)
        probs[name] = backend.forward(backend.build_model(spec, "probs", weights), x)
    largest = float(np.abs(logits["numpy"]).max())
    # Unit-scaled inputs keep logits below ~0.6 and fp32 frameworks differ by ~4e-7: 1e-5 absolute. Raw
    # pixels push logits to ~142, where fp32 rounding alone moves them by 0.9-1.6e-4 (6e-7..1.1e-6 of the
    # largest logit, docs/design.md "Parity"): 1e-5 of the largest |logit| there.
    tolerance = 1e-5 if input_scale == "unit" else 1e-5 * largest
    assert_all_close(logits, f"logits ({input_scale} inputs)", tolerance)
    # Softmax changes by at most half the largest logit change (its Jacobian's row sums are 2 p (1 - p) <= 1/2),
    # plus fp32 rounding of the probabilities themselves.
    assert_all_close(probs, f"probabilities ({input_scale} inputs)", tolerance / 2 + 1e-6)


# 3. Loss and gradient -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loss_fixtures(subset_mnist):
    """Ordinary logits (unit inputs, |z| < 1) and saturated logits (raw pixels, |z| up to ~140)."""
    x, y = subset_mnist.x_test[:100], np.eye(10, dtype=np.float32)[subset_mnist.y_test[:100]]
    weights = initial_weights(Spec())
    ordinary = reference.forward(weights, scale(x, "unit"))[0].astype(np.float32)
    saturated = reference.forward(weights, scale(x, "raw"))[0].astype(np.float32)
    return {"ordinary": ordinary, "saturated": saturated, "y": y}


@pytest.mark.parametrize("head, prob_loss", [("logits", "native"), ("probs", "native"), ("probs", "clipped")])
def test_losses_on_ordinary_logits_match_the_reference(backends, loss_fixtures, head, prob_loss):
    logits, y = loss_fixtures["ordinary"], loss_fixtures["y"]
    kind = reference.loss_kind(head, prob_loss)
    golden = reference.loss_from_logits(kind, logits, y)
    golden_grad = reference.loss_grad_logits(kind, logits.astype(np.float64), y)
    for name, backend in backends.items():
        loss, grad = backend.loss_and_grad_logits(head, prob_loss, logits, y)
        # fp32 log-softmax of |z| < 1 against float64: relative 1e-6 in the loss, 1e-7 absolute in the gradient
        # (entries are (p - y) / 100 <= 1e-2).
        assert loss == pytest.approx(golden, rel=1e-6), f"{name} {kind}"
        assert max_diff(grad, golden_grad) < 1e-7, f"{name} {kind}: gradient differs by {max_diff(grad, golden_grad):.3g}"


# What each framework does with a probability cross-entropy on saturated raw-pixel logits (true-class
# probability below 1e-7, often 0 in fp32). A framework upgrade that changes this fails here, by name.
SATURATED_NATIVE = {
    "keras": "finite, equal to the logits loss",  # TF engine: the softmax output carries its logits
    "torch": "non-finite",  # log(0) = -inf; nothing rewrites log(softmax)
    "jax": "non-finite",  # XLA does not rewrite log(softmax) either
}


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_saturated_native_probability_loss(backends, loss_fixtures, name):
    logits, y = loss_fixtures["saturated"], loss_fixtures["y"]
    loss, grad = backends[name].loss_and_grad_logits("probs", "native", logits, y)
    expected = SATURATED_NATIVE[name]
    if expected == "non-finite":
        assert not math.isfinite(loss), f"{name}: native probability loss is finite ({loss}), expected {expected}"
    else:
        logits_loss, logits_grad = backends[name].loss_and_grad_logits("logits", "native", logits, y)
        assert math.isfinite(loss) and loss == pytest.approx(logits_loss, rel=1e-6), f"{name}: expected {expected}"
        assert max_diff(grad, logits_grad) < 1e-6, f"{name}: gradient is not the logits gradient"


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_saturated_clipped_loss_has_exactly_zero_gradient_where_clipped(backends, loss_fixtures, name):
    logits, y = loss_fixtures["saturated"], loss_fixtures["y"]
    true_log_prob = (reference.log_softmax(logits.astype(np.float64)) * y).sum(-1)
    clipped_rows = true_log_prob < math.log(1e-7) - 1e-3  # clearly below the clip, whatever the rounding
    assert clipped_rows.mean() > 0.5, "the fixture should saturate most rows, as raw pixels do"
    loss, grad = backends[name].loss_and_grad_logits("probs", "clipped", logits, y)
    golden = reference.loss_from_logits("clipped", logits.astype(np.float64), y)
    assert loss == pytest.approx(golden, rel=1e-5), name  # saturated rows are exactly -ln(1e-7) each
    assert not np.asarray(grad)[clipped_rows].any(), f"{name}: clipped rows have a non-zero gradient"
    assert np.asarray(grad)[~clipped_rows].any(), f"{name}: unclipped rows should still have a gradient"


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_saturated_logits_loss_matches_the_reference(backends, loss_fixtures, name):
    logits, y = loss_fixtures["saturated"], loss_fixtures["y"]
    golden = reference.loss_from_logits("logits", logits.astype(np.float64), y)
    loss, grad = backends[name].loss_and_grad_logits("logits", "native", logits, y)
    golden_grad = reference.loss_grad_logits("logits", logits.astype(np.float64), y)
    assert loss == pytest.approx(golden, rel=1e-6), name
    assert max_diff(grad, golden_grad) < 1e-7, name


# The (head, probability-loss flavour) that computes each reference loss kind.
HEAD_AND_FLAVOUR = {"logits": ("logits", "native"), "native": ("probs", "native"), "clipped": ("probs", "clipped")}


@pytest.mark.parametrize("kind", reference.LOSS_KINDS)
def test_parameter_gradients_match_the_reference(backends, subset_mnist, kind):
    """Unit-scaled inputs, where every kind is finite (Keras' recovered-logit native loss equals the log of the
    probabilities there, to fp32 rounding)."""
    head, flavour = HEAD_AND_FLAVOUR[kind]
    spec = Spec(input_scale="unit", prob_loss=flavour)
    weights = initial_weights(spec)
    x, y = scale(subset_mnist.x_train[:100], "unit"), np.eye(10, dtype=np.float32)[subset_mnist.y_train[:100]]
    golden_loss, golden = reference.loss_and_grads(weights, x, y, kind)
    for name, backend in backends.items():
        loss, grads = backend.loss_and_grads(spec, head, backend.build_model(spec, head, weights), x, y)
        assert loss == pytest.approx(golden_loss, rel=1e-6), f"{name} {kind}"
        assert set(grads) == set(golden), f"{name} {kind}: gradient names"
        for key in golden:
            scale_ = float(np.abs(golden[key]).max()) or 1.0
            # fp32 backprop through 5 layers against float64: 1e-5 of each tensor's largest entry (measured
            # <= 4.4e-7 of it; a transposed or misnamed tensor is off by O(1)).
            assert max_diff(grads[key], golden[key]) <= 1e-5 * scale_, f"{name} {kind}: d{key} differs"


@pytest.mark.parametrize("kind", reference.LOSS_KINDS)
def test_probe_and_evaluate_match_the_reference_and_leave_the_weights(backends, subset_mnist, kind):
    """What the driver reads from a trainer: eval-mode logits and gradient norm (the diagnostics), the test loss
    and predicted classes; neither may move the weights."""
    head, flavour = HEAD_AND_FLAVOUR[kind]
    spec = Spec(input_scale="unit", prob_loss=flavour, train_size=100, test_size=100)
    data, weights = prepare(spec, subset_mnist), initial_weights(spec)
    x, y = data.x_test, data.y_test
    golden_logits = reference.forward(weights, x)[0]
    _, golden_grads = reference.loss_and_grads(weights, x, y, kind)
    golden_norm = math.sqrt(sum(float((g ** 2).sum()) for g in golden_grads.values()))
    for name, backend in backends.items():
        trainer = backend.make_trainer(spec, VARIANTS[f"loop_{head}"], data, weights)
        logits, grad_norm = trainer.probe(x, y)
        loss, predicted = trainer.evaluate(x, y)
        # Unit-scaled logits: 1e-5 absolute as in the forward check; the norm and loss are sums of fp32 terms
        # (measured ~1e-7 relative).
        assert max_diff(logits, golden_logits) <= 1e-5, f"{name} {kind}: probe logits"
        assert grad_norm == pytest.approx(golden_norm, rel=1e-5), f"{name} {kind}: probe gradient norm"
        assert loss == pytest.approx(reference.loss_from_logits(kind, golden_logits, y), rel=1e-5), f"{name} {kind}"
        assert np.array_equal(predicted, golden_logits.argmax(-1)), f"{name} {kind}: predicted classes"
        after = trainer.weights()
        assert all(np.array_equal(after[k], weights[k]) for k in weights), f"{name} {kind}: weights moved"


# Which computation each backend's probability loss runs (common.diagnostics.LOSS_PATHS), as its trainers
# report it: Keras on TensorFlow finds the logits behind its softmax output; PyTorch and JAX take the log as
# written. The logits head is "logits" everywhere.
PROBS_LOSS_PATH = {
    "keras": {"native": "recovered_logits", "clipped": "clipped_probs"},
    "torch": {"native": "log_probs", "clipped": "clipped_probs"},
    "jax": {"native": "log_probs", "clipped": "clipped_probs"},
}


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_every_trainer_reports_the_loss_path_it_runs(backends, subset_mnist, name):
    spec = Spec(train_size=100, test_size=100)
    data, weights = prepare(spec, subset_mnist), initial_weights(spec)
    for variant, flavour in itertools.product(VARIANTS.values(), PROBS_LOSS_PATH[name]):
        trainer = backends[name].make_trainer(spec.replace(prob_loss=flavour), variant, data, weights)
        expected = PROBS_LOSS_PATH[name][flavour] if variant.uses_prob_loss else "logits"
        assert trainer.loss_path == expected, f"{name} {variant.name} ({flavour})"


# 4. Training parity ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(backends, subset_mnist):
    """20 SGD steps of every backend and mode, and of the reference, per head: losses and weights (TRAIN_SPEC:
    dropout off, the same batches, unit inputs; training_paths_check.py says why). SGD sees each head's
    gradients, step after step; Adam, which sees nothing but gradients, is held to the reference on the logits
    head by every training path of every engine in test_training_paths.py."""
    data = prepare(TRAIN_SPEC, subset_mnist)
    batches = epoch_batches(TRAIN_SPEC, 0, len(data.x_train))
    spec = TRAIN_SPEC.replace(optimizer="sgd")
    weights = initial_weights(spec)
    results = {}
    for head in ("logits", "probs"):
        ref = ReferenceTrainer(spec, head, data.x_train, data.y_train, weights)
        results[head] = {"numpy": (ref.run_epoch(batches), ref.weights())}
        for (name, backend), mode in itertools.product(backends.items(), MODES):
            trainer = backend.make_trainer(spec, VARIANTS[f"{mode}_{head}"], data, weights)
            results[head][f"{name}/{mode}"] = (np.asarray(trainer.run_epoch(batches)), trainer.weights())
    return results


@pytest.mark.parametrize("head", ["logits", "probs"])
def test_sgd_training_matches_across_backends_and_modes(trained, head):
    runs = trained[head]
    assert all(len(losses) == 20 for losses, _ in runs.values())
    failures = [slip for a, b in itertools.combinations(runs, 2)
                for slip in trajectory_mismatches(a, b, runs, TOLERANCE["sgd"])]
    assert not failures, "; ".join(failures)


# 5. Dropout -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_dropout_keeps_scales_and_redraws_its_masks(backends, name):
    """Inverted dropout at the spec's rate, fresh masks per layer and per step, none in eval mode."""
    found = dropout_check.failures(dropout_check.measure(backends[name]))
    assert not found, f"{name}: " + "; ".join(found)

"""The PyTorch backend against the float64 numpy reference, and its behaviour on the vendored MNIST subset.

Tolerances (fp32 against float64): unit-scaled logits 1e-5 absolute; raw-pixel logits 1e-5 of the largest
|logit| (DESIGN.md, Tests); probabilities and gradients w.r.t. logits (entries <= 1) 1e-6 absolute; losses
1e-5 relative; parameter gradients 1e-5 of the tensor's largest |entry| (fp32 sums of up to 784 products
lose ~1e-6 relative; a transposed or misnamed tensor is off by O(1)); an optimiser step 3e-7 relative +
1e-9 absolute, a few fp32 ulps of the new weight (the step itself is ~1e-3 = lr). Training runs compare
step losses exactly: the same seed on CPU must repeat bit for bit.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from backends.torch_backend import OMP_WAIT_POLICY, TorchBackend, make_optimizer  # before torch: see there
import torch  # noqa: E402, I001
from torch._dynamo.utils import counters  # noqa: E402

from backends import get_backend
from backends.base import BackendError
from common import reference
from common.data import epoch_batches, prepare
from common.diagnostics import LOSS_PATHS
from common.results import make_record
from common.spec import Spec
from common.training import train
from common.variants import VARIANTS
from common.weights import canonical_shapes, initial_weights, layer_names, parameter_count

@pytest.fixture(scope="module")
def backend() -> TorchBackend:
    return get_backend("torch")


@pytest.fixture(scope="module")
def weights(subset_spec: Spec):
    return initial_weights(subset_spec)


@pytest.fixture(scope="module")
def batch(subset_data):
    """32 unit-scaled training rows (ordinary, unsaturated logits) and their one-hot labels."""
    return subset_data.x_train[:32] / np.float32(255.0), subset_data.y_train[:32]


def assert_grads_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        np.testing.assert_allclose(got[name], ref, rtol=0, atol=1e-5 * np.abs(ref).max(), err_msg=name)


# --- model ------------------------------------------------------------------------------------------------
def test_weights_round_trip_in_canonical_layout(backend, subset_spec, weights):
    model = backend.build_model(subset_spec, "logits", weights)
    got = backend.get_weights(model)
    assert {k: v.shape for k, v in got.items()} == canonical_shapes(subset_spec)
    assert parameter_count(got) == 1_195_018
    for name in weights:
        np.testing.assert_array_equal(got[name], weights[name], err_msg=name)


@pytest.mark.parametrize("scale", ["unit", "raw"])
def test_forward_logits_match_reference(backend, subset_spec, subset_data, weights, scale):
    x = subset_data.x_test[:200] / np.float32(255.0 if scale == "unit" else 1.0)
    want, _ = reference.forward(weights, x)
    got = backend.forward(backend.build_model(subset_spec, "logits", weights), x)
    atol = 1e-5 if scale == "unit" else 1e-5 * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_forward_probs_is_softmax_of_reference(backend, subset_spec, batch, weights):
    x, _ = batch
    got = backend.forward(backend.build_model(subset_spec, "probs", weights), x)
    np.testing.assert_allclose(got, reference.softmax(reference.forward(weights, x)[0]), rtol=0, atol=1e-6)


# --- losses -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", reference.LOSS_KINDS)
def test_loss_and_grad_logits_match_reference(backend, kind):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(8, 10)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=8)]
    head = "logits" if kind == "logits" else "probs"
    loss, grad = backend.loss_and_grad_logits(head, "native" if kind == "logits" else kind, logits, y)
    np.testing.assert_allclose(loss, reference.loss_from_logits(kind, logits, y), rtol=1e-5)
    np.testing.assert_allclose(grad, reference.loss_grad_logits(kind, logits, y), rtol=0, atol=1e-6)


def saturated_batch():
    """Logits 200 on a wrong class: fp32 softmax gives the true class exactly 0 (exp(-200) underflows)."""
    logits = np.zeros((4, 10), np.float32)
    logits[:, 0] = 200.0
    return logits, np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]


def test_saturated_native_probs_are_non_finite(backend):
    loss, grad = backend.loss_and_grad_logits("probs", "native", *saturated_batch())
    assert math.isinf(loss)  # -log(0)
    assert not np.isfinite(grad).all()  # 0 * inf in the softmax backward


def test_saturated_clipped_probs_have_exactly_zero_gradient(backend):
    logits, y = saturated_batch()
    loss, grad = backend.loss_and_grad_logits("probs", "clipped", logits, y)
    np.testing.assert_allclose(loss, -math.log(1e-7), rtol=1e-6)  # every row at the cap: 16.118
    np.testing.assert_allclose(loss, reference.loss_from_logits("clipped", logits, y), rtol=1e-6)
    assert np.all(grad == 0.0)


def test_saturated_logits_loss_is_finite_and_exact(backend):
    logits, y = saturated_batch()
    loss, grad = backend.loss_and_grad_logits("logits", "native", logits, y)
    np.testing.assert_allclose(loss, 200.0, rtol=1e-6)
    np.testing.assert_allclose(grad, reference.loss_grad_logits("logits", logits, y), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", reference.LOSS_KINDS)
def test_parameter_grads_match_reference(backend, subset_spec, weights, batch, kind):
    x, y = batch
    head = "logits" if kind == "logits" else "probs"
    spec = subset_spec.replace(prob_loss="native" if kind == "logits" else kind)
    model = backend.build_model(spec, head, weights)
    loss, grads = backend.loss_and_grads(spec, head, model, x, y)
    want_loss, want_grads = reference.loss_and_grads(weights, x, y, kind)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    assert_grads_close(grads, want_grads)
    assert all(p.grad is None for p in model.parameters())  # computed aside, never accumulated


# --- optimisers -------------------------------------------------------------------------------------------
def step_gradients(weights, seed: int):
    """Gradients of mixed magnitude; the 1e-7 ones make the epsilon placement visible (eps = 1e-7)."""
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(size=w.shape) * 10.0 ** rng.integers(-7, 0, size=w.shape)).astype(np.float32)
            for k, w in weights.items()}


def apply_steps(backend, spec, weights, gradients):
    """Set each canonical gradient on its parameter (kernels transposed to (out, in)) and step the optimiser."""
    model = backend.build_model(spec, "logits", weights)
    params = list(model.parameters())  # dense_0.weight, dense_0.bias, dense_1.weight, ...
    names = [f"{layer}.{kind}" for layer in layer_names(spec) for kind in ("kernel", "bias")]
    optimizer = make_optimizer(spec, params)
    for grads in gradients:
        for name, p in zip(names, params):
            p.grad = torch.from_numpy(grads[name].T.copy())
        optimizer.step()
    return backend.get_weights(model)


def test_adam_is_fused_on_cpu(subset_spec):
    params = [torch.zeros(3, requires_grad=True)]
    assert make_optimizer(subset_spec, params).defaults["fused"] is True  # torch 2.13 has a CPU kernel


def test_two_adam_steps_match_reference_with_corrected_epsilon(backend, subset_spec, weights):
    gradients = [step_gradients(weights, 1), step_gradients(weights, 2)]
    got = apply_steps(backend, subset_spec, weights, gradients)
    hp = dict(learning_rate=subset_spec.learning_rate, beta_1=subset_spec.beta_1, beta_2=subset_spec.beta_2,
              epsilon=subset_spec.epsilon)
    want, hat = weights, weights
    state, hat_state = reference.AdamState.zeros_like(weights), reference.AdamState.zeros_like(weights)
    for grads in gradients:
        want, state = reference.adam_step(want, grads, state, **hp, epsilon_form="corrected")
        hat, hat_state = reference.adam_step(hat, grads, hat_state, **hp, epsilon_form="hat")
    for name in weights:
        np.testing.assert_allclose(got[name], want[name], rtol=3e-7, atol=1e-9, err_msg=name)
    # Keras' epsilon-hat form is a different optimiser here: its effective epsilon, eps / sqrt(1 - beta_2^t),
    # is 31.6x larger at step 1, so tiny gradients move less far under it.
    assert max(np.abs(got[k] - hat[k]).max() for k in weights) > 1e-4


def test_sgd_step_matches_reference(backend, subset_spec, weights):
    spec = subset_spec.replace(optimizer="sgd")
    grads = step_gradients(weights, 3)
    got = apply_steps(backend, spec, weights, [grads])
    want = reference.sgd_step(weights, grads, spec.learning_rate)
    for name in weights:
        np.testing.assert_allclose(got[name], want[name], rtol=3e-7, atol=1e-9, err_msg=name)


# --- trainer ----------------------------------------------------------------------------------------------
def unit_rows(data, n: int = 64):
    return data.x_test[:n] / np.float32(255.0), data.y_test[:n]


@pytest.mark.parametrize("kind", reference.LOSS_KINDS)
def test_probe_and_evaluate_match_reference_and_leave_training_state(backend, subset_spec, subset_data, weights,
                                                                      kind):
    variant = VARIANTS["loop_logits" if kind == "logits" else "loop_probs"]
    spec = subset_spec.replace(prob_loss="native" if kind == "logits" else kind)
    trainer = backend.make_trainer(spec, variant, subset_data, weights)
    x, y = unit_rows(subset_data)
    want_logits, _ = reference.forward(weights, x)
    _, want_grads = reference.loss_and_grads(weights, x, y, kind)

    logits, grad_norm = trainer.probe(x, y)
    np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(grad_norm, math.sqrt(sum((g**2).sum() for g in want_grads.values())), rtol=1e-5)
    loss, accuracy = trainer.evaluate(x, y)
    np.testing.assert_allclose(loss, reference.loss_from_logits(kind, want_logits, y), rtol=1e-5)
    assert accuracy == np.mean(want_logits.argmax(-1) == y.argmax(-1))
    assert trainer.loss_path in LOSS_PATHS
    # Neither touched the training state: no accumulated gradients, weights as loaded.
    assert all(p.grad is None for p in trainer.model.parameters())
    for name, w in trainer.weights().items():
        np.testing.assert_array_equal(w, weights[name], err_msg=name)


@pytest.fixture(scope="module")
def outcomes(backend, subset_spec, subset_data, weights):
    """``run(variant, prob_loss)``: one epoch on the subset via the shared driver, trained once per module."""
    cache = {}

    def run(name: str, prob_loss: str = "native", fresh: bool = False):
        key = (name, prob_loss)
        if fresh or key not in cache:
            spec = subset_spec.replace(prob_loss=prob_loss)
            cache[key] = train(spec, backend.make_trainer(spec, VARIANTS[name], subset_data, weights), subset_data)
        return cache[key]

    return run


@pytest.mark.parametrize("name", ["loop_probs", "fit_probs"])
def test_native_probs_diverge_and_the_run_records_it(outcomes, subset_spec, subset_data, name):
    outcome = outcomes(name, "native")  # torch.compile does not rewrite log(softmax) into log_softmax
    assert outcome.status == "diverged" and outcome.loss_path == "log_probs"
    bad = np.flatnonzero(~np.isfinite(outcome.step_losses))
    assert outcome.first_nonfinite_step == bad[0]
    record = make_record(subset_spec, VARIANTS[name], "torch", None, "cpu", subset_data.data_sha256, {},
                         outcome=outcome)
    assert record["status"] == "diverged" and record["first_nonfinite_step"] == bad[0]
    assert record["epoch_costs"] == [None]


@pytest.mark.parametrize("name", ["loop_probs", "fit_probs"])
def test_clipped_probs_are_stuck(outcomes, name):
    outcome = outcomes(name, "clipped")
    assert outcome.status == "ok" and outcome.loss_path == "clipped_probs"
    assert outcome.epoch_costs[0] >= 12.0  # most rows at the clip's cap of 16.12, with zero gradient
    assert outcome.test_accuracy < 0.3
    assert outcome.diagnostics[-1].saturated_share > 0.5


@pytest.mark.parametrize("name", ["loop_logits", "fit_logits"])
def test_logits_train(outcomes, name):
    outcome = outcomes(name)
    assert outcome.status == "ok" and outcome.loss_path == "logits"
    assert np.isfinite(outcome.step_losses).all()
    # The epoch mean is dominated by the huge first steps (raw pixels); accuracy shows the learning.
    assert outcome.test_accuracy >= 0.5


def test_fit_compiles_one_graph_and_times_it_apart(backend, subset_spec, subset_data, weights):
    torch._dynamo.reset()  # compile afresh, whatever this process compiled before
    graphs = counters["stats"]["unique_graphs"]  # dynamo's count of the graphs it compiled
    trainer = backend.make_trainer(subset_spec, VARIANTS["fit_logits"], subset_data, weights)
    outcome = train(subset_spec, trainer, subset_data)
    assert counters["stats"]["unique_graphs"] - graphs == 1  # forward + loss as one graph, no breaks
    # Even from inductor's warm on-disk cache, compiling costs more than two training steps.
    assert 2.0 / outcome.steps_per_second < outcome.compile_seconds < outcome.wall_seconds


@pytest.mark.parametrize("name", ["loop_logits", "fit_logits"])
def test_same_seed_gives_identical_losses(outcomes, name):
    first = outcomes(name)
    again = outcomes(name, fresh=True)
    np.testing.assert_array_equal(again.step_losses, first.step_losses)


def test_divergence_stops_after_its_epoch(backend, subset_mnist, weights):
    spec = Spec(epochs=3, train_size=500)
    data = prepare(spec, subset_mnist)
    outcome = train(spec, backend.make_trainer(spec, VARIANTS["loop_probs"], data, weights), data)
    assert outcome.status == "diverged" and len(outcome.epoch_costs) == 1 and len(outcome.step_losses) == 5


def test_a_fit_run_in_between_changes_nothing(backend, subset_mnist, weights):
    """Another fit trainer (a fresh compile, its own dropout draws) between two epochs of the first."""
    spec = Spec(epochs=2, train_size=300)
    data = prepare(spec, subset_mnist)
    batches = [epoch_batches(spec, epoch, 300) for epoch in range(2)]
    alone = backend.make_trainer(spec, VARIANTS["fit_logits"], data, weights)
    want = [alone.run_epoch(b) for b in batches]
    first = backend.make_trainer(spec, VARIANTS["fit_logits"], data, weights)
    got = [first.run_epoch(batches[0])]
    backend.make_trainer(spec, VARIANTS["fit_logits"], data, weights).run_epoch(batches[0])
    got.append(first.run_epoch(batches[1]))
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))


# --- devices and threads ----------------------------------------------------------------------------------
def test_gpu_device_is_cuda_or_a_clear_error():
    if torch.cuda.is_available():
        backend = TorchBackend(device="gpu")
        assert backend.torch_device.type == "cuda" and backend.device_name()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    else:
        with pytest.raises(BackendError, match="--device cpu"):
            TorchBackend(device="gpu")


def test_threads_are_set_and_reported(backend):
    threads = backend.threads()
    assert threads["intra_op"] == os.cpu_count()
    # A wait policy reached OpenMP: torch was not imported before the backend (libgomp's default spins).
    assert OMP_WAIT_POLICY is not None and threads["omp_wait_policy"] == OMP_WAIT_POLICY

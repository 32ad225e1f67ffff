"""What only the PyTorch backend has: its optimiser steps, ``torch.compile``'s one graph, the trainer's own RNG
stream, side-effect-free gradients, GPU and thread settings.

Numbers shared by every backend (forward, losses, gradients, training steps, dropout, determinism) are in
``test_parity.py``; outcomes on real data in ``test_behaviour.py``. An optimiser step is held to 3e-7 relative
+ 1e-9 absolute: a few fp32 ulps of the new weight (the step itself is ~1e-3 = lr).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from backends.torch_backend import OMP_WAIT_POLICY, TorchBackend, make_optimizer  # before torch: see there
import torch  # noqa: E402, I001
from torch._dynamo.utils import counters  # noqa: E402

from backends import get_backend
from backends.base import BackendError
from common import reference
from common.data import epoch_batches, prepare
from common.spec import Spec
from common.variants import VARIANTS
from common.weights import initial_weights, layer_names


@pytest.fixture(scope="module")
def backend() -> TorchBackend:
    return get_backend("torch")


@pytest.fixture(scope="module")
def weights(subset_spec: Spec):
    return initial_weights(subset_spec)


# --- optimiser --------------------------------------------------------------------------------------------
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


# --- gradients computed aside -----------------------------------------------------------------------------
def test_evaluation_leaves_no_gradient_behind(backend, subset_spec, subset_data, weights):
    """``autograd.grad`` computes gradients aside: a probe, an evaluation or ``loss_and_grads`` never leaves a
    ``.grad`` that the next training step would add to."""
    x, y = subset_data.x_test[:64] / np.float32(255.0), subset_data.y_test[:64]
    trainer = backend.make_trainer(subset_spec, VARIANTS["loop_logits"], subset_data, weights)
    trainer.probe(x, y)
    trainer.evaluate(x, y)
    assert all(p.grad is None for p in trainer.model.parameters())
    model = backend.build_model(subset_spec, "logits", weights)
    backend.loss_and_grads(subset_spec, "logits", model, x, y)
    assert all(p.grad is None for p in model.parameters())


# --- torch.compile ----------------------------------------------------------------------------------------
def test_fit_compiles_one_graph_once_and_times_it_apart(backend, subset_mnist, weights):
    spec = Spec(epochs=2, train_size=300, test_size=100)  # 3 steps per epoch
    data = prepare(spec, subset_mnist)
    torch._dynamo.reset()  # compile afresh, whatever this process compiled before
    graphs = counters["stats"]["unique_graphs"]  # dynamo's count of the graphs it compiled
    trainer = backend.make_trainer(spec, VARIANTS["fit_logits"], data, weights)
    trainer.run_epoch(epoch_batches(spec, 0, len(data.x_train)))
    compile_seconds = trainer.compile_seconds
    start = time.perf_counter()
    trainer.run_epoch(epoch_batches(spec, 1, len(data.x_train)))
    compiled_epoch = time.perf_counter() - start
    assert counters["stats"]["unique_graphs"] - graphs == 1  # forward + loss as one graph, reused in epoch 2
    assert trainer.compile_seconds == compile_seconds  # measured once, in the first epoch
    # Even from inductor's warm on-disk cache, compiling costs more than a whole compiled epoch of 3 steps.
    assert compile_seconds > compiled_epoch


# --- the trainer's own RNG stream -------------------------------------------------------------------------
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
    # All cores, unless OMP_NUM_THREADS says otherwise (as it does under this suite's conftest, and for a sweep's
    # backend processes).
    expected = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0] or os.cpu_count())
    assert threads["intra_op"] == expected and threads["inter_op"] == 1
    # A wait policy reached OpenMP: torch was not imported before the backend (libgomp's default spins).
    assert OMP_WAIT_POLICY is not None and threads["omp_wait_policy"] == OMP_WAIT_POLICY

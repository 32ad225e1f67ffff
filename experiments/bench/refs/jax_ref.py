"""JAX: the floor under ``jax.jit``, and the loop a JAX + optax tutorial writes.

The tutorial loop: a ``jax.jit`` train step over (params, opt_state, batch, key); the batch is a numpy slice of
the training set handed to the step each time; a new dropout key is split off per step; and the loss is read
with ``float(loss)`` every step to add it up, which waits for the step. Same model, loss and optax Adam as the
backend (``backends.jax_backend``).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from backends.jax_backend import cross_entropy, head_output, logits, make_optimizer, to_params
from common.data import Dataset
from experiments.bench.refs import batch_slices
from common.reference import loss_kind
from common.spec import Spec
from common.weights import initial_weights

DESCRIPTION = "jitted step on numpy batch slices, a new dropout key per step, per-step float(loss)"


def product(layout: str, a: jax.Array, b: jax.Array) -> jax.Array:
    a = a.T if layout == "tn" else a
    b = b.T if layout == "nt" else b
    # Full fp32, as the backend's dense layers: on GPU the default precision would be TF32-class.
    return jax.numpy.dot(a, b, precision=jax.lax.Precision.HIGHEST)


def floor(gemms: list, device: str):
    """``run(steps)``: the step's GEMMs, one jitted call per step, on random operands already on the device."""
    rng = np.random.default_rng(0)
    operands = jax.device_put([(rng.standard_normal(g.a_shape, np.float32), rng.standard_normal(g.b_shape, np.float32))
                               for g in gemms], jax.devices(device)[0])
    layouts = [g.layout for g in gemms]
    # Operands are arguments, not constants, so XLA cannot fold the products at compile time.
    products = jax.jit(lambda operands: [product(layout, a, b) for layout, (a, b) in zip(layouts, operands)])

    def run(steps: int) -> None:
        for _ in range(steps):
            out = products(operands)
        jax.block_until_ready(out)

    return run


class TutorialLoop:
    """``loop(steps)`` trains ``steps`` batches as a tutorial's epoch loop does; returns the mean loss."""

    def __init__(self, backend: Any, spec: Spec, head: str, data: Dataset):
        kind = loss_kind(head, spec.prob_loss)
        tx = make_optimizer(spec)

        def train_step(params, opt_state, x, y, key):
            def loss_fn(params):
                z = logits(params, x, spec.drop_rate, key)
                return cross_entropy(kind, head_output(head, z), y, spec.clip_epsilon)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.train_step = jax.jit(train_step)
        self.params = jax.device_put(to_params(initial_weights(spec)), jax.devices(backend.device)[0])
        self.opt_state = tx.init(self.params)
        self.key = jax.random.key(spec.seed)
        self.x, self.y = data.x_train, data.y_train
        self.rows = batch_slices(len(data.x_train), spec.batch_size)

    def __call__(self, steps: int) -> float:
        total = 0.0
        for _ in range(steps):
            rows = next(self.rows)
            self.key, dropout_key = jax.random.split(self.key)
            self.params, self.opt_state, loss = self.train_step(self.params, self.opt_state, self.x[rows],
                                                                self.y[rows], dropout_key)
            total += float(loss)
        return total / steps


reference = TutorialLoop

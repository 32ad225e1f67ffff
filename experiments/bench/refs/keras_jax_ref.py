"""Keras 3 on JAX: the loop of Keras' guide "Writing a training loop from scratch in JAX".

A ``jax.jit`` train step over ``model.stateless_call`` and ``optimizer.stateless_apply``, fed numpy batch slices,
with ``float(loss)`` read every step, which waits for it. Same model, loss and Keras Adam as the backend. The
floor is JAX's (``jax_ref.floor``): JAX runs the math.
"""

from __future__ import annotations

from typing import Any

import jax

from backends.keras_backend.model import make_loss
from backends.keras_backend.trainers import make_optimizer
from common.data import Dataset
from experiments.bench.refs import batch_slices
from common.spec import Spec
from common.weights import initial_weights

DESCRIPTION = "Keras' JAX guide: jitted stateless_call/stateless_apply step, numpy batch slices, per-step float(loss)"


class GuideLoop:
    """``loop(steps)`` trains ``steps`` batches as the guide's epoch loop does; returns the mean loss."""

    def __init__(self, backend: Any, spec: Spec, head: str, data: Dataset):
        model = backend.build_model(spec, head, initial_weights(spec))
        loss_fn = make_loss(backend.keras_engine, head, spec.prob_loss, spec.clip_epsilon)
        optimizer = make_optimizer(backend.keras_engine, spec)
        optimizer.build(model.trainable_variables)

        def compute_loss_and_updates(trainable, non_trainable, x, y):
            y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, y_pred), non_trainable

        grad_fn = jax.value_and_grad(compute_loss_and_updates, has_aux=True)

        def train_step(state, x, y):
            trainable, non_trainable, optimizer_variables = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
            trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
            return loss, (trainable, non_trainable, optimizer_variables)

        self.train_step = jax.jit(train_step)
        self.state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                      [v.value for v in optimizer.variables])
        self.x, self.y = data.x_train, data.y_train
        self.rows = batch_slices(len(data.x_train), spec.batch_size)

    def __call__(self, steps: int) -> float:
        total = 0.0
        for _ in range(steps):
            rows = next(self.rows)
            loss, self.state = self.train_step(self.state, self.x[rows], self.y[rows])
            total += float(loss)
        return total / steps


reference = GuideLoop

"""TensorFlow: the floor under ``tf.function``, and the post's Keras loop as written.

The post's loop: ``tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(100)``,
then per batch an eager ``tf.GradientTape`` forward with ``training=True``, ``cost = mean(criterion(...))``,
``tape.gradient``, ``optimizer.apply_gradients``, and ``avg_cost += cost / total_batch`` (two more eager ops);
``avg_cost`` is read when the epoch ends (the post prints it). Same model, loss and Keras Adam as the backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from backends.keras_backend.model import make_loss
from backends.keras_backend.trainers import make_optimizer
from common.data import Dataset
from common.spec import Spec
from common.weights import initial_weights

DESCRIPTION = ("the post's code: tf.data from_tensor_slices(...).batch(100), eager GradientTape step, "
               "avg_cost += cost / total_batch, read at the epoch's end")


def floor(gemms: list, device: str):
    """``run(steps)``: the step's GEMMs, one ``tf.function`` call per step, on random operands on the device."""
    rng = np.random.default_rng(0)
    with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
        operands = [(tf.constant(rng.standard_normal(g.a_shape, np.float32)),
                     tf.constant(rng.standard_normal(g.b_shape, np.float32))) for g in gemms]
    layouts = [g.layout for g in gemms]

    # Operands are arguments, not captured constants, so grappler cannot fold the products away.
    @tf.function
    def products(operands):
        return [tf.linalg.matmul(a, b, transpose_a=layout == "tn", transpose_b=layout == "nt")
                for layout, (a, b) in zip(layouts, operands)]

    def run(steps: int) -> None:
        for _ in range(steps):
            out = products(operands)
        out[-1].numpy()  # waits for the device (a no-op wait on the CPU, where the call is synchronous)

    return run


class PostLoop:
    """``loop(steps)`` runs the post's epoch loop over the first ``steps`` batches; returns ``avg_cost``."""

    def __init__(self, backend: Any, spec: Spec, head: str, data: Dataset):
        engine = backend.keras_engine
        self.model = backend.build_model(spec, head, initial_weights(spec))
        self.criterion = make_loss(engine, head, spec.prob_loss, spec.clip_epsilon)
        self.optimizer = make_optimizer(engine, spec)
        self.data_train = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).batch(spec.batch_size)
        self.total_batch = len(data.x_train) // spec.batch_size

    def __call__(self, steps: int) -> float:
        model, optimizer = self.model, self.optimizer
        avg_cost = 0
        for i, (batch_xs, batch_ys) in enumerate(self.data_train.take(steps)):
            with tf.GradientTape() as tape:
                hypothesis = model(batch_xs, training=True)
                cost = tf.reduce_mean(self.criterion(batch_ys, hypothesis))
            grads = tape.gradient(cost, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            avg_cost += cost / self.total_batch
        return float(avg_cost)


reference = PostLoop

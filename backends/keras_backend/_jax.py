"""Keras 3 on JAX (``KERAS_BACKEND=jax``).

JAX has no tape over stateful variables: a gradient needs a pure function of the parameters, which Keras
provides as ``model.stateless_call``. The hand-written loop is therefore the one of Keras' guide "Writing a
training loop from scratch in JAX": ``jax.value_and_grad`` over ``stateless_call``, ``optimizer.stateless_apply``,
the step under ``jax.jit``, driven by a Python loop over batches (the same shape as this project's JAX backend:
a Python loop over a jitted step). Run unjitted, the same code would be traced anew for every step.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import keras

from backends.keras_backend.engine import Engine, Stepper, no_gpu
from backends.kernel_info import jax_kernels


class JaxEngine(Engine):
    def __init__(self, name: str, device: str):
        self.name, self.device, self.keras, self.ops = name, device, keras, keras.ops

    def versions(self) -> dict[str, str]:
        import jaxlib

        return {"keras": keras.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def device_name(self) -> str:
        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else device.device_kind

    def kernel_info(self) -> dict[str, Any]:
        return jax_kernels(jax.devices()[0])

    def value_and_grads(self, model, loss_fn, x, y, training: bool):
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss_of(trainable):
            output, _ = model.stateless_call(trainable, non_trainable, x, training=training)
            return loss_fn(y, output), output

        (loss, output), grads = jax.value_and_grad(loss_of, has_aux=True)([v.value for v in model.trainable_variables])
        return loss, grads, output

    def value_and_grad_input(self, fn, z):
        return jax.value_and_grad(fn)(jax.numpy.asarray(z))

    def softmax_op(self, z):
        return jax.nn.softmax(z)

    def stepper(self, model, optimizer, loss_fn, compiled: bool, counts) -> Stepper:
        return JitStepper(model, optimizer, loss_fn, counts, compiled)


class JitStepper(Stepper):
    """Keras' JAX training-loop recipe. The state (parameters, dropout seeds, Adam moments) lives in JAX
    arrays between steps and is written back to the Keras variables by ``sync``. ``compiled=False`` runs the
    same pure step without ``jax.jit``, op by op."""

    def __init__(self, model, optimizer, loss_fn, counts, compiled: bool = True):
        optimizer.build(model.trainable_variables)
        self.model, self.optimizer = model, optimizer
        self.state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                      [v.value for v in optimizer.variables])

        def train_step(state, x_all, y_all, rows):
            trainable, non_trainable, optimizer_state = state
            x, y = x_all[rows], y_all[rows]  # gathered inside the compiled step: no per-step slicing op

            def loss_of(trainable, non_trainable):
                output, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
                return loss_fn(y, output), (output, non_trainable)

            (loss, (output, non_trainable)), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable,
                                                                                                non_trainable)
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
            return (loss, counts(y, output, grads)), (trainable, non_trainable, optimizer_state)

        self._jitted = jax.jit(train_step)
        self._step = None if compiled else train_step  # None: AOT-compiled on the first epoch

    def run(self, ops, x_all, y_all, batches):
        """Each step takes the device data and its numpy index row: slicing a device array per step costs a
        dispatch (~0.2 ms on a CPU), which made this loop slower than the Keras guide's numpy-fed one."""
        if self._step is None:  # compile ahead of time, so that its cost is measured on its own
            start = time.perf_counter()
            self._step = self._jitted.lower(self.state, x_all, y_all, batches[0]).compile()
            self.compile_seconds = time.perf_counter() - start
        outputs = []
        for rows in batches:
            output, self.state = self._step(self.state, x_all, y_all, rows)
            outputs.append(output)
        return outputs

    def sync(self) -> None:
        trainable, non_trainable, optimizer_state = self.state
        for variables, values in ((self.model.trainable_variables, trainable),
                                  (self.model.non_trainable_variables, non_trainable),
                                  (self.optimizer.variables, optimizer_state)):
            for variable, value in zip(variables, values):
                variable.assign(value)


def load(name: str, device: str) -> JaxEngine:
    if device == "gpu":
        if jax.default_backend() != "gpu":
            raise no_gpu(name, f"JAX's default backend is {jax.default_backend()}")
        jax.config.update("jax_default_matmul_precision", "highest")  # full fp32, as the parity tests assume
    elif jax.default_backend() != "cpu":  # jax was imported before us, on an accelerator
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
    return JaxEngine(name, device)

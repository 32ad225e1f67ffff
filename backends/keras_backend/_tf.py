"""The TensorFlow engines: Keras 3 with ``KERAS_BACKEND=tensorflow`` and legacy Keras 2 (``tf_keras``).

Gradients come from ``tf.GradientTape`` exactly as in the post's loop. The loop runs eagerly by default (no
``tf.function``), so what the loss sees is an eager softmax output; ``compiled`` runs the same step under
``tf.function``, where the loss sees a traced graph and can find the ``Softmax`` op behind the output.
"""

from __future__ import annotations

import time
import types
from typing import Any

import numpy as np
import tensorflow as tf

from backends.base import BackendError
from backends.keras_backend.engine import EagerStepper, Engine, no_gpu
from backends.kernel_info import tensorflow_kernels


class TFEngine(Engine):
    def __init__(self, name: str, device: str):
        self.name, self.device = name, device
        if name == "tf_keras":
            import tf_keras

            self.keras, self.ops = tf_keras, _legacy_ops()
        else:
            import keras

            self.keras, self.ops = keras, keras.ops

    def versions(self) -> dict[str, str]:
        versions = {"keras": self.keras.__version__, "tensorflow": tf.__version__}
        if self.name == "tf_keras":
            versions["tf_keras"] = self.keras.__version__
        return versions

    def device_name(self) -> str:
        gpus = tf.config.list_physical_devices("GPU")
        if self.device == "cpu" or not gpus:
            return "cpu"
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)

    def threads(self) -> dict[str, int]:
        # 0: TensorFlow sizes the pool itself (one thread per core).
        return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}

    def kernel_info(self) -> dict[str, Any]:
        return tensorflow_kernels(gpu=self.device == "gpu")

    def value_and_grads(self, model, loss_fn, x, y, training: bool):
        with tf.GradientTape() as tape:
            output = model(x, training=training)
            loss = loss_fn(y, output)
        return loss, tape.gradient(loss, model.trainable_variables), output

    def softmax_op(self, z):
        return tf.nn.softmax(z)

    def stepper(self, model, optimizer, loss_fn, compiled: bool, counts) -> EagerStepper:
        stepper = EagerStepper(self, model, optimizer, loss_fn, counts)
        return GraphStepper(stepper) if compiled else stepper

    def value_and_grad_input(self, fn, z):
        z = tf.convert_to_tensor(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = fn(z)
        return loss, tape.gradient(loss, z)


class GraphStepper(EagerStepper):
    """The eager step, unchanged, under ``tf.function``: traced once, then run as a graph.

    ``compile_seconds`` is the tracing time, measured by tracing ahead of the first step. No AutoGraph: the
    step has no tensor-dependent Python control flow, and AutoGraph's conversion of the call tree failed
    intermittently in long processes ("tf__sync() takes 1 positional argument but 3 were given").
    """

    def __init__(self, eager: EagerStepper):
        super().__init__(eager.engine, eager.model, eager.optimizer, eager.loss_fn, eager.counts)
        self._graph_step = tf.function(lambda x, y: EagerStepper.step(self, x, y), autograph=False)

    def step(self, x, y):
        if not self.compile_seconds:
            start = time.perf_counter()
            self._graph_step.get_concrete_function(x, y)
            self.compile_seconds = max(time.perf_counter() - start, 1e-9)
        return self._graph_step(x, y)


def _legacy_ops() -> types.SimpleNamespace:
    """The few ``keras.ops`` this backend uses, for tf_keras (Keras 2 has no ``ops``): plain TensorFlow."""
    return types.SimpleNamespace(
        convert_to_tensor=tf.convert_to_tensor, convert_to_numpy=np.asarray, take=tf.gather, stack=tf.stack,
        matmul=tf.matmul, clip=tf.clip_by_value, log=tf.math.log, sum=tf.reduce_sum, mean=tf.reduce_mean,
        cast=tf.cast, reshape=tf.reshape, scatter_update=tf.tensor_scatter_nd_update,
    )


def load(name: str, device: str) -> TFEngine:
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise no_gpu(name, "tf.config.list_physical_devices('GPU') is empty")
    if device == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow has already started on the GPU
            raise BackendError("TensorFlow already runs on the GPU in this process; --device cpu needs a new "
                               "process") from None
    if device == "gpu":
        tf.config.experimental.enable_tensor_float_32_execution(False)  # full fp32, as the parity tests assume
    return TFEngine(name, device)

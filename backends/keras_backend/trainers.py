"""The two Keras training paths of the post: ``model.compile`` + ``model.fit``, and the hand-written loop.

Both start from the canonical weights, see the same batches (the driver's index array), and return every
step's loss read from the device once per epoch.
"""

from __future__ import annotations

import time

import numpy as np

from backends.keras_backend import model as mlp
from backends.keras_backend.engine import Engine
from common.data import Dataset
from common.diagnostics import StepCounts
from common.spec import Spec
from common.training import GivenLoss, Trainer, check_given_loss
from common.variants import Variant
from common.weights import Weights


def make_optimizer(engine: Engine, spec: Spec):
    optimizers = engine.keras.optimizers
    if spec.optimizer == "sgd":
        return optimizers.SGD(learning_rate=spec.learning_rate)
    return optimizers.Adam(learning_rate=spec.learning_rate, beta_1=spec.beta_1, beta_2=spec.beta_2,
                           epsilon=spec.epsilon)


class KerasTrainer(Trainer):
    """What fit and loop share: the model, its loss, the optimiser, and the eval-mode probe and evaluation."""

    def __init__(self, engine: Engine, spec: Spec, variant: Variant, weights: Weights, loss: GivenLoss | None):
        check_given_loss(spec, variant.head, loss)
        engine.keras.utils.set_random_seed(spec.seed)
        self.engine, self.spec, self.given = engine, spec, loss is not None
        self.model = mlp.build_model(engine, spec, variant.head, weights)
        self.loss_fn = loss or mlp.make_loss(engine, variant.head, spec.prob_loss, spec.clip_epsilon)
        self.optimizer = make_optimizer(engine, spec)

    def measured_loss_path(self, variant: Variant, traced: bool) -> str:
        """``given`` for the caller's loss, else what ``mlp.detect_loss_path`` finds the variant's loss run."""
        if self.given:
            return "given"
        return mlp.detect_loss_path(self.engine, variant.head, self.spec.prob_loss, self.spec.softmax, traced)

    def probe(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        logits = self.engine.to_numpy(mlp.logits(self.engine, self.model, x))
        _, grads, _ = self.engine.value_and_grads(self.model, self.loss_fn, x, y, training=False)
        norm = np.sqrt(sum(np.sum(np.square(self.engine.to_numpy(g), dtype=np.float64)) for g in grads))
        return logits, float(norm)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        output = self.model(x, training=False)
        loss = float(self.engine.to_numpy(self.loss_fn(y, output)))
        return loss, self.engine.to_numpy(output).argmax(-1)

    def weights(self) -> Weights:
        return mlp.get_weights(self.engine, self.model)


class FitTrainer(KerasTrainer):
    """``model.compile`` once, then one ``model.fit`` per epoch over the driver's batches, unshuffled.

    Per-step losses come from ``StepLosses``, a metric that writes each batch's loss into a variable inside
    Keras' compiled train step (no Python callback per step); the buffer is read after ``fit`` returns.

    Compile time: Keras traces and compiles its train function during the first step of the first ``fit``.
    The first epoch therefore runs as two ``fit`` calls — its first batch, then the rest — and
    ``compile_seconds`` is the first call's time minus one steady step (the rest's mean step time). That
    includes ``fit``'s own per-call set-up once; with a single-batch epoch nothing can be separated and it
    stays 0. (tf_keras traces its train function twice, both in that first call, so both count; on the torch
    engine Keras' fit runs eagerly — no ``torch.compile`` unless asked — so the figure is first-step overhead.)
    """

    def __init__(self, engine: Engine, spec: Spec, variant: Variant, data: Dataset, weights: Weights,
                 loss: GivenLoss | None = None):
        super().__init__(engine, spec, variant, weights, loss)
        self.x, self.y = data.x_train, data.y_train
        steps = len(self.x) // spec.batch_size
        self.step_losses = step_loss_metric(engine, self.loss_fn, steps)
        self.model.compile(optimizer=self.optimizer, loss=self.loss_fn, metrics=[self.step_losses])
        self.loss_path = self.measured_loss_path(variant, traced=True)
        #: (steps, Keras' own epoch loss, our per-step losses) of every ``fit`` call, for checking.
        self.fit_calls: list[tuple[int, float, np.ndarray]] = []

    def run_epoch(self, batches: np.ndarray) -> np.ndarray:
        rows = batches.ravel()
        x, y = self.x[rows], self.y[rows]
        if self.fit_calls or len(batches) < 2:
            return self._fit(x, y)
        batch = self.spec.batch_size
        start = time.perf_counter()
        first = self._fit(x[:batch], y[:batch])
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        rest = self._fit(x[batch:], y[batch:])
        steady_step = (time.perf_counter() - start) / (len(batches) - 1)
        self.compile_seconds = max(first_seconds - steady_step, 0.0)
        return np.concatenate([first, rest])

    def _fit(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        steps = len(x) // self.spec.batch_size
        history = self.model.fit(x, y, batch_size=self.spec.batch_size, epochs=1, shuffle=False, verbose=0)
        losses = np.array(self.step_losses.buffer)[:steps]
        self.fit_calls.append((steps, float(history.history["loss"][0]), losses))
        return losses


def step_loss_metric(engine: Engine, loss_fn, steps: int):
    """A Keras metric that records ``loss_fn(y, y_pred)`` of every batch of an epoch in a (steps,) variable.

    Keras calls metrics inside its compiled train step on the same ``y_pred`` the loss saw, and resets them at
    the start of every epoch. Its ``result`` is the mean recorded loss.
    """
    ops = engine.ops

    class StepLosses(engine.keras.metrics.Metric):
        def __init__(self):
            super().__init__(name="step_losses")
            self.buffer = self.add_weight(name="buffer", shape=(steps,), initializer="zeros")
            self.count = self.add_weight(name="count", shape=(), initializer="zeros", dtype="int32")

        def update_state(self, y_true, y_pred, sample_weight=None):
            index = ops.reshape(self.count, (1, 1))
            loss = ops.reshape(loss_fn(y_true, y_pred), (1,))
            self.buffer.assign(ops.scatter_update(self.buffer, index, loss))
            self.count.assign_add(1)

        def reset_state(self):  # tf_keras' default assigns a scalar 0, which a vector variable refuses
            self.buffer.assign(np.zeros(steps, np.float32))
            self.count.assign(0)

        def result(self):
            return ops.sum(self.buffer) / ops.cast(self.count, "float32")

    return StepLosses()


class LoopTrainer(KerasTrainer):
    """The post's hand-written loop, per batch: ``model(x, training=True)``, the loss, its gradient, the update.

    The step is the engine's (``Engine.stepper``), run as ``spec.loop_exec`` says: ``GradientTape`` on
    TensorFlow and tf_keras (eager, or the same step under ``tf.function``), eager torch autograd on torch, a
    ``stateless_call`` step on JAX (under ``jax.jit``, or not). The training set sits on the device; each
    epoch gathers its batches there once, and the step losses stay device scalars until the epoch's end, where
    they are stacked and read once (the post adds them into a device-side ``avg_cost`` instead; same host work),
    with each step's counts (``model.step_counts``).
    """

    def __init__(self, engine: Engine, spec: Spec, variant: Variant, data: Dataset, weights: Weights,
                 loss: GivenLoss | None = None):
        super().__init__(engine, spec, variant, weights, loss)
        ops = engine.ops
        self.x, self.y = ops.convert_to_tensor(data.x_train), ops.convert_to_tensor(data.y_train)
        compiled = spec.loop_exec == "compiled"
        counts = mlp.step_counts(engine, variant.head, spec.clip_epsilon)
        self.stepper = engine.stepper(self.model, self.optimizer, self.loss_fn, compiled, counts)
        self.loss_path = self.measured_loss_path(variant, traced=compiled)

    def run_epoch(self, batches: np.ndarray) -> np.ndarray:
        ops = self.engine.ops
        losses, counts = zip(*self.stepper.run(ops, self.x, self.y, batches))
        self.stepper.sync()
        self.compile_seconds = self.stepper.compile_seconds
        self.step_counts = StepCounts.from_columns(self.engine.to_numpy(ops.stack(counts)))
        return self.engine.to_numpy(ops.stack(losses))

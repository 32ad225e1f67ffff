"""The JAX + optax backend: the seed post's MLP as a pure function of a parameter dict, trained with optax.

Parameters are a plain dict in the canonical layout (``dense_{i}.kernel`` (in, out), ``dense_{i}.bias``), so
no NN library and no layout conversion. The two training paths (docs/design.md, "The variants per framework"):

  loop: a Python loop over a ``jax.jit``-compiled train step, as JAX users write a custom loop;
  fit:  the whole epoch compiled: ``jax.jit`` over ``jax.lax.scan`` of the same train step.

Both run the same step on the same batches with the same dropout keys (``fold_in(key(seed), global_step)``),
so they differ only in what XLA compiles. ``loop_exec="eager"`` runs the loop un-jitted (``jax.disable_jit``):
the ablation "does compilation change the numbers?" (``experiments/tools/jax_eager_ablation.py``).

Losses (y one-hot, p = softmax(z), mean over the batch):
  logits:  optax.softmax_cross_entropy(z, y)                  (log-softmax of the logits, stable)
  native:  -sum_k y_k log(p_k)                                 (XLA does not rewrite log(softmax): inf/NaN
                                                                once p underflows to 0)
  clipped: -sum_k y_k log(clip(p, eps, 1 - eps))               (Keras-2 eager formula: zero gradient when clipped)
  given:   the caller's loss of the logits (``common.training.GivenLoss``: the atlas' cells), ``training_loss``

    >>> from common.spec import Spec
    >>> from common.weights import initial_weights
    >>> backend = JaxBackend()
    >>> model = backend.build_model(Spec(), "probs", initial_weights(Spec()))
    >>> backend.forward(model, np.zeros((2, 784), np.float32)).shape
    (2, 10)
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

from backends.base import Backend, BackendError
from backends.kernel_info import jax_kernels
from common.data import Dataset
from common.diagnostics import PLAIN_LOSS_PATH, StepCounts
from common.reference import loss_kind
from common.spec import Spec
from common.training import GivenLoss, Trainer, check_given_loss
from common.variants import Variant
from common.weights import Weights, param_name


Params = dict[str, jax.Array]


# --- model --------------------------------------------------------------------------------------------------
def dense(params: Params, i: int, h: jax.Array) -> jax.Array:
    """h W_i + b_i."""
    # Full fp32 matmuls, scoped to this dot (no global config): on GPU, JAX's default precision uses
    # TF32-class passes that move raw-pixel logits by ~0.12 (docs/design.md, "Parity"). No effect on CPU.
    kernel, bias = params[param_name(i, "kernel")], params[param_name(i, "bias")]
    return jnp.dot(h, kernel, precision=jax.lax.Precision.HIGHEST) + bias


def dropout(key: jax.Array, h: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: keep each unit with probability 1 - rate and scale kept units by 1 / (1 - rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, h / (1.0 - rate), 0.0)


def dropout_key(seed: int, step: jax.Array | int) -> jax.Array:
    """The key of training step ``step``: ``fold_in(key(seed), step)``; layer i folds in i on top."""
    return jax.random.fold_in(jax.random.key(seed), step)


def hidden_outputs(params: Params, x: jax.Array, drop_rate: float = 0.0,
                   key: jax.Array | None = None) -> list[tuple[jax.Array, jax.Array]]:
    """Per hidden layer i, (a_i, h_{i+1}): a_i = relu(h_i W_i + b_i), h_0 = x, and h_{i+1} = its dropout with
    key ``fold_in(key, i)``, or a_i itself when no ``key`` is given (eval mode)."""
    pairs, h = [], x
    for i in range(len(params) // 2 - 1):
        activation = jax.nn.relu(dense(params, i, h))
        h = activation if key is None else dropout(jax.random.fold_in(key, i), activation, drop_rate)
        pairs.append((activation, h))
    return pairs


def logits(params: Params, x: jax.Array, drop_rate: float = 0.0, key: jax.Array | None = None) -> jax.Array:
    """z = h_L W_L + b_L, h_L the last hidden output (``hidden_outputs``); dropout only when ``key`` is given."""
    pairs = hidden_outputs(params, x, drop_rate, key)
    return dense(params, len(params) // 2 - 1, pairs[-1][1] if pairs else x)


def head_output(head: str, z: jax.Array) -> jax.Array:
    """The model's output: softmax(z) for the ``probs`` head, the logits z for the ``logits`` head."""
    return jax.nn.softmax(z) if head == "probs" else z


# --- loss ---------------------------------------------------------------------------------------------------
def cross_entropy(kind: str, output: jax.Array, y: jax.Array, clip_epsilon: float = 1e-7) -> jax.Array:
    """Mean cross-entropy of ``kind`` (module docstring); ``output`` is logits for ``logits``, else probabilities."""
    if kind == "logits":
        return optax.softmax_cross_entropy(output, y).mean()
    if kind == "clipped":
        output = jnp.clip(output, clip_epsilon, 1.0 - clip_epsilon)
    return -(y * jnp.log(output)).sum(-1).mean()


def training_loss(head: str, kind: str, z: jax.Array, y: jax.Array, clip_epsilon: float,
                  given: GivenLoss | None = None) -> jax.Array:
    """The loss a trainer minimises, of the logits ``z``: the head's cross-entropy of ``kind``, or the caller's
    ``given(y, z)`` (``common.training.GivenLoss``)."""
    if given is not None:
        return given(y, z)
    return cross_entropy(kind, head_output(head, z), y, clip_epsilon)


def step_counts(probs: jax.Array, y: jax.Array, grads: Params, clip_epsilon: float) -> jax.Array:
    """[rows whose true-class probability lies inside (eps, 1 - eps), 1 if the gradient is non-zero] of one step
    (``common.diagnostics.StepCounts``); the bounds are compared in float32, as the clip compares them.

    "Non-zero" is read off the output layer's gradient (kernel and bias): every parameter gradient is a product
    with the loss's gradient w.r.t. the logits, so all are zero when it is zero; and when it is not, the output
    bias gradient is its sum over rows, zero only by exact cancellation. Reading all 1.2M entries instead cost
    ~7% of the JAX fit path's step on 2 CPU cores (XLA does not fuse that reduction into the update).
    """
    p_true = (probs * y).sum(-1)
    unclipped = jnp.sum((p_true > clip_epsilon) & (p_true < 1.0 - clip_epsilon), dtype=jnp.int32)
    last = len(grads) // 2 - 1
    nonzero = jnp.any(grads[param_name(last, "kernel")] != 0) | jnp.any(grads[param_name(last, "bias")] != 0)
    return jnp.stack([unclipped, nonzero.astype(jnp.int32)])


@functools.partial(jax.jit, static_argnames=("head", "kind", "clip_epsilon", "given"))
def eval_loss_and_grads(params: Params, x: jax.Array, y: jax.Array, head: str, kind: str,
                        clip_epsilon: float, given: GivenLoss | None = None) -> tuple[jax.Array, Params, jax.Array]:
    """Eval-mode (no dropout) (loss, parameter gradients, logits) of the head's training loss."""
    def loss_of(p):
        z = logits(p, x)
        return training_loss(head, kind, z, y, clip_epsilon, given), z

    (loss, z), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    return loss, grads, z


@functools.partial(jax.jit, static_argnames=("head", "kind", "clip_epsilon", "given"))
def eval_loss_and_predictions(params: Params, x: jax.Array, y: jax.Array, head: str, kind: str,
                              clip_epsilon: float, given: GivenLoss | None = None) -> tuple[jax.Array, jax.Array]:
    """Eval-mode mean loss and the predicted class of every row (argmax of the model's output)."""
    z = logits(params, x)
    return training_loss(head, kind, z, y, clip_epsilon, given), head_output(head, z).argmax(-1)


# --- optimiser ----------------------------------------------------------------------------------------------
def make_optimizer(spec: Spec) -> optax.GradientTransformation:
    """optax Adam with the spec's betas and epsilon, or plain SGD."""
    if spec.optimizer == "sgd":
        return optax.sgd(spec.learning_rate)
    # optax adds eps after bias correction, m_hat / (sqrt(v_hat) + eps), as torch does; Keras uses the
    # epsilon-hat form (common/reference.py): a different effective epsilon early in training.
    return optax.adam(spec.learning_rate, b1=spec.beta_1, b2=spec.beta_2, eps=spec.epsilon)


def optimizer_step(tx: optax.GradientTransformation, params: Params, opt_state: Any,
                   grads: Params) -> tuple[Params, Any]:
    """One optimiser update: params + tx.update(grads)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


# --- training -----------------------------------------------------------------------------------------------
class TrainState(NamedTuple):
    params: Params
    opt_state: Any
    step: jax.Array  # global step (int32), which also keys dropout


def make_train_step(spec: Spec, head: str, tx: optax.GradientTransformation, given: GivenLoss | None = None):
    """``train_step(state, x_all, y_all, idx) -> (state, (loss, counts))``: one step on rows ``idx`` of the device
    data (of the caller's ``given`` loss, if any); ``counts`` is ``step_counts`` of the step."""
    kind = loss_kind(head, spec.prob_loss)

    def train_step(state: TrainState, x_all: jax.Array, y_all: jax.Array, idx: jax.Array):
        key = dropout_key(spec.seed, state.step)
        y = y_all[idx]

        def loss_of(params):
            z = logits(params, x_all[idx], spec.drop_rate, key)
            return training_loss(head, kind, z, y, spec.clip_epsilon, given), jax.nn.softmax(z)

        (loss, probs), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        params, opt_state = optimizer_step(tx, state.params, state.opt_state, grads)
        counts = step_counts(probs, y, grads, spec.clip_epsilon)
        return TrainState(params, opt_state, state.step + 1), (loss, counts)

    return train_step


def scan_epoch(train_step):
    """``epoch(state, x_all, y_all, batches) -> (state, losses)``: ``lax.scan`` of the step over batch rows."""
    def epoch(state, x_all, y_all, batches):
        return jax.lax.scan(lambda s, idx: train_step(s, x_all, y_all, idx), state, batches)

    return epoch


class JaxTrainer(Trainer):
    """One variant's state on one device. A non-finite loss never raises: it shows in the per-step losses."""

    def __init__(self, spec: Spec, variant: Variant, data: Dataset, weights: Weights, device: jax.Device,
                 loss: GivenLoss | None = None):
        check_given_loss(spec, variant.head, loss)
        self.spec, self.head, self.mode, self.given = spec, variant.head, variant.mode, loss
        self.eager = variant.mode == "loop" and spec.loop_exec == "eager"
        self.kind = loss_kind(variant.head, spec.prob_loss)
        self.loss_path = "given" if loss else PLAIN_LOSS_PATH[self.kind]  # XLA rewrites none of them
        self.compile_seconds = 0.0
        self._device = device
        tx = make_optimizer(spec)
        params = jax.device_put(to_params(weights), device)
        self._state = TrainState(params, tx.init(params), jax.device_put(jnp.zeros((), jnp.int32), device))
        self._x, self._y = jax.device_put((data.x_train, data.y_train), device)  # once per run
        self._step = make_train_step(spec, variant.head, tx, loss)
        self._compiled = None  # the AOT-compiled step (loop) or epoch (fit), built on the first epoch

    def run_epoch(self, batches: np.ndarray) -> np.ndarray:
        batches = jax.device_put(batches, self._device)
        if self.mode == "fit":
            epoch = self._compile(scan_epoch(self._step), batches)
            self._state, (losses, counts) = epoch(self._state, self._x, self._y, batches)
        elif self.eager:
            with jax.disable_jit():
                losses, counts = self._loop(self._step, batches)
        else:
            losses, counts = self._loop(self._compile(self._step, batches[0]), batches)
        losses, counts = jax.device_get((losses, counts))  # the one device-to-host read of the epoch
        self.step_counts = StepCounts.from_columns(counts)
        return np.asarray(losses)

    def _loop(self, step, batches: jax.Array) -> tuple[jax.Array, jax.Array]:
        outputs = []  # stay on the device: no sync per step
        for idx in batches:
            self._state, output = step(self._state, self._x, self._y, idx)
            outputs.append(output)
        losses, counts = zip(*outputs)
        return jnp.stack(losses), jnp.stack(counts)

    def _compile(self, fn, batch_arg: jax.Array):
        """AOT-compile ``fn`` once, donating the state (updated in place, no second copy of params and moments).

        Done inside the first ``run_epoch`` because the shared driver subtracts ``compile_seconds`` from the
        time it measures around ``run_epoch``: training throughput then excludes compilation.
        """
        if self._compiled is None:
            start = time.perf_counter()
            self._compiled = jax.jit(fn, donate_argnums=0).lower(self._state, self._x, self._y, batch_arg).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._compiled

    def probe(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        x, y = jax.device_put((x, y), self._device)
        _, grads, z = eval_loss_and_grads(self._state.params, x, y, self.head, self.kind, self.spec.clip_epsilon,
                                          self.given)
        return np.asarray(z), float(optax.tree.norm(grads))

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        x, y = jax.device_put((x, y), self._device)
        loss, predicted = eval_loss_and_predictions(self._state.params, x, y, self.head, self.kind,
                                                    self.spec.clip_epsilon, self.given)
        return float(loss), np.asarray(predicted)

    def weights(self) -> Weights:
        return to_weights(self._state.params)


# --- backend ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Model:
    """A built model: canonical-layout parameters on the device, the output head, and its dropout: the rate,
    the seed, and how many training-mode passes have drawn masks (each pass keys dropout as a training step
    of that number does)."""

    params: Params
    head: str
    drop_rate: float
    seed: int
    steps: int = 0


def to_params(weights: Weights) -> Params:
    return {name: jnp.asarray(w, jnp.float32) for name, w in weights.items()}


def to_weights(params: Params) -> Weights:
    return {name: np.asarray(p, np.float32) for name, p in params.items()}


class JaxBackend(Backend):
    name = "jax"
    extra = "jax"

    def __init__(self, device: str = "cpu", engine: str | None = None):
        super().__init__(device, engine)
        try:
            self._device = jax.devices(device)[0]
        except RuntimeError as exc:
            raise BackendError(
                f"--device {device}: JAX finds no {device.upper()} here ({exc}); install a CUDA build of JAX "
                "(pip install -U 'jax[cuda12]') on a machine with an NVIDIA GPU, or use --device cpu"
            ) from None

    def versions(self) -> dict[str, str]:
        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__}

    def device_name(self) -> str:
        return self._device.device_kind

    def kernel_info(self) -> dict[str, Any]:
        return jax_kernels(self._device)

    def build_model(self, spec: Spec, head: str, weights: Weights) -> Model:
        return Model(jax.device_put(to_params(weights), self._device), head, spec.drop_rate, spec.seed)

    def get_weights(self, model: Model) -> Weights:
        return to_weights(model.params)

    def forward(self, model: Model, x: np.ndarray) -> np.ndarray:
        x = jax.device_put(x, self._device)
        return np.asarray(head_output(model.head, logits(model.params, x)))

    def hidden_outputs(self, model: Model, x: np.ndarray, training: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        key = None
        if training:
            key, model.steps = dropout_key(model.seed, model.steps), model.steps + 1
        pairs = hidden_outputs(model.params, jax.device_put(x, self._device), model.drop_rate, key)
        return [(np.asarray(a), np.asarray(h)) for a, h in pairs]

    def loss_and_grad_logits(self, head: str, prob_loss: str, logits: np.ndarray, y: np.ndarray,
                             clip_epsilon: float = 1e-7) -> tuple[float, np.ndarray]:
        kind = loss_kind(head, prob_loss)
        z, y = jax.device_put((np.asarray(logits, np.float32), np.asarray(y, np.float32)), self._device)
        loss, grad = jax.value_and_grad(lambda z: cross_entropy(kind, head_output(head, z), y, clip_epsilon))(z)
        return float(loss), np.asarray(grad)

    def loss_and_grads(self, spec: Spec, head: str, model: Model, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        x, y = jax.device_put((x, y), self._device)
        loss, grads, _ = eval_loss_and_grads(model.params, x, y, head, loss_kind(head, spec.prob_loss),
                                             spec.clip_epsilon)
        return float(loss), to_weights(grads)

    def make_trainer(self, spec: Spec, variant: Variant, data: Dataset, weights: Weights,
                     loss: GivenLoss | None = None) -> JaxTrainer:
        return JaxTrainer(spec, variant, data, weights, self._device, loss)

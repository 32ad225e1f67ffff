"""The post's Keras model and losses, written once for every engine (Keras 3's ``keras.ops``, or TensorFlow's
equivalents on tf_keras), and the check that tells which computation Keras' probability loss really ran.
"""

from __future__ import annotations

import math

import numpy as np

from backends.keras_backend.engine import Engine
from common.spec import INPUT_DIM, Spec
from common.weights import Weights, layer_names, param_name

# A saturated row for ``detect_loss_path``: softmax([0, 200])[0] underflows to exactly 0 in float32.
_SATURATED_LOGITS = np.array([[0.0, 200.0]], np.float32)
_SATURATED_TARGET = np.array([[1.0, 0.0]], np.float32)
_SATURATED_LOGIT_LOSS = 200.0


def build_model(engine: Engine, spec: Spec, head: str, weights: Weights):
    """Sequential 784-512x4-10 as in the post: ReLU, Dropout after each hidden layer, softmax head or none.

    The probs head's softmax is written as ``spec.softmax`` says: the post's ``Dense(10, activation="softmax")``,
    or ``Dense(10)`` followed by ``keras.layers.Softmax()`` or by ``SoftmaxOp`` (the engine's bare op). The
    numbers are the same; what differs is whether Keras' loss can find the logits behind the output.

    Layers are named ``dense_i`` like the canonical weights. Each Dropout gets its own seed from the spec, so the
    same spec gives the same masks in every run (Keras 3 derives its dropout masks from per-layer seed state).
    """
    keras = engine.keras
    names = layer_names(spec)
    layers = [keras.Input(shape=(INPUT_DIM,))]
    for i, name in enumerate(names[:-1]):
        layers.append(keras.layers.Dense(spec.hidden_units, activation="relu", name=name))
        layers.append(keras.layers.Dropout(spec.drop_rate, seed=engine.dropout_seed(spec.seed, i),
                                           name=f"dropout_{i}"))
    layers += head_layers(engine, head, spec.softmax, spec.layer_sizes[-1], names[-1])
    model = keras.Sequential(layers, name=f"mlp_{head}")
    set_weights(engine, model, weights)
    return model


def head_layers(engine: Engine, head: str, softmax: str, units: int, name: str) -> list:
    """The output layer(s): a Dense of ``units``, and for the probs head the softmax in the form asked for."""
    keras = engine.keras
    if head == "probs" and softmax == "activation":
        return [keras.layers.Dense(units, activation="softmax", name=name)]
    dense = keras.layers.Dense(units, name=name)
    if head == "logits":
        return [dense]
    if softmax == "layer":
        return [dense, keras.layers.Softmax(name="softmax")]
    return [dense, softmax_op_layer(engine)]


def softmax_op_layer(engine: Engine):
    """A layer whose call is the engine's bare softmax op and nothing else (``tf.nn.softmax`` on TensorFlow).

    Its output carries no ``_keras_logits``; only a traced graph still shows where it came from (a ``Softmax``
    op), which is what Keras' ``_get_logits`` looks for under ``tf.function``.
    """

    class SoftmaxOp(engine.keras.layers.Layer):
        def call(self, inputs):
            return engine.softmax_op(inputs)

    return SoftmaxOp(name="softmax_op")


def dense_layers(engine: Engine, model) -> list:
    return [layer for layer in model.layers if isinstance(layer, engine.keras.layers.Dense)]


def set_weights(engine: Engine, model, weights: Weights) -> None:
    for i, layer in enumerate(dense_layers(engine, model)):
        layer.set_weights([weights[param_name(i, "kernel")], weights[param_name(i, "bias")]])


def get_weights(engine: Engine, model) -> Weights:
    weights: Weights = {}
    for i, layer in enumerate(dense_layers(engine, model)):
        kernel, bias = layer.get_weights()
        weights[param_name(i, "kernel")], weights[param_name(i, "bias")] = kernel, bias
    return weights


def canonical_names(engine: Engine, model) -> list[str]:
    """Canonical names in the order of ``model.trainable_variables`` (kernel, bias per Dense, in layer order)."""
    names = [param_name(i, part) for i in range(len(dense_layers(engine, model))) for part in ("kernel", "bias")]
    ordered = [var for layer in dense_layers(engine, model) for var in (layer.kernel, layer.bias)]
    assert all(a is b for a, b in zip(ordered, model.trainable_variables, strict=True)), "unexpected order"
    return names


def logits(engine: Engine, model, x, training: bool = False):
    """The last Dense layer's pre-activation (for the logits head: the model output itself)."""
    last = dense_layers(engine, model)[-1]
    for layer in model.layers[:model.layers.index(last)]:
        x = layer(x, training=training)
    return engine.ops.matmul(x, last.kernel) + last.bias


def hidden_outputs(engine: Engine, model, x, training: bool) -> list[tuple]:
    """(ReLU output, Dropout output) of every hidden layer in one pass, the Dropouts in ``training`` mode."""
    pairs, h = [], engine.ops.convert_to_tensor(x)
    for layer in model.layers:
        activation, h = h, layer(h, training=training)
        if isinstance(layer, engine.keras.layers.Dropout):
            pairs.append((activation, h))
    return pairs


def make_loss(engine: Engine, head: str, prob_loss: str, clip_epsilon: float):
    """``loss(y, output)``: the batch-mean cross-entropy of the head, as in the post's ``criterion``.

    logits head: ``categorical_crossentropy(from_logits=True)``. probs head, ``native``: Keras' own
    ``categorical_crossentropy(from_logits=False)`` (which may recover the logits behind a Keras softmax);
    ``clipped``: ``-sum(y * log(clip(p, eps, 1 - eps)))``, the Keras-2 eager formula, spelled out.
    """
    keras, ops = engine.keras, engine.ops
    if head == "logits" or prob_loss == "native":
        from_logits = head == "logits"
        return lambda y, output: ops.mean(keras.losses.categorical_crossentropy(y, output, from_logits=from_logits))
    low, high = clip_epsilon, 1.0 - clip_epsilon

    def clipped(y, p):
        y = ops.cast(y, p.dtype)  # as Keras' own losses do
        return ops.mean(-ops.sum(y * ops.log(ops.clip(p, low, high)), axis=-1))

    return clipped


def step_counts(engine: Engine, head: str, clip_epsilon: float):
    """``counts(y, output, grads)``: [rows whose true-class probability lies inside (eps, 1 - eps), 1 if the
    gradient is non-zero] of one training step (``common.diagnostics.StepCounts``), on the device.

    As in the JAX and PyTorch backends, "non-zero" is read off the output layer's gradient, the last two of
    ``grads`` (its kernel and bias: ``canonical_names``); ``backends.jax_backend.step_counts`` says why that layer
    tells. The bounds are compared in float32. Keras' own clip (the native loss on an eager softmax op) also
    divides p by its sum first, which moves it by float32 rounding at most.
    """
    ops = engine.ops

    def counts(y, output, grads):
        p = output if head == "probs" else engine.softmax_op(output)
        p_true = ops.sum(ops.cast(y, p.dtype) * p, axis=-1)
        unclipped = ops.sum(ops.cast((p_true > clip_epsilon) & (p_true < 1.0 - clip_epsilon), "int32"))
        nonzero = ops.sum(ops.cast(grads[-2] != 0, "int32")) + ops.sum(ops.cast(grads[-1] != 0, "int32"))
        return ops.stack([unclipped, ops.cast(nonzero > 0, "int32")])

    return counts


def loss_of_logits(engine: Engine, head: str, prob_loss: str, clip_epsilon: float, y):
    """``f(z)``: the head's loss on logits ``z``. The probs head first applies Keras' softmax activation — the
    function behind the model's ``activation='softmax'`` — so any logit recovery Keras does happens here too."""
    loss = make_loss(engine, head, prob_loss, clip_epsilon)
    if head == "logits":
        return lambda z: loss(y, z)
    return lambda z: loss(y, engine.keras.activations.softmax(z))


def detect_loss_path(engine: Engine, head: str, prob_loss: str, softmax: str, traced: bool) -> str:
    """Which computation the probs head's ``native`` loss runs, found by running it, not by reading sources.

    A one-layer model with the run's softmax form outputs softmax([0, 200]) for the true class 0 — a
    probability that underflows to 0 — and the native loss is evaluated on it, eagerly (``model(x)`` then the
    loss, as eager loops do) or in Keras' compiled test step (``traced``: the tracing of ``fit`` and of a
    compiled loop step). The logit loss is 200; a clipped one is -ln(1e-7) = 16.1; the raw log is inf. The
    other cases are fixed by construction.
    """
    if head == "logits":
        return "logits"
    if prob_loss == "clipped":
        return "clipped_probs"
    keras = engine.keras
    probe = keras.Sequential([keras.Input(shape=(2,)), *head_layers(engine, head, softmax, 2, "dense")])
    probe.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    loss = make_loss(engine, head, prob_loss, 1e-7)
    if traced:
        probe.compile(loss=loss)
        value = probe.evaluate(_SATURATED_LOGITS, _SATURATED_TARGET, verbose=0)
    else:
        value = engine.to_numpy(loss(_SATURATED_TARGET, probe(_SATURATED_LOGITS, training=True)))
    value = float(value)
    if math.isclose(value, _SATURATED_LOGIT_LOSS, rel_tol=1e-5):
        return "recovered_logits"
    if math.isclose(value, -math.log(keras.backend.epsilon()), rel_tol=1e-5):
        return "clipped_probs"
    if not math.isfinite(value):
        return "log_probs"
    raise RuntimeError(f"Keras' native probability loss gave {value} on saturated logits: an unknown path")

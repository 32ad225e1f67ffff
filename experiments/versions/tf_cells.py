"""The mechanism cells in one TensorFlow environment: a child process that needs only TensorFlow and numpy.

``experiments.versions`` runs this file by path with the python of a per-version virtual environment, so
nothing of this project has to be installed there, and old TensorFlow releases (Keras 2) run the same code
as today's (Keras 3)::

    <venv>/bin/python experiments/versions/tf_cells.py INPUT_DIR OUTPUT.jsonl

INPUT_DIR holds ``arrays.npz`` (model-ready data, every epoch's batch indices, the canonical initial weights
under ``weight.<name>``) and ``cells.json`` (the hyper-parameters and the cells). A cell is a softmax form
(``activation``: Dense(10, activation="softmax"); ``layer``: Dense(10) + keras.layers.Softmax(); ``op``:
Dense(10) + a layer calling bare ``tf.nn.softmax``) trained one way (``fit``; a GradientTape loop run
``eager``ly or ``compiled`` under tf.function) with Keras' own probability loss. The model, the batches, the
dropout seeds and the step mirror ``backends.keras_backend`` (model.py, trainers.py, _tf.py), so in the
project's environment both give the same losses. Each cell appends one JSON line to OUTPUT as it ends, with
its raw measurements (per-step losses, probe logits and gradient norms, test predictions, timings, the loss
path it took) or its error; the parent turns them into run records.
"""

import json
import math
import os
import platform
import sys
import time
import traceback

import numpy as np
import tensorflow as tf

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402  (Keras 2 before TF 2.16, Keras 3 from it; tf.keras is the same module)

# A saturated row: softmax([0, 200])[0] underflows to exactly 0 in float32; its logit loss is 200.
SATURATED_LOGITS = np.array([[0.0, 200.0]], np.float32)
SATURATED_TARGET = np.array([[1.0, 0.0]], np.float32)
SATURATED_LOGIT_LOSS = 200.0


def versions():
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def loss_fn(y, p):
    """Keras' own probability cross-entropy, batch mean: the post's ``criterion`` with from_logits=False."""
    return tf.reduce_mean(keras.losses.categorical_crossentropy(y, p, from_logits=False))


def head_layers(softmax, units, name):
    """The output Dense and the softmax in the form asked for (as backends.keras_backend.model.head_layers)."""
    if softmax == "activation":
        return [keras.layers.Dense(units, activation="softmax", name=name)]
    dense = keras.layers.Dense(units, name=name)
    if softmax == "layer":
        return [dense, keras.layers.Softmax(name="softmax")]

    class SoftmaxOp(keras.layers.Layer):
        def call(self, inputs):
            return tf.nn.softmax(inputs)

    return [dense, SoftmaxOp(name="softmax_op")]


def build_model(hyper, softmax, weights):
    """784-512x4-10, ReLU, Dropout seeded per layer, then the head; loaded with the canonical weights."""
    keras.utils.set_random_seed(hyper["seed"])
    layers = [keras.Input(shape=(weights["dense_0.kernel"].shape[0],))]
    for i in range(hyper["hidden_layers"]):
        layers.append(keras.layers.Dense(hyper["hidden_units"], activation="relu", name=f"dense_{i}"))
        layers.append(keras.layers.Dropout(hyper["drop_rate"], seed=hyper["seed"] + i, name=f"dropout_{i}"))
    last = f"dense_{hyper['hidden_layers']}"
    layers += head_layers(softmax, weights[f"{last}.kernel"].shape[1], last)
    model = keras.Sequential(layers, name="mlp_probs")
    for i, layer in enumerate(dense_layers(model)):
        layer.set_weights([weights[f"dense_{i}.kernel"], weights[f"dense_{i}.bias"]])
    return model


def dense_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def make_optimizer(hyper):
    return keras.optimizers.Adam(learning_rate=hyper["learning_rate"], beta_1=hyper["beta_1"],
                                 beta_2=hyper["beta_2"], epsilon=hyper["epsilon"])


def detect_loss_path(softmax, mode, loop_exec):
    """Which computation the loss runs in this cell, found by running it on a saturated row.

    A one-unit-wide model with the cell's softmax form outputs softmax([0, 200]) for the true class 0; the loss
    is evaluated where the cell's training evaluates it: Keras' compiled test step (``fit``), a tf.function
    (compiled loop) or eagerly. 200 means the logits were recovered, -ln(1e-7) = 16.1 a clip, inf a raw log.
    """
    probe = keras.Sequential([keras.Input(shape=(2,)), *head_layers(softmax, 2, "dense")])
    probe.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    if mode == "fit":
        probe.compile(loss=loss_fn)
        value = probe.evaluate(SATURATED_LOGITS, SATURATED_TARGET, verbose=0)
    elif loop_exec == "compiled":
        value = tf.function(lambda x, y: loss_fn(y, probe(x, training=True)))(SATURATED_LOGITS, SATURATED_TARGET)
    else:
        value = loss_fn(SATURATED_TARGET, probe(SATURATED_LOGITS, training=True))
    value = float(value)
    if math.isclose(value, SATURATED_LOGIT_LOSS, rel_tol=1e-5):
        return "recovered_logits"
    if math.isclose(value, -math.log(keras.backend.epsilon()), rel_tol=1e-5):
        return "clipped_probs"
    if not math.isfinite(value):
        return "log_probs"
    raise RuntimeError(f"Keras' probability loss gave {value} on a saturated row: an unknown path")


def step_loss_metric(steps):
    """A metric recording each batch's loss inside Keras' compiled train step (as the Keras backend's)."""

    class StepLosses(keras.metrics.Metric):
        def __init__(self):
            super().__init__(name="step_losses")
            self.buffer = self.add_weight(name="buffer", shape=(steps,), initializer="zeros")
            self.count = self.add_weight(name="count", shape=(), initializer="zeros", dtype="int32")

        def update_state(self, y_true, y_pred, sample_weight=None):
            index = tf.reshape(self.count, (1, 1))
            loss = tf.reshape(loss_fn(y_true, y_pred), (1,))
            self.buffer.assign(tf.tensor_scatter_nd_update(self.buffer, index, loss))
            self.count.assign_add(1)

        def reset_state(self):
            self.buffer.assign(np.zeros(steps, np.float32))
            self.count.assign(0)

        def result(self):
            return tf.reduce_sum(self.buffer) / tf.cast(self.count, "float32")

    return StepLosses()


class Fit:
    """``model.compile`` once, one unshuffled ``model.fit`` per epoch over the given batch order.

    The first epoch runs as two calls (its first batch, then the rest) so that the tracing cost can be told
    from the steady steps, as the Keras backend does.
    """

    def __init__(self, model, hyper, x, y, steps):
        self.model, self.batch, self.x, self.y = model, hyper["batch_size"], x, y
        self.step_losses = step_loss_metric(steps)
        model.compile(optimizer=make_optimizer(hyper), loss=loss_fn, metrics=[self.step_losses])
        self.compile_seconds, self.calls = 0.0, 0

    def run_epoch(self, batches):
        rows = batches.ravel()
        x, y = self.x[rows], self.y[rows]
        if self.calls or len(batches) < 2:
            return self._fit(x, y)
        start = time.perf_counter()
        first = self._fit(x[: self.batch], y[: self.batch])
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        rest = self._fit(x[self.batch:], y[self.batch:])
        steady_step = (time.perf_counter() - start) / (len(batches) - 1)
        self.compile_seconds = max(first_seconds - steady_step, 0.0)
        return np.concatenate([first, rest])

    def _fit(self, x, y):
        self.calls += 1
        self.model.fit(x, y, batch_size=self.batch, epochs=1, shuffle=False, verbose=0)
        return self.step_losses.buffer.numpy()[: len(x) // self.batch]


class Loop:
    """The post's GradientTape step per batch, eagerly or under tf.function (traced before the first step)."""

    def __init__(self, model, hyper, x, y, compiled):
        self.model, self.optimizer = model, make_optimizer(hyper)
        self.x, self.y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        self.step = tf.function(self.eager_step) if compiled else self.eager_step
        self.compiled, self.compile_seconds = compiled, 0.0

    def eager_step(self, x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, self.model(x, training=True))
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def run_epoch(self, batches):
        xs, ys = tf.gather(self.x, batches), tf.gather(self.y, batches)
        if self.compiled and not self.compile_seconds:
            start = time.perf_counter()
            self.step.get_concrete_function(xs[0], ys[0])
            self.compile_seconds = max(time.perf_counter() - start, 1e-9)
        return tf.stack([self.step(xs[i], ys[i]) for i in range(len(batches))]).numpy()


def probe(model, x, y):
    """Eval-mode logits of the last Dense, and the L2 norm of the loss gradient there (eager, as the backend)."""
    last = dense_layers(model)[-1]
    h = x
    for layer in model.layers[: model.layers.index(last)]:
        h = layer(h, training=False)
    logits = (tf.matmul(h, last.kernel) + last.bias).numpy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=False))
    grads = tape.gradient(loss, model.trainable_variables)
    norm = math.sqrt(sum(float(np.sum(np.square(g.numpy(), dtype=np.float64))) for g in grads))
    return logits.tolist(), norm


def run_cell(cell, hyper, arrays, weights):
    """Train one cell; its raw measurements as a JSON-able dict."""
    x, y = arrays["x_train"], arrays["y_train"]
    probe_x, probe_y = x[: hyper["probe_size"]], y[: hyper["probe_size"]]
    epochs = arrays["batches"]
    model = build_model(hyper, cell["softmax"], weights)
    if cell["mode"] == "fit":
        trainer = Fit(model, hyper, x, y, epochs.shape[1])
    else:
        trainer = Loop(model, hyper, x, y, compiled=cell["loop_exec"] == "compiled")
    probes = [probe(model, probe_x, probe_y)]
    losses, seconds = [], 0.0
    for batches in epochs:
        start = time.perf_counter()
        losses.append(trainer.run_epoch(batches).astype(float).tolist())
        seconds += time.perf_counter() - start
        probes.append(probe(model, probe_x, probe_y))
        if hyper["stop_on_nonfinite"] and not np.isfinite(losses[-1]).all():
            break
    output = model(arrays["x_test"], training=False)
    return {
        "step_losses": losses,
        "probe_logits": [p[0] for p in probes],
        "grad_norms": [p[1] for p in probes],
        "test_loss": float(loss_fn(arrays["y_test"], output)),
        "predicted": output.numpy().argmax(-1).tolist(),
        "loss_path": detect_loss_path(cell["softmax"], cell["mode"], cell["loop_exec"]),
        "wall_seconds": seconds,
        "compile_seconds": trainer.compile_seconds,
    }


def main(input_dir, output_path):
    with open(os.path.join(input_dir, "cells.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    with np.load(os.path.join(input_dir, "arrays.npz")) as npz:
        arrays = {key: npz[key] for key in npz.files}
    weights = {key[len("weight."):]: value for key, value in arrays.items() if key.startswith("weight.")}
    threads = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),  # common.results.THREAD_KEYS
               "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    for cell in config["cells"]:
        result = {"cell": cell["id"], "versions": versions(), "threads": threads, "error": None}
        try:
            result.update(run_cell(cell, config["hyper"], arrays, weights))
        except Exception as exc:  # one broken cell is recorded as failed; the others still run
            traceback.print_exc()
            result["error"] = f"{type(exc).__name__}: {exc}"
        with open(output_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
        print(f"{cell['id']}: {'failed: ' + result['error'] if result['error'] else 'done'}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tf_cells.py INPUT_DIR OUTPUT.jsonl")
    main(sys.argv[1], sys.argv[2])

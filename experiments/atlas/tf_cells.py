"""Raw TensorFlow's cross-entropy calls (no Keras), eagerly and traced by ``tf.function``; also the measurement
that the Keras cells on the TensorFlow engines share.

    python -m experiments.atlas.tf_cells --inputs PROBE.npz --records OUT.jsonl

``out`` is the head's output, ``y`` the one-hot targets, ``t`` the integer labels; a call returning one value
per row (or per row and class) is averaged with ``tf.reduce_mean``. The graph cells run the head and the loss
inside one ``tf.function`` (no AutoGraph), so a loss sees a symbolic tensor and the op that produced it.
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf

from experiments.atlas.probe import Cell, Measurement, child_parser, run_child

HEADS = {"softmax": tf.nn.softmax, "sigmoid": tf.sigmoid, "logits": lambda z: z, "log_softmax": tf.nn.log_softmax}


def _mean(per_row):
    return tf.reduce_mean(per_row)


# (api, family, reduction, targets, heads, loss(y, out))
CALLS = [
    ("tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out)", "categorical", "rows", "onehot",
     ("logits", "softmax", "sigmoid", "log_softmax"),
     lambda y, out: _mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=out))),
    ("tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=out)", "categorical", "rows", "index",
     ("logits", "softmax"),
     lambda t, out: _mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=out))),
    ("tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out)", "binary", "elements", "onehot",
     ("logits", "sigmoid", "softmax"),
     lambda y, out: _mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out))),
    ("tf.compat.v1.losses.softmax_cross_entropy(y, out)", "categorical", "rows", "onehot", ("logits", "softmax"),
     lambda y, out: tf.compat.v1.losses.softmax_cross_entropy(y, out)),
    ("tf.compat.v1.losses.log_loss(y, out)", "binary", "elements", "onehot", ("softmax", "sigmoid"),
     lambda y, out: tf.compat.v1.losses.log_loss(y, out)),
    ("-tf.reduce_sum(y * tf.math.log(out), -1)", "categorical", "rows", "onehot", ("softmax",),
     lambda y, out: _mean(-tf.reduce_sum(y * tf.math.log(out), -1))),
    ("-tf.reduce_sum(y * tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)), -1)", "categorical", "rows", "onehot",
     ("softmax",),
     lambda y, out: _mean(-tf.reduce_sum(y * tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)), -1))),
]


def cells() -> list[Cell]:
    return [Cell(api=api, head=head, from_logits=None, exec=exec_, family=family, reduction=reduction,
                 targets=targets, make_head=HEADS[head], loss=loss)
            for api, family, reduction, targets, heads, loss in CALLS
            for head in heads for exec_ in ("eager", "graph")]


def _step(cell: Cell):
    def step(z, y):
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = cell.make_head(z)
            loss = cell.loss(y, out)
        grad = tape.gradient(loss, z)
        return loss, tf.zeros_like(z) if grad is None else grad, out

    return step


_traced: dict[Cell, object] = {}


def measure(cell: Cell, logits: np.ndarray, targets: np.ndarray) -> Measurement:
    """Loss, d loss / d logits and the head output, eagerly or in a graph traced on the cell's first input."""
    z, y = tf.constant(logits), tf.constant(targets)
    step = _step(cell)
    if cell.exec == "graph":
        # Traced to a concrete function and called as one: a fresh tf.function per cell, called directly, would
        # count as a retrace of one function (TensorFlow keys them by code object) and log a retracing warning
        # that belongs to this harness, not to the call.
        if cell not in _traced:
            _traced[cell] = tf.function(step, autograph=False).get_concrete_function(z, y)
        step = _traced[cell]
    loss, grad, out = step(z, y)
    return Measurement(float(loss), np.asarray(grad), np.asarray(out))


def index_targets(y):
    """Integer labels (int64) of one-hot rows, for a call that takes them."""
    return tf.argmax(y, axis=-1)


def threads() -> dict[str, int]:
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def main(argv: list[str] | None = None) -> int:
    args = child_parser("python -m experiments.atlas.tf_cells").parse_args(argv)
    tf.constant(0.0)  # start the runtime here: its start-up log lines (oneDNN, CUDA probing) belong to no cell
    return run_child(args, "tensorflow", None, cells(), measure, {"tensorflow": tf.__version__}, threads())


if __name__ == "__main__":
    sys.exit(main())

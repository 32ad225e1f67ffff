"""JAX's cross-entropy calls: optax's losses and the forms JAX users write by hand, under jax.jit; also the
measurement that the Keras cells on the JAX engine share.

    python -m experiments.atlas.jax_cells --inputs PROBE.npz --records OUT.jsonl

``out`` is the head's output, ``y`` the one-hot targets, ``t`` the integer labels; the per-row (per-element
for the sigmoid losses) values are averaged with ``jnp.mean``. optax has no cross-entropy that takes
probabilities, so each logit loss is also given the softmax itself and ``jnp.log`` of it, as users do.
Gradients come from ``jax.value_and_grad`` compiled by ``jax.jit`` (``graph``), as a training step runs them.
Unlike TensorFlow, where a traced graph lets a loss look behind its input (the op that made it, constant
folding), a JAX function computes the same program traced or not: ``jit`` changes the rounding, not the path
(measured: all 26 calls took the same path op by op and jitted, on both inputs). So the JAX cells are probed and
trained jitted only; op by op, each of them cost the probe a compilation per primitive and the training stage a
20-times slower step.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.atlas.probe import Cell, Measurement, child_parser, run_child

HEADS = {"softmax": jax.nn.softmax, "sigmoid": jax.nn.sigmoid, "logits": lambda z: z,
         "log_softmax": jax.nn.log_softmax}


def _picked(log_p, t):
    return jnp.take_along_axis(log_p, t[:, None], axis=-1)[:, 0]


# (api, family, reduction, targets, heads, loss(targets, out))
CALLS = [
    ("optax.softmax_cross_entropy(out, y)", "categorical", "rows", "onehot",
     ("logits", "softmax", "sigmoid", "log_softmax"),
     lambda y, out: jnp.mean(optax.softmax_cross_entropy(out, y))),
    ("optax.softmax_cross_entropy(jnp.log(out), y)", "categorical", "rows", "onehot", ("softmax",),
     lambda y, out: jnp.mean(optax.softmax_cross_entropy(jnp.log(out), y))),
    ("optax.softmax_cross_entropy_with_integer_labels(out, t)", "categorical", "rows", "index",
     ("logits", "softmax", "log_softmax"),
     lambda t, out: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, t))),
    ("optax.softmax_cross_entropy_with_integer_labels(jnp.log(out), t)", "categorical", "rows", "index",
     ("softmax",),
     lambda t, out: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(jnp.log(out), t))),
    ("optax.safe_softmax_cross_entropy(out, y)", "categorical", "rows", "onehot", ("logits", "softmax"),
     lambda y, out: jnp.mean(optax.safe_softmax_cross_entropy(out, y))),
    ("optax.safe_softmax_cross_entropy(jnp.log(out), y)", "categorical", "rows", "onehot", ("softmax",),
     lambda y, out: jnp.mean(optax.safe_softmax_cross_entropy(jnp.log(out), y))),
    ("optax.sigmoid_binary_cross_entropy(out, y)", "binary", "elements", "onehot", ("logits", "sigmoid", "softmax"),
     lambda y, out: jnp.mean(optax.sigmoid_binary_cross_entropy(out, y))),
    ("optax.sigmoid_focal_loss(out, y)", "binary_focal", "elements", "onehot", ("logits", "sigmoid"),
     lambda y, out: jnp.mean(optax.sigmoid_focal_loss(out, y))),
    ("optax.kl_divergence(out, y)", "kl", "rows", "onehot", ("log_softmax", "softmax"),
     lambda y, out: jnp.mean(optax.kl_divergence(out, y))),
    ("optax.kl_divergence(jnp.log(out), y)", "kl", "rows", "onehot", ("softmax",),
     lambda y, out: jnp.mean(optax.kl_divergence(jnp.log(out), y))),
    ("-jnp.sum(y * jnp.log(out), -1)", "categorical", "rows", "onehot", ("softmax",),
     lambda y, out: jnp.mean(-jnp.sum(y * jnp.log(out), -1))),
    ("-jnp.log(out)[rows, t]", "categorical", "rows", "index", ("softmax",),
     lambda t, out: jnp.mean(-_picked(jnp.log(out), t))),
    ("-jnp.sum(y * jnp.log(out + 1e-7), -1)", "categorical", "rows", "onehot", ("softmax",),
     lambda y, out: jnp.mean(-jnp.sum(y * jnp.log(out + 1e-7), -1))),
    ("-jnp.sum(y * jnp.log(jnp.clip(out, 1e-7, 1.0)), -1)", "categorical", "rows", "onehot", ("softmax",),
     lambda y, out: jnp.mean(-jnp.sum(y * jnp.log(jnp.clip(out, 1e-7, 1.0)), -1))),
    # A model assumed to end in log_softmax (Flax's old MNIST example): exact there, not a loss on logits.
    ("-jnp.sum(y * out, -1)", "categorical", "rows", "onehot", ("log_softmax", "logits"),
     lambda y, out: jnp.mean(-jnp.sum(y * out, -1))),
]


def cells() -> list[Cell]:
    return [Cell(api=api, head=head, from_logits=None, exec="graph", family=family, reduction=reduction,
                 targets=targets, make_head=HEADS[head], loss=loss)
            for api, family, reduction, targets, heads, loss in CALLS
            for head in heads]


_jitted: dict[Cell, object] = {}


def measure(cell: Cell, logits: np.ndarray, targets: np.ndarray) -> Measurement:
    """Loss, d loss / d logits and the head output by ``jax.value_and_grad``, jitted for the graph cells."""

    def loss_and_output(z, y):
        out = cell.make_head(z)
        return cell.loss(y, out), out

    step = jax.value_and_grad(loss_and_output, has_aux=True)
    if cell.exec == "graph":
        step = _jitted.setdefault(cell, jax.jit(step))  # compiled on the cell's first input, then reused
    if targets.dtype.kind == "i":  # JAX holds integers as int32 (x64 off); converting first keeps it quiet
        targets = targets.astype(np.int32)
    (loss, out), grad = step(jnp.asarray(logits), jnp.asarray(targets))
    return Measurement(float(loss), np.asarray(grad), np.asarray(out))


def index_targets(y):
    """Integer labels (int32, as JAX holds them) of one-hot rows, for a call that takes them."""
    return jnp.argmax(y, axis=-1)


def main(argv: list[str] | None = None) -> int:
    args = child_parser("python -m experiments.atlas.jax_cells").parse_args(argv)
    jax.devices()  # start the CPU client here: its start-up log lines belong to no cell
    versions = {"jax": jax.__version__, "optax": optax.__version__}
    return run_child(args, "jax", None, cells(), measure, versions, {})


if __name__ == "__main__":
    sys.exit(main())

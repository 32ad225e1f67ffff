"""Keras' cross-entropy calls on one engine per process: Keras 3 on TensorFlow, JAX or torch, or tf_keras.

    python -m experiments.atlas.keras_cells --engine jax --inputs PROBE.npz --records OUT.jsonl

The engine is fixed when Keras is imported (``KERAS_BACKEND``; ``TF_USE_LEGACY_KERAS=1`` for tf_keras), which
``backends.keras_backend.engine.load`` does. ``--engine installed`` skips that loader and probes the Keras that
``import keras`` gives beside TensorFlow (Keras 2 before TF 2.16, Keras 3 on TensorFlow from it), recorded as
the ``tensorflow`` engine: the versions study runs it so in environments that hold only TensorFlow and numpy
(this module, ``probe``, ``paths``, ``inputs``, ``tf_cells`` and the ``common`` and ``backends`` modules they
import need nothing else). A call that Keras release does not have is recorded as raising (path ``error``). Every call is given each head a user could end a model with:
``softmax`` = ``keras.activations.softmax`` (what ``Dense(10, activation="softmax")`` applies, and which caches
the logits on its output as ``_keras_logits``), ``softmax_op`` = the engine's bare softmax (``tf.nn.softmax``,
``jax.nn.softmax``, ``torch.softmax``: no cached logits), ``sigmoid`` = ``keras.activations.sigmoid`` (caches them
too) and ``logits``. The functions (``categorical_crossentropy``, ...) return one value per row and are averaged
with ``ops.mean``; the classes reduce themselves (mean over the batch). On the TensorFlow engines each call
runs eagerly and inside one traced ``tf.function``; on JAX and torch eagerly (gradients by ``jax.value_and_grad``
and ``backward``), since neither engine's losses look at how their input was made.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

from backends.keras_backend.engine import ENGINES, load
from experiments.atlas.probe import Cell, child_parser, run_child

TF_ENGINES = ("tensorflow", "tf_keras")
INSTALLED = "installed"  # --engine: the Keras beside TensorFlow, without the project's engine loader
# (api, family, reduction, targets, from_logits values, make(keras, mean, from_logits) -> loss(y, out))
CALLS = [
    ("keras.losses.categorical_crossentropy", "categorical", "rows", "onehot", (False, True),
     lambda keras, mean, fl: lambda y, out: mean(keras.losses.categorical_crossentropy(y, out, from_logits=fl))),
    ("keras.losses.sparse_categorical_crossentropy", "categorical", "rows", "index", (False, True),
     lambda keras, mean, fl: lambda t, out: mean(
         keras.losses.sparse_categorical_crossentropy(t, out, from_logits=fl))),
    ("keras.losses.binary_crossentropy", "binary", "elements", "onehot", (False, True),
     lambda keras, mean, fl: lambda y, out: mean(keras.losses.binary_crossentropy(y, out, from_logits=fl))),
    ("keras.losses.CategoricalFocalCrossentropy()", "categorical_focal", "rows", "onehot", (False, True),
     lambda keras, mean, fl: keras.losses.CategoricalFocalCrossentropy(from_logits=fl)),
    ("keras.losses.BinaryFocalCrossentropy()", "binary_focal", "elements", "onehot", (False, True),
     lambda keras, mean, fl: keras.losses.BinaryFocalCrossentropy(from_logits=fl)),
    ("keras.losses.KLDivergence()", "kl", "rows", "onehot", (None,),
     lambda keras, mean, fl: keras.losses.KLDivergence()),
]
HEAD_NAMES = ("softmax", "softmax_op", "sigmoid", "logits")


def heads(engine) -> dict:
    """The heads on ``engine`` (anything with ``keras``, ``softmax_op`` and ``ops.mean``: an ``Engine``, or
    ``installed_engine()``)."""
    keras = engine.keras
    return {"softmax": keras.activations.softmax, "softmax_op": engine.softmax_op,
            "sigmoid": keras.activations.sigmoid, "logits": lambda z: z}


def cells(engine) -> list[Cell]:
    execs = ("eager", "graph") if engine.name in TF_ENGINES else ("eager",)
    made = heads(engine)
    return [Cell(api=api, head=head, from_logits=fl, exec=exec_, family=family, reduction=reduction,
                 targets=targets, make_head=made[head], loss=_loss(make, engine, fl))
            for api, family, reduction, targets, flags, make in CALLS
            for fl in flags for head in HEAD_NAMES for exec_ in execs]


def _loss(make, engine, from_logits):
    """The cell's loss; where this Keras lacks the call (an older release), a loss that raises the reason."""
    try:
        return make(engine.keras, engine.ops.mean, from_logits)
    except AttributeError as exc:
        missing = f"{type(exc).__name__}: {exc}"

        def absent(*_):
            raise AttributeError(missing)

        return absent


def framework_cells(engine_name: str) -> types.ModuleType:
    """The cells module of the engine's framework, whose ``measure`` (TensorFlow's tape and tf.function,
    jax.value_and_grad, backward) and ``index_targets`` the engine's Keras cells share."""
    module = {"tensorflow": "tf_cells", "tf_keras": "tf_cells", "jax": "jax_cells", "torch": "torch_cells"}
    return importlib.import_module(f"experiments.atlas.{module[engine_name]}")


def installed_engine() -> types.SimpleNamespace:
    """What ``cells`` needs of an engine, from the Keras that ``import keras`` gives beside TensorFlow."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    mean = keras.ops.mean if hasattr(keras, "ops") else tf.reduce_mean  # Keras 2 has no ops
    return types.SimpleNamespace(name="tensorflow", keras=keras, softmax_op=tf.nn.softmax,
                                 ops=types.SimpleNamespace(mean=mean),
                                 versions=lambda: {"keras": keras.__version__, "tensorflow": tf.__version__},
                                 threads=framework_cells("tensorflow").threads)


def main(argv: list[str] | None = None) -> int:
    parser = child_parser("python -m experiments.atlas.keras_cells")
    parser.add_argument("--engine", required=True, choices=(*ENGINES, INSTALLED))
    args = parser.parse_args(argv)
    engine = installed_engine() if args.engine == INSTALLED else load(args.engine, "cpu")
    measure = framework_cells(engine.name).measure
    return run_child(args, "keras", engine.name, cells(engine), measure, engine.versions(), engine.threads())


if __name__ == "__main__":
    sys.exit(main())

"""Choosing and loading a Keras engine: the one place that sets the environment and imports Keras.

Keras 3 reads ``KERAS_BACKEND`` once, when ``keras`` is first imported, so an engine is fixed for the life of a
process; legacy Keras 2 is the separate ``tf_keras`` package (``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` point
at it too). ``load`` sets the environment, imports the engine's adapter module (``_tf``, ``_jax``, ``_torch``,
which import their framework at the top) and returns an ``Engine``: the Keras module, its ops, and the few
things Keras leaves to the engine (gradients, applying an update, the hand-written loop's step).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from typing import Any

from backends.base import BackendError

# engine -> (adapter module, KERAS_BACKEND value or None for tf_keras, framework package, pip extras)
ENGINES = {
    "tensorflow": ("_tf", "tensorflow", "tensorflow", "keras"),
    "jax": ("_jax", "jax", "jax", "keras,jax"),
    "torch": ("_torch", "torch", "torch", "keras,torch"),
    "tf_keras": ("_tf", None, "tensorflow", "keras"),
}
_loaded: set[str] = set()  # the engine this process runs, once one is loaded
#: Set to keep the frameworks' C++ start-up messages on the terminal (``quiet_startup``); inherited by children.
STARTUP_LOGS_ENV = "XENT_PARITY_STARTUP_LOGS"


class Engine:
    """What differs between Keras engines; subclasses live in ``_tf``, ``_jax`` and ``_torch``.

    Attributes: ``name`` (the engine), ``keras`` (the ``keras`` or ``tf_keras`` module), ``ops`` (``keras.ops``,
    or the same functions from TensorFlow for tf_keras, which has no ``ops``), ``device`` (``cpu``/``gpu``).
    """

    name: str
    keras: Any
    ops: Any
    device: str

    def versions(self) -> dict[str, str]:
        """Package versions: ``keras`` is the Keras that runs (tf_keras' version on the tf_keras engine)."""
        raise NotImplementedError

    def device_name(self) -> str:
        raise NotImplementedError

    def threads(self) -> dict[str, Any]:
        return {}

    def kernel_info(self) -> dict[str, Any]:
        """The engine's framework's account of its kernels (``backends.kernel_info``)."""
        raise NotImplementedError

    def dropout_seed(self, seed: int, layer: int) -> int:
        """The seed of hidden layer ``layer``'s Dropout: one per layer, so that layers draw different masks."""
        return seed + layer

    def value_and_grads(self, model, loss_fn, x, y, training: bool):
        """(``loss_fn(y, model(x))``, its gradients w.r.t. ``model.trainable_variables``, the output ``model(x)``);
        no update."""
        raise NotImplementedError

    def value_and_grad_input(self, fn, z):
        """``fn(z)`` and its gradient w.r.t. the array ``z``."""
        raise NotImplementedError

    def softmax_op(self, z):
        """The engine's own bare softmax over the last axis (``tf.nn.softmax``, ``jax.nn.softmax``, ...)."""
        raise NotImplementedError

    def stepper(self, model, optimizer, loss_fn, compiled: bool, counts) -> Stepper:
        """The hand-written training step a user of this engine writes (``EagerStepper``), or compiled;
        ``counts(y, output, grads)`` gives what each step counts (``model.step_counts``)."""
        if compiled:
            raise NotImplementedError(f"the {self.name} engine has no compiled loop")
        return EagerStepper(self, model, optimizer, loss_fn, counts)

    def apply(self, optimizer, grads, variables) -> None:
        optimizer.apply_gradients(zip(grads, variables))

    def to_numpy(self, tensor):
        return self.ops.convert_to_numpy(tensor)


class Stepper:
    """One training step at a time; ``sync`` makes the Keras variables current (after an epoch)."""

    compile_seconds = 0.0

    def step(self, x, y):
        """Train on one batch; return (its loss, its counts) as device tensors (no host read)."""
        raise NotImplementedError

    def run(self, ops, x_all, y_all, batches):
        """Train on every row of ``batches`` (steps, batch) of the device data; each step's (loss, counts), on the
        device.

        The epoch's batches are gathered on the device at once, then sliced per step, as the eager loops do.
        """
        xs, ys = ops.take(x_all, batches, axis=0), ops.take(y_all, batches, axis=0)
        return [self.step(xs[i], ys[i]) for i in range(len(batches))]

    def sync(self) -> None:
        pass


class EagerStepper(Stepper):
    """The post's loop body: forward in training mode, gradient, ``apply_gradients`` — op by op, no tracing."""

    def __init__(self, engine: Engine, model, optimizer, loss_fn, counts):
        self.engine, self.model, self.optimizer, self.loss_fn, self.counts = engine, model, optimizer, loss_fn, counts

    def step(self, x, y):
        loss, grads, output = self.engine.value_and_grads(self.model, self.loss_fn, x, y, training=True)
        self.engine.apply(self.optimizer, grads, self.model.trainable_variables)
        return loss, self.counts(y, output, grads)


def load(name: str, device: str) -> Engine:
    """The ``Engine`` for ``name`` on ``device``; the first engine loaded in a process is the only one."""
    module_name, keras_backend, framework, extras = ENGINES[name]
    _check_no_other_engine(name, keras_backend)
    _set_environment(name, keras_backend, device)
    try:
        with quiet_startup():
            adapter = importlib.import_module(f"backends.keras_backend.{module_name}")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in (framework, "keras", "tf_keras", "tensorflow", "jaxlib"):
            raise BackendError(
                f"the keras backend on the {name} engine needs the Python package {missing!r}, which is not "
                f"installed; install it with: pip install -e '.[{extras}]' -c constraints.txt"
            ) from None
        raise
    _loaded.add(name)
    with quiet_startup():  # listing devices is what runs cuInit
        engine = adapter.load(name, device)
        # Keras' set_random_seed, which every trainer calls, imports TensorFlow on every engine when it is
        # installed (to seed it too): let TensorFlow start here, where its start-up lines are held back.
        if importlib.util.find_spec("tensorflow") is not None:
            importlib.import_module("tensorflow")
    return engine


@contextlib.contextmanager
def quiet_startup() -> Iterator[None]:
    """Point the process' stderr descriptor at /dev/null while a framework starts, unless ``STARTUP_LOGS_ENV``
    is set (``--startup-logs``).

    TensorFlow's C++ runtime writes its start-up lines (oneDNN notes; "Could not find cuda drivers" and a
    failed cuInit on machines without a GPU) straight to descriptor 2, before its log-level setting is read,
    so neither ``sys.stderr`` nor ``TF_CPP_MIN_LOG_LEVEL`` can hold them back. Errors still surface: they are
    Python exceptions, raised after the descriptor is restored.
    """
    if os.environ.get(STARTUP_LOGS_ENV):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_no_other_engine(name: str, keras_backend: str | None) -> None:
    other = next(iter(_loaded), None)
    if other is None and keras_backend is not None and "keras" in sys.modules:
        other = sys.modules["keras"].backend.backend()  # Keras 3 imported by someone else
        other = None if other == keras_backend else other
    if other is not None and other != name:
        raise BackendError(
            f"Keras already runs on the {other} engine in this process; each engine needs its own process "
            f"(run the {name} engine in a new one, e.g. python -m experiments.keras_mnist --engine {name})"
        )


def _set_environment(name: str, keras_backend: str | None, device: str) -> None:
    if not os.environ.get(STARTUP_LOGS_ENV):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's info and warning lines, unless asked for
    if keras_backend is None:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    else:
        os.environ["KERAS_BACKEND"] = keras_backend
    if name == "torch":
        os.environ["KERAS_TORCH_DEVICE"] = "cuda" if device == "gpu" else "cpu"
    if name == "jax" and device == "cpu" and "jax" not in sys.modules:
        os.environ["JAX_PLATFORMS"] = "cpu"


def no_gpu(name: str, seen: str) -> BackendError:
    return BackendError(f"--device gpu: the {name} engine sees no GPU ({seen}); run with --device cpu")

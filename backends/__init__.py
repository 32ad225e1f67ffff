"""Backend registry: ``keras``, ``torch``, ``jax``. Heavy frameworks are imported only by the backend used.

    >>> sorted(BACKENDS)
    ['jax', 'keras', 'torch']
"""

from __future__ import annotations

import importlib

from backends.base import Backend, BackendError
from backends.keras_backend.engine import ENGINES as KERAS_ENGINE_TABLE

# name -> (module, class, pip extra, framework packages whose absence means "install the extra")
BACKENDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "keras": ("backends.keras_backend", "KerasBackend", "keras", ("tensorflow", "keras", "tf_keras")),
    "torch": ("backends.torch_backend", "TorchBackend", "torch", ("torch",)),
    "jax": ("backends.jax_backend", "JaxBackend", "jax", ("jax", "jaxlib", "optax")),
}
BACKEND_NAMES = tuple(BACKENDS)
KERAS_ENGINES = tuple(KERAS_ENGINE_TABLE)  # the default (tensorflow) first
# How each row's hand-written loop runs, by default and at all: what its users write first (the post's eager
# GradientTape loop; JAX's jitted step), and the other execution where the framework offers one.
LOOP_EXECS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("keras", "tensorflow"): ("eager", "compiled"),  # compiled: the same step under tf.function
    ("keras", "tf_keras"): ("eager", "compiled"),
    ("keras", "jax"): ("compiled", "eager"),  # eager: the same stateless step without jax.jit
    ("keras", "torch"): ("eager",),  # Keras' torch engine has no compiled custom-loop recipe
    ("torch", None): ("eager", "compiled"),  # compiled: the step's forward and backward under torch.compile
    ("jax", None): ("compiled", "eager"),  # eager: the step under jax.disable_jit
}


def loop_execs(backend: str, engine: str | None) -> tuple[str, ...]:
    """The loop executions the row supports, its default first."""
    if backend == "keras" and engine is None:
        engine = "tensorflow"
    return LOOP_EXECS[(backend, engine)]


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from: {', '.join(BACKEND_NAMES)}")
    module_name, class_name, extra, packages = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in packages + ("torch", "jax"):
            raise BackendError(
                f"the {name} backend needs the Python package {exc.name!r}, which is not installed; "
                f"install it with: pip install -e '.[{extra}]' -c constraints.txt"
            ) from None
        raise
    return getattr(module, class_name)


def get_backend(name: str, device: str = "cpu", engine: str | None = None) -> Backend:
    """An instance of backend ``name``; for Keras, ``engine`` picks the engine (default tensorflow)."""
    cls = backend_class(name)
    if name == "keras" and engine is None:
        engine = "tensorflow"
    return cls(device=device, engine=engine)


__all__ = ["BACKENDS", "BACKEND_NAMES", "KERAS_ENGINES", "LOOP_EXECS", "loop_execs", "Backend", "BackendError", "backend_class", "get_backend"]

"""The bench's yardsticks: the matrix-multiply floor and the reference loops.

``gemms`` lists the step's matrix multiplies (framework-free). The rest is one module per framework, imported
only in the process that runs that framework:

- ``tensorflow_ref``: the floor under ``tf.function``; the post's Keras loop as written.
- ``torch_ref``: the floor as plain ``torch.mm``; the loop of a PyTorch tutorial.
- ``jax_ref``: the floor under ``jax.jit``; the loop of a JAX + optax tutorial.
- ``keras_jax_ref``: the loop of Keras' guide "Writing a training loop from scratch in JAX".

Each floor module has ``floor(gemms, device) -> run(steps)``, and each reference module
``reference(backend, spec, head, data) -> run(steps)`` and ``DESCRIPTION``. A ``run`` does ``steps`` steps and
returns only when their device work is done, so a wall-clock reading around it is complete.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterator
from types import ModuleType

# (backend, engine) -> (floor module, reference module or None): the floor is in the framework that runs the math.
MODULES = {
    ("keras", "tensorflow"): ("tensorflow_ref", "tensorflow_ref"),
    ("keras", "tf_keras"): ("tensorflow_ref", "tensorflow_ref"),
    ("keras", "jax"): ("jax_ref", "keras_jax_ref"),
    ("keras", "torch"): ("torch_ref", None),
    ("torch", None): ("torch_ref", "torch_ref"),
    ("jax", None): ("jax_ref", "jax_ref"),
}


def modules(backend: str, engine: str | None) -> tuple[ModuleType, ModuleType | None]:
    """The floor and reference modules for a backend (and Keras engine), imported now."""
    floor, reference = MODULES[(backend, engine)]
    return _load(floor), _load(reference) if reference else None


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def batch_slices(n_train: int, batch_size: int) -> Iterator[slice]:
    """The reference loops' batches: consecutive slices in file order, as ``Dataset.batch`` gives, epoch after
    epoch (the partial last batch dropped, as the backends do)."""
    return itertools.cycle([slice(i * batch_size, (i + 1) * batch_size) for i in range(n_train // batch_size)])

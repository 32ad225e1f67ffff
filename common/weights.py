"""Canonical initial weights: drawn once in numpy from the spec seed and loaded into every backend.

Layout (Keras' own): ``dense_{i}.kernel`` of shape (fan_in, fan_out) and ``dense_{i}.bias`` of shape
(fan_out,), i = 0..hidden_layers, float32. Kernels ~ Normal(0, init_stddev) as Keras'
``RandomNormal(stddev=0.05)``; biases zero. The default spec gives 1,195,018 parameters.

    >>> from common.spec import Spec
    >>> parameter_count(initial_weights(Spec()))
    1195018
"""

from __future__ import annotations

import os

import numpy as np

from common.spec import Spec

Weights = dict[str, np.ndarray]


def layer_name(layer: int) -> str:
    """The canonical name of Dense layer ``layer`` (0 is the first hidden layer): ``dense_{layer}``."""
    return f"dense_{layer}"


def param_name(layer: int, part: str) -> str:
    """The canonical name of layer ``layer``'s ``kernel`` or ``bias``: ``dense_{layer}.{part}``."""
    return f"{layer_name(layer)}.{part}"


def layer_names(spec: Spec) -> list[str]:
    """``dense_0`` .. ``dense_{hidden_layers}``; the last one is the output layer."""
    return [layer_name(i) for i in range(spec.hidden_layers + 1)]


def canonical_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    sizes = spec.layer_sizes
    shapes: dict[str, tuple[int, ...]] = {}
    for name, fan_in, fan_out in zip(layer_names(spec), sizes[:-1], sizes[1:]):
        shapes[f"{name}.kernel"] = (fan_in, fan_out)
        shapes[f"{name}.bias"] = (fan_out,)
    return shapes


def initial_weights(spec: Spec) -> Weights:
    """Kernels drawn in layer order from ``default_rng(spec.seed)``; the same on every machine."""
    rng = np.random.default_rng(spec.seed)
    weights: Weights = {}
    for name, shape in canonical_shapes(spec).items():
        if name.endswith(".kernel"):
            weights[name] = rng.normal(0.0, spec.init_stddev, size=shape).astype(np.float32)
        else:
            weights[name] = np.zeros(shape, dtype=np.float32)
    return weights


def parameter_count(weights: Weights) -> int:
    return int(sum(w.size for w in weights.values()))


def check_layout(spec: Spec, weights: Weights) -> None:
    """Raise ``ValueError`` naming the first tensor whose name or shape is not canonical."""
    expected = canonical_shapes(spec)
    if set(weights) != set(expected):
        raise ValueError(f"weight names {sorted(weights)} differ from the canonical {sorted(expected)}")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(weights[name].shape)}, canonical is {shape}")


def save_weights(path: str | os.PathLike, weights: Weights) -> None:
    np.savez(path, **weights)


def load_weights(path: str | os.PathLike, spec: Spec) -> Weights:
    with np.load(path, allow_pickle=False) as npz:
        weights = {name: npz[name].astype(np.float32) for name in npz.files}
    check_layout(spec, weights)
    return weights

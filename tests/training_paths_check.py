"""The training paths' check, shared by every backend and Keras engine: each fit and loop, run by its own trainer.

``measure(backend, mnist)`` runs every training path of the backend's row — ``fit``, and the loop in each execution
``backends.LOOP_EXECS`` lists for it — from the canonical weights on the vendored subset, with dropout off
and with the spec's rate, and reads one training step's dropout masks where a path draws its own. The test
file holds the figures to the float64 reference and to each other. The Keras engines that need a process of
their own run the same measurement there, with the dropout check beside it, and print both:

    python tests/training_paths_check.py jax OUT_DIR   # Keras 3 on JAX: JSON on stdout, final weights in OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import dropout_check
import numpy as np
from tests_support import TEST_SUBSET

from backends import get_backend, loop_execs
from common.data import Dataset, Mnist, epoch_batches, load_mnist, prepare
from common.results import backend_label
from common.spec import INPUT_DIM, NUM_CLASSES, Spec
from common.variants import VARIANTS
from common.weights import Weights, canonical_shapes, initial_weights, param_name

# Dropout off, the same batches in file order, unit-scaled inputs (well-conditioned steps). Adam runs with
# epsilon 0.1 here, not the post's 1e-7. With 1e-7 (and still with 1e-3), weights whose gradient is tiny get
# the update g / (|g| + eps), which amplifies fp32's rounding of g (and of ReLU borderline cases) into
# differences of ~lr: fp32 frameworks drift from float64 by 1-2% of the loss within 20 steps although each
# step is right (measured with JAX, PyTorch and Keras alike). With 0.1 the update stays Lipschitz in the
# gradient at fp32 resolution, bias correction and both moments still act, and the two epsilon placements
# still differ by far more than the tolerance. The exact Adam formula with the post's epsilon is checked
# step by step in each backend's own tests.
TRAIN_SPEC = Spec(drop_rate=0.0, input_scale="unit", data_order="sequential", train_size=2000, test_size=100,
                  epochs=1, epsilon=1e-1)
# The largest relative step-loss difference and the largest weight difference (relative to the largest
# |weight| of the model) allowed after 20 steps from the canonical weights, fp32 against float64 and fp32
# against fp32. Measured on this project's CPU: losses <= 2.1e-7, weights <= 6e-7 (SGD and Adam alike).
TOLERANCE = {"sgd": {"loss": 2e-6, "weights": 5e-6}, "adam": {"loss": 2e-6, "weights": 5e-6}}
# Adam's epsilon placement (common/reference.py): Keras uses the epsilon-hat form, PyTorch and optax add
# epsilon after bias correction. Each backend is held to the reference with its own placement.
EPSILON_FORM = {"keras": "hat", "torch": "corrected", "jax": "corrected"}

# The paths train with Adam on the logits head, the loss every backend computes alike (the heads' losses and
# gradients are checked apart, in test_parity.py). Without dropout: the 20 steps of TRAIN_SPEC, against the
# reference. With the spec's rate: one epoch of the whole vendored subset, 30 batches of 100 (the first 20 are
# TRAIN_SPEC's).
PARITY_STEPS = TRAIN_SPEC.train_size // TRAIN_SPEC.batch_size
ON_SPEC = TRAIN_SPEC.replace(drop_rate=Spec().drop_rate, train_size=None)
# The un-jitted JAX loops dispatch every operation on its own (~0.1-0.2 s a step on a 2-core CPU, after a first
# step of 5-9 s that compiles each operation apart): they take the first few steps only, as do the loops that
# match no other path with dropout on (their second run, for determinism, too).
FEW_STEPS = 3
UNJITTED = {("jax", "loop/eager"), ("keras/jax", "loop/eager")}

# The loops that compute fit's numbers exactly (same weights, batches, dropout seeds and loss), per row: Keras 3
# draws every mask from a Dropout layer's SeedGenerator state (keras/src/random/seed_generator.py), the same
# in a graph and eagerly. The others: PyTorch's eager loop draws its masks from torch's generator, and torch.compile's fit from inductor's
# own random kernels (torch/_inductor/fx_passes/replace_random.py; ``config.fallback_random`` is off); tf_keras'
# Dropout runs TF1 stateful random ops seeded by ``RandomGenerator.make_legacy_seed``
# (tf_keras/src/backend.py), which a graph traces once and an eager step calls anew, with the next seed, at
# every step; the un-jitted JAX loops draw fit's masks but round differently (op by op against XLA's fused
# kernels), which Adam carries along.
SAME_AS_FIT = {
    "keras/tensorflow": ("loop/eager", "loop/compiled"),
    "keras/tf_keras": ("loop/compiled",),
    "keras/jax": ("loop/compiled",),
    "keras/torch": ("loop/eager",),
    "torch": ("loop/compiled",),
    "jax": ("loop/compiled",),
}
# The paths that draw masks of their own, against fit: each one's share of kept units is read in a step.
OWN_MASKS = {"torch": "loop/eager", "keras/tf_keras": "loop/eager"}


def paths(backend: str, engine: str | None) -> list[str]:
    """The row's training paths: ``fit``, then ``loop/<execution>`` in ``backends.LOOP_EXECS``' order."""
    return ["fit"] + [f"loop/{execution}" for execution in loop_execs(backend, engine)]


def path_spec(spec: Spec, path: str) -> tuple[Spec, str]:
    """``spec`` for ``path`` (its loop execution; None for fit) and the mode of its logits variant."""
    mode, _, execution = path.partition("/")
    return spec.replace(loop_exec=execution or None), f"{mode}_logits"


def run(backend: Any, spec: Spec, path: str, data: Dataset, weights: Weights, batches: np.ndarray):
    """(step losses, final weights) of ``path``'s own trainer over ``batches``."""
    spec, variant = path_spec(spec, path)
    trainer = backend.make_trainer(spec, VARIANTS[variant], data, weights)
    return np.asarray(trainer.run_epoch(batches), np.float64), trainer.weights()


def measure(backend: Any, mnist: Mnist) -> dict[str, Any]:
    """Every path of ``backend``'s row: ``off`` (losses without dropout) and ``off_weights`` (the final weights),
    ``on`` (losses with the spec's rate), ``again`` (a second dropout-on run where no loop matches fit's numbers,
    for determinism), and ``masks`` (one training step's kept share, ``OWN_MASKS``)."""
    engine = backend.engine if backend.name == "keras" else None
    label = backend_label(backend.name, engine)
    data, weights = prepare(ON_SPEC, mnist), initial_weights(ON_SPEC)
    batches = epoch_batches(ON_SPEC, 0, len(data.x_train))  # TRAIN_SPEC's 20 batches, then 10 more
    figures: dict[str, Any] = {"paths": {}, "masks": {}}
    for path in paths(backend.name, engine):
        matches_fit = path == "fit" or path in SAME_AS_FIT[label]
        off_batches = batches[:FEW_STEPS if (label, path) in UNJITTED else PARITY_STEPS]
        off, off_weights = run(backend, TRAIN_SPEC, path, data, weights, off_batches)
        on, _ = run(backend, ON_SPEC, path, data, weights, batches if matches_fit else batches[:FEW_STEPS])
        again = None if matches_fit else run(backend, ON_SPEC, path, data, weights, batches[:FEW_STEPS])[0].tolist()
        figures["paths"][path] = {"off": off.tolist(), "off_weights": off_weights, "on": on.tolist(), "again": again}
    if label in OWN_MASKS:
        figures["masks"] = {path: first_layer_mask(backend, path) for path in ("fit", OWN_MASKS[label])}
    return figures


# --- one training step's masks ------------------------------------------------------------------------------
def mask_readout(spec: Spec) -> tuple[Weights, Dataset]:
    """Weights and a batch under which one training step writes the first hidden layer's dropout mask into the
    first kernel.

    Row b of the batch is the unit vector e_b, and the first kernel is zero, so only its row b moves, by the
    gradient x_b^T delta_0 = delta_0[b]; its bias is 1, so every first-layer unit is active (ReLU output 1).
    The other kernels average their inputs (1/units everywhere; the output layer into class 0 only) and every
    label is class 1, so the gradient reaching each unit is positive: delta_0[b, j] is non-zero exactly where
    dropout kept unit j of row b. Adam moves a weight exactly where its gradient is non-zero (m = v = 0
    elsewhere), so the updated first kernel's non-zero entries are the step's mask.
    """
    weights: Weights = {}
    for name, shape in canonical_shapes(spec).items():
        weights[name] = np.zeros(shape, np.float32)
    weights[param_name(0, "bias")][:] = 1.0
    for layer in range(1, spec.hidden_layers):
        weights[param_name(layer, "kernel")][:] = 1.0 / spec.hidden_units
    weights[param_name(spec.hidden_layers, "kernel")][:, 0] = 1.0 / spec.hidden_units
    x = np.eye(spec.batch_size, INPUT_DIM, dtype=np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[np.ones(spec.batch_size, int)]
    return weights, Dataset(x_train=x, y_train=y, x_test=x, y_test=y, data_sha256="mask readout")


def first_layer_mask(backend: Any, path: str, spec: Spec = Spec()) -> dict[str, Any]:
    """The first hidden layer's dropout mask in ``path``'s first training step (the post's spec), as the share
    of units kept, the number of draws, and the mask's rows packed into bits (to compare paths)."""
    weights, data = mask_readout(spec)
    _, after = run(backend, spec, path, data, weights, np.arange(spec.batch_size, dtype=np.int32)[None])
    mask = after[param_name(0, "kernel")][: spec.batch_size] != 0
    return {"kept_share": float(mask.mean()), "draws": int(mask.size), "bits": np.packbits(mask).tobytes().hex()}


# --- comparing trajectories -----------------------------------------------------------------------------------
def trajectory_mismatches(a: str, b: str, runs: dict[str, tuple[np.ndarray, Weights]], limits: dict[str, float],
                          steps: int | None = None) -> list[str]:
    """How runs ``a`` and ``b`` (step losses, final weights) differ beyond ``limits``, one message per slip.

    Losses: the largest relative difference over the first ``steps`` steps (all of them by default).
    Weights: the largest difference, relative to the largest weight of the model (~0.26): biases start at zero
    and their gradients are cancelling sums over the batch, which fp32 reduces to ~1e-3 of their own size
    (PyTorch's bias reduction, measured), so a per-tensor scale would flag rounding; a wrong update of any
    tensor (missing, doubled, transposed) is orders of magnitude above this bound.
    """
    (losses_a, weights_a), (losses_b, weights_b) = runs[a], runs[b]
    if steps is None:
        assert len(losses_a) == len(losses_b), f"{a} ran {len(losses_a)} steps, {b} {len(losses_b)}"
    losses_a, losses_b = np.asarray(losses_a[:steps]), np.asarray(losses_b[:steps])
    failures = []
    loss_diff = float(np.max(np.abs(losses_a - losses_b) / np.abs(losses_b)))
    if not loss_diff <= limits["loss"]:
        step = int(np.argmax(np.abs(losses_a - losses_b)))
        failures.append(f"{a} vs {b}: step losses differ by {loss_diff:.3g} relative (worst at step {step})")
    if weights_a is not None and weights_b is not None:
        weight_diff = max(float(np.max(np.abs(weights_a[k] - weights_b[k]))) for k in weights_b) / max(
            float(np.abs(w).max()) for w in weights_b.values())
        if not weight_diff <= limits["weights"]:
            failures.append(f"{a} vs {b}: final weights differ by {weight_diff:.3g} of the largest weight")
    return failures


def main(engine: str, out_dir: Path) -> None:
    """Keras on ``engine``: print the dropout check's and this check's figures as one JSON object; write each
    path's dropout-off final weights to ``OUT_DIR/<path>.npz`` (``loop/eager`` -> ``loop-eager.npz``)."""
    backend = get_backend("keras", engine=engine)
    figures = {"dropout": dropout_check.measure(backend), **measure(backend, load_mnist(TEST_SUBSET))}
    for path, run_figures in figures["paths"].items():
        np.savez(out_dir / f"{path.replace('/', '-')}.npz", **run_figures.pop("off_weights"))
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

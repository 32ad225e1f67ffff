"""Parity of the training paths themselves: every fit and loop of every backend and Keras engine trains with
dropout on, and without it follows the float64 reference.

The parity suite holds each backend's model, losses, gradients and dropout layers to the reference; here each
*training path* — ``fit``, and the loop in every execution ``backends.LOOP_EXECS`` lists (eager, compiled) —
is run by its own trainer from the canonical weights on the vendored subset, Adam on the logits head
(``training_paths_check``):

1. without dropout, its 20 step losses and final weights equal the reference's (Adam with the backend's own
   epsilon placement); with the spec's rate, every step's loss leaves that trajectory — so a path that
   steps in inference mode, or a compiled step that traced dropout away, fails by name;
2. where fit and a loop compute the same thing (same weights, batches, dropout seeds and loss), their step
   losses are identical with dropout on over one epoch of the subset (30 batches of 100);
3. where they draw their masks differently (PyTorch's eager loop against ``torch.compile``'s fit, tf_keras'
   eager loop against its graphs), both keep the right share of units in a training step instead;
4. every dropout-on path is reproduced by a second trainer from the same seed (determinism).

Keras on TensorFlow, PyTorch and JAX run in this process; Keras on jax, torch and tf_keras in a process each,
which also runs the parity suite's dropout check for its engine. A failure names the backend, engine and path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dropout_check
import numpy as np
import pytest
from training_paths_check import (EPSILON_FORM, FEW_STEPS, ON_SPEC, OWN_MASKS, PARITY_STEPS, SAME_AS_FIT,
                                  TOLERANCE, TRAIN_SPEC, UNJITTED, measure, trajectory_mismatches)

from backends import KERAS_ENGINES, LOOP_EXECS, get_backend
from common.data import epoch_batches, prepare
from common.reference_trainer import ReferenceTrainer
from common.results import backend_label
from common.spec import Spec
from common.weights import initial_weights

ROWS = [backend_label(backend, engine) for backend, engine in LOOP_EXECS]
# Keras engines other than TensorFlow need a process each (Keras reads its engine once per process).
OTHER_KERAS_ENGINES = [engine for engine in KERAS_ENGINES if engine != "tensorflow"]
IN_PROCESS = {"keras/tensorflow": ("keras", "tensorflow"), "torch": ("torch", None), "jax": ("jax", None)}


@pytest.fixture(scope="module")
def figures(subset_mnist, tmp_path_factory):
    """``training_paths_check.measure`` of every row, keyed by its label; the other engines' processes run
    side by side with this one's measurements and add ``dropout`` (``dropout_check.measure``)."""
    script = Path(__file__).with_name("training_paths_check.py")
    children = {}
    for engine in OTHER_KERAS_ENGINES:
        out = tmp_path_factory.mktemp(f"keras-{engine}")
        children[engine] = out, subprocess.Popen([sys.executable, str(script), engine, str(out)],
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    found = {label: measure(get_backend(name, engine=engine), subset_mnist)
             for label, (name, engine) in IN_PROCESS.items()}
    for engine, (out, process) in children.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, f"keras/{engine}: the training-path measurement failed:\n{stderr[-3000:]}"
        found[f"keras/{engine}"] = json.loads(stdout)
        for path, run in found[f"keras/{engine}"]["paths"].items():
            with np.load(out / f"{path.replace('/', '-')}.npz") as weights:
                run["off_weights"] = dict(weights)
    return found


@pytest.fixture(scope="module")
def references(subset_mnist):
    """The float64 reference over TRAIN_SPEC's batches, per epsilon placement: its step losses, and its weights
    after the first FEW_STEPS and after all PARITY_STEPS steps."""
    data = prepare(ON_SPEC, subset_mnist)
    batches = epoch_batches(ON_SPEC, 0, len(data.x_train))
    found = {}
    for form in sorted(set(EPSILON_FORM.values())):
        ref = ReferenceTrainer(TRAIN_SPEC, "logits", data.x_train, data.y_train, initial_weights(TRAIN_SPEC),
                               epsilon_form=form)
        first = ref.run_epoch(batches[:FEW_STEPS])
        early = ref.weights()
        rest = ref.run_epoch(batches[FEW_STEPS:PARITY_STEPS])
        found[form] = {"losses": np.concatenate([first, rest]), FEW_STEPS: early, PARITY_STEPS: ref.weights()}
    return found


@pytest.mark.parametrize("engine", OTHER_KERAS_ENGINES)
def test_dropout_on_the_other_keras_engines(figures, engine):
    """The parity suite's dropout check (test_parity.py), run in the engine's own process."""
    found = dropout_check.failures(figures[f"keras/{engine}"]["dropout"])
    assert not found, f"keras/{engine}: " + "; ".join(found)


@pytest.mark.parametrize("label", ROWS)
def test_without_dropout_every_path_follows_the_reference(figures, references, label):
    """Every step's loss and the final weights, against the reference with the backend's epsilon placement."""
    form = EPSILON_FORM[label.split("/")[0]]
    failures = []
    for path, run in figures[label]["paths"].items():
        steps = len(run["off"])
        reference = (references[form]["losses"][:steps], references[form][steps])
        name = f"{label} {path} (dropout off)"
        runs = {name: (np.asarray(run["off"]), run["off_weights"]), f"numpy/{form}": reference}
        failures += trajectory_mismatches(name, f"numpy/{form}", runs, TOLERANCE["adam"])
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("label", ROWS)
def test_with_dropout_every_path_leaves_the_dropout_off_trajectory(figures, label):
    """At every step the dropout-on loss differs from the dropout-off one by more than the parity tolerance
    (measured: by 0.15% or more, over 700 times the tolerance), so no step of the path ran without dropout."""
    failures = []
    for path, run in figures[label]["paths"].items():
        steps = min(len(run["off"]), len(run["on"]))
        on, off = np.asarray(run["on"][:steps]), np.asarray(run["off"][:steps])
        same = np.flatnonzero(np.abs(on - off) <= TOLERANCE["adam"]["loss"] * np.abs(off))
        if same.size:
            failures.append(f"{label} {path}: with dropout at rate {ON_SPEC.drop_rate} the step losses equal the "
                            f"dropout-off ones at steps {same.tolist()} of {steps}: the path steps without dropout")
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("label", ROWS)
def test_fit_and_loop_take_identical_steps_with_dropout_on(figures, label):
    """Where fit and a loop compute the same thing (``SAME_AS_FIT``), their step losses — hence their epoch costs
    — are identical over one epoch of the subset with dropout on. The un-jitted JAX loops draw fit's masks too,
    and round op by op: they stay within the parity tolerance over their few steps."""
    runs = figures[label]["paths"]
    fit = np.asarray(runs["fit"]["on"])
    assert len(fit) == 30, f"{label} fit: {len(fit)} steps, not one epoch of the subset (3,000 rows)"
    failures = []
    for path in SAME_AS_FIT[label]:
        loop = np.asarray(runs[path]["on"])
        if not np.array_equal(fit, loop):
            step = int(np.flatnonzero(fit != loop)[0])
            failures.append(f"{label}: fit and {path} differ with dropout on, first at step {step}: epoch cost "
                            f"{fit.mean():.9g} vs {loop.mean():.9g}")
    for path in runs:
        if (label, path) in UNJITTED:
            pair = {"fit": (fit, None), path: (np.asarray(runs[path]["on"]), None)}
            failures += [f"{label}: {slip}" for slip in
                         trajectory_mismatches("fit", path, pair, TOLERANCE["adam"], steps=FEW_STEPS)]
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("label", sorted(OWN_MASKS))
def test_paths_that_draw_their_own_masks_keep_the_right_share(figures, label):
    """PyTorch's eager loop and ``torch.compile``'s fit (inductor's own random kernels), and tf_keras' eager loop
    and its graphs (a new legacy seed at every eager step), draw different masks from the same seed, so their
    numbers differ with dropout on. Each still drops units as the spec says: in one training step, the share of
    first-layer units kept is within the dropout check's bound of 1 - rate (51,200 draws)."""
    masks = figures[label]["masks"]
    keep, failures = 1.0 - Spec().drop_rate, []
    for path, mask in masks.items():
        bound = dropout_check.kept_share_bound(Spec(), mask["draws"])
        if not abs(mask["kept_share"] - keep) <= bound:
            failures.append(f"{label} {path}: a training step keeps {mask['kept_share']:.4f} of the first layer's "
                            f"units, expected {keep} +- {bound:.4f}")
    if masks["fit"]["bits"] == masks[OWN_MASKS[label]]["bits"]:
        failures.append(f"{label}: fit and {OWN_MASKS[label]} now draw the same masks: they may compute the same "
                        "thing, which SAME_AS_FIT would then check exactly")
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("label", ROWS)
def test_same_seed_gives_identical_step_losses(figures, label):
    """A second trainer from the same seed repeats a dropout-on path exactly: for fit and the loops that match it,
    each other (the test above); for the others, a second run of their first steps here."""
    failures = []
    for path, run in figures[label]["paths"].items():
        if run["again"] is not None and run["again"] != run["on"][:FEW_STEPS]:
            failures.append(f"{label} {path}: the same seed gave step losses {run['on'][:FEW_STEPS]}, then "
                            f"{run['again']}")
    assert not failures, "; ".join(failures)


def test_adam_epsilon_placement_explains_the_keras_gap(figures, references):
    """Keras (epsilon-hat) and PyTorch/optax (epsilon after correction) differ by the placement, no more."""
    keras_losses = np.asarray(figures["keras/tensorflow"]["paths"]["loop/eager"]["off"])
    torch_losses = np.asarray(figures["torch"]["paths"]["loop/eager"]["off"])
    hat, corrected = references["hat"]["losses"], references["corrected"]["losses"]
    placement = np.abs(hat - corrected) / corrected
    frameworks = np.abs(keras_losses - torch_losses) / torch_losses
    # The placement is visible at this epsilon (so the per-form checks above are not vacuous) ...
    assert placement.max() > 10 * TOLERANCE["adam"]["loss"]
    # ... and the framework gap is that placement effect, step by step, up to fp32 noise.
    assert np.allclose(frameworks, placement, rtol=0.05, atol=TOLERANCE["adam"]["loss"])

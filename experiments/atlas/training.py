"""The atlas' training stage: the post's MLP trained with every cell that can train, through the shared runner.

A trained cell is the post's model (784-512x4-10, dropout, Adam, the spec's data and seeds) whose loss is the
cell's call on the cell's head: the backend's model ends in its logits, and the loss it is given
(``common.training.GivenLoss``, built here by ``given_loss``) applies the cell's head to them and then the call,
exactly as the probe did (``experiments.atlas.probe``). Every lookup a library makes behind a probability
tensor (Keras' ``_keras_logits``, the op that produced a tensor in a traced graph) reads the tensor alone, so a
head applied as the loss' first operation is found as one at the end of the model would be. The cell is
trained in its own execution: ``eager`` cells in the backend's eager loop, ``graph`` cells in its compiled loop
(``tf.function``, ``jax.jit``); Keras on JAX's cells, probed op by op, train under ``jax.jit``
(``GROUP_LOOP_EXEC``). Raw TensorFlow's calls train a Keras model on the TensorFlow engine, as their users write
them. Targets: one-hot rows, or for a call that takes integer labels (``targets == "index"``)
their argmax, in the framework's own integer type (each cells module's ``index_targets``).

Which cells cannot train: a cell whose probe path is ``error`` (the call raises on every probe input: there
is no loss). Every other cell trains, whatever its path, and its outcome says what came of it.

Every run is an ordinary record in ``DIR/runs.jsonl`` (``experiments.harness.runner``; the spec's ``loss_cell``
names the cell and keys the run with the input, seed and execution), made by one child process per framework
or Keras engine, seed, input and chunk of cells (``experiments.atlas.train_child``), run by the sweep's
executors (``experiments.harness.sweep``): resumable, one process per framework like every other study.

Stages (``experiments.atlas.command``):
  quick  1 epoch of the first 6,000 / 2,000 images, raw and unit inputs, seeds 777-779, every trainable cell;
  full   the post's spec (15 epochs, all images, seed 777), for the cells ``full_selection`` picks from the
         quick records: on raw pixels every cell whose quick raw-pixel runs did not all end stuck, failed or
         diverged at step 0; on unit pixels every cell whose probe path is ``double_softmax`` (does the softmax
         applied twice train in 15 epochs, and how far behind the logits?) and, as its baseline, the first
         categorical cell of its group and execution whose path is ``logits``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common.results import record_key
from common.spec import Spec
from common.training import GivenLoss
from common.variants import VARIANTS
from experiments.atlas.probe import Cell
from experiments.harness.report import classify
from experiments.harness.runner import PlannedRun
from experiments.harness.sweep import Unit

QUICK = {"epochs": 1, "train_size": 6000, "test_size": 2000}
QUICK_SEEDS = (777, 778, 779)
QUICK_INPUTS = ("raw", "unit")
FULL_SEEDS = (777,)
#: The probe paths with no loss to train, and why.
UNTRAINABLE = {"error": "the call raises on the probe inputs: there is no loss to train"}
#: The backend (and Keras engine) that trains each atlas group's cells.
TRAINED_BY: dict[str, tuple[str, str | None]] = {
    "keras/tensorflow": ("keras", "tensorflow"), "keras/tf_keras": ("keras", "tf_keras"),
    "keras/jax": ("keras", "jax"), "keras/torch": ("keras", "torch"), "torch": ("torch", None),
    "jax": ("jax", None), "tensorflow": ("keras", "tensorflow"),
}
LOOP_EXEC = {"eager": "eager", "graph": "compiled"}  # a cell's exec -> the loop execution that trains it
#: Groups whose cells train in one loop execution whatever their probe's: Keras on JAX is probed op by op (Keras
#: offers no traced loss call there) but computes the same program under jax.jit, as its fit and the project's
#: default loop run it; op by op, a step is ~20 times slower.
GROUP_LOOP_EXEC = {"keras/jax": "compiled"}
VARIANT = VARIANTS["loop_logits"]  # the model ends in its logits; the given loss applies the cell's head
CHILD_MODULE = "experiments.atlas.train_child"
#: Cells per child process: a quick-stage process then trains for 2 (Keras on TensorFlow: ~4 s a run) to 15 minutes
#: (JAX's eager loop: ~20 s a run), measured on 2 cores.
CELLS_PER_UNIT = 40


@dataclasses.dataclass(frozen=True)
class TrainCell:
    """A cell as the training stage needs it: its id, its atlas group, how it runs, its probe path and family."""

    cell: str
    group: str
    exec: str
    path: str
    family: str

    @classmethod
    def of(cls, record: dict[str, Any]) -> TrainCell:
        group = f"{record['framework']}/{record['engine']}" if record["engine"] else record["framework"]
        return cls(record["cell"], group, record["exec"], record["loss_path"], record["family"])


def cell_spec(base: Spec, cell: str, exec_: str, input_scale: str, seed: int) -> Spec:
    group = cell.split(" | ", 1)[0]
    loop_exec = GROUP_LOOP_EXEC.get(group, LOOP_EXEC[exec_])
    return base.replace(seed=seed, input_scale=input_scale, loop_exec=loop_exec, loss_cell=cell)


def plan(base: Spec, cells: Iterable[tuple[str, str]], input_scale: str, seed: int) -> list[PlannedRun]:
    """The runs of one child: each (cell id, exec) on ``input_scale`` and ``seed``, in the given order; the parent
    and the child plan with this one function, so their run keys agree."""
    return [PlannedRun(cell_spec(base, cell, exec_, input_scale, seed), VARIANT) for cell, exec_ in cells]


@dataclasses.dataclass(frozen=True)
class Job:
    """Cells of one group trained on one input and seed (cut into units of ``CELLS_PER_UNIT``)."""

    group: str
    input_scale: str
    seed: int
    cells: tuple[TrainCell, ...]


def trainable(probe_records: list[dict[str, Any]]) -> list[TrainCell]:
    """The cells that can train, in atlas order (one per cell id: the path is the cell's, not the input's)."""
    cells = {r["cell"]: r for r in probe_records}
    return [TrainCell.of(r) for r in cells.values() if r["loss_path"] not in UNTRAINABLE]


def quick_jobs(cells: list[TrainCell], seeds: Iterable[int], inputs: Iterable[str]) -> list[Job]:
    """Every cell on every input and seed, seed first (an interrupted sweep has every cell's first seed)."""
    return [Job(group, input_scale, seed, tuple(c for c in cells if c.group == group))
            for seed in seeds for input_scale in inputs for group in dict.fromkeys(c.group for c in cells)]


def full_selection(probe_records: list[dict[str, Any]], quick: list[dict[str, Any]]) -> dict[str, list[TrainCell]]:
    """``{input: cells}`` of the full stage (module docstring) from the probe records and the quick records."""
    cells = {c.cell: c for c in trainable(probe_records)}
    raw: dict[str, list[dict[str, Any]]] = {}
    for record in quick:
        if record["input_scale"] == "raw":
            raw.setdefault(record["spec"]["loss_cell"], []).append(record)
    chosen_raw = [cells[cell] for cell, runs in raw.items() if cell in cells and not all(map(_dead_end, runs))]
    double = [c for c in cells.values() if c.path == "double_softmax"]
    baselines = [next((b for b in cells.values() if b.group == c.group and b.exec == c.exec
                       and b.path == "logits" and b.family == "categorical"), None) for c in double]
    return {"raw": _atlas_order(chosen_raw, cells),
            "unit": _atlas_order(double + [b for b in baselines if b is not None], cells)}


def _dead_end(record: dict[str, Any]) -> bool:
    """A quick run that says the full spec would teach nothing: stuck, failed, or diverged at its first step."""
    outcome = classify(record)
    return outcome in ("stuck", "failed") or (outcome == "diverged" and record["first_nonfinite_step"] == 0)


def _atlas_order(chosen: list[TrainCell], cells: dict[str, TrainCell]) -> list[TrainCell]:
    wanted = {c.cell for c in chosen}
    return [c for c in cells.values() if c.cell in wanted]


def full_jobs(selection: dict[str, list[TrainCell]], seeds: Iterable[int]) -> list[Job]:
    return [Job(group, input_scale, seed, tuple(c for c in chosen if c.group == group))
            for seed in seeds for input_scale, chosen in selection.items()
            for group in dict.fromkeys(c.group for c in chosen)]


def units(jobs: list[Job], base: Spec, device: str, data: Path) -> list[Unit]:
    """One sweep unit per job and chunk of ``CELLS_PER_UNIT`` cells, each a ``train_child`` process."""
    made = []
    for job in jobs:
        backend, engine = TRAINED_BY[job.group]
        for start in range(0, len(job.cells), CELLS_PER_UNIT):
            chunk = [(c.cell, c.exec) for c in job.cells[start:start + CELLS_PER_UNIT]]
            args = child_args(job, base, device, data, [cell for cell, _ in chunk])
            made.append(Unit(backend, engine, job.seed, device, tuple(args),
                             tuple(plan(base, chunk, job.input_scale, job.seed)), CHILD_MODULE))
    return made


def child_args(job: Job, base: Spec, device: str, data: Path, cells: list[str]) -> list[str]:
    """The ``train_child`` arguments of one unit (the executor adds ``--out``)."""
    args = ["--group", job.group, "--input-scale", job.input_scale, "--seed", str(job.seed), "--epochs",
            str(base.epochs), "--data", str(data), "--device", device]
    for flag in ("train_size", "test_size"):
        if getattr(base, flag) is not None:
            args += [f"--{flag.replace('_', '-')}", str(getattr(base, flag))]
    for cell in cells:
        args += ["--cell", cell]
    return args


# --- re-running one record (``experiments.reproduce``) ------------------------------------------------------------

def replay(record: dict[str, Any]) -> tuple[Spec, str, PlannedRun]:
    """(the stage's base spec, the cell's group, the run as a ``train_child`` plans it) of a training record."""
    spec = Spec.from_dict(record["spec"])
    cell = spec.loss_cell
    base = Spec(epochs=spec.epochs, train_size=spec.train_size, test_size=spec.test_size)
    [planned] = plan(base, [(cell, cell.rsplit(" | ", 1)[1])], spec.input_scale, spec.seed)
    return base, cell.split(" | ", 1)[0], planned


def rerun_args(record: dict[str, Any], data: Path) -> tuple[list[str] | None, str | None]:
    """(the ``train_child`` arguments that train ``record``'s run again, None), or (None, why not)."""
    base, group, planned = replay(record)
    if group not in TRAINED_BY:
        return None, f"its cell's group {group!r} is not an atlas group of this version"
    spec = Spec.from_dict(record["spec"])
    if planned.spec != spec:
        differing = sorted(k for k, v in spec.to_dict().items() if planned.spec.to_dict()[k] != v)
        return None, f"the atlas' training stage has no flags for its spec's {', '.join(differing)}"
    job = Job(group, spec.input_scale, spec.seed, ())
    return child_args(job, base, record["device"], data, [spec.loss_cell]), None


def rerun_unit(record: dict[str, Any], args: list[str]) -> Unit:
    """The sweep unit of one ``train_child`` process (``args``, from ``rerun_args``) that trains ``record``'s run."""
    _, group, planned = replay(record)
    backend, engine = TRAINED_BY[group]
    return Unit(backend, engine, planned.spec.seed, record["device"], tuple(args), (planned,), CHILD_MODULE)


def given_loss(cells: dict[str, Cell], index_targets: Callable[[Any], Any]) -> Callable[[Spec], GivenLoss]:
    """The loss builder ``experiments.harness.runner.run_sweep`` takes: the spec's ``loss_cell`` -> the cell's
    ``loss(targets, head(logits))`` as a ``GivenLoss`` of one-hot rows and logits; integer labels for a call that
    takes them (``index_targets``, the framework's own)."""

    def build(spec: Spec) -> GivenLoss:
        cell = cells[spec.loss_cell]
        targets = index_targets if cell.targets == "index" else (lambda y: y)
        return lambda y, z: cell.loss(targets(y), cell.make_head(z))

    return build


# --- reading the records back -------------------------------------------------------------------------------

def cell_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The atlas' training records (those whose spec names a ``loss_cell``), the latest of each run."""
    return list({record_key(r): r for r in records if r["spec"].get("loss_cell")}.values())


def family(record: dict[str, Any]) -> str:
    """The spec a stage shares across its runs: the record's spec less cell, seed, input and execution."""
    return Spec.from_dict(record["spec"]).replace(loss_cell=None, seed=Spec().seed, input_scale="raw",
                                                  loop_exec=None).hash()


def is_full(record: dict[str, Any]) -> bool:
    spec, post = record["spec"], Spec()
    return spec["epochs"] == post.epochs and spec["train_size"] is None and spec["test_size"] is None


def quick_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The quick stage's records: of the shorter-than-full spec families, the one with the most records."""
    shorter = [r for r in cell_records(records) if not is_full(r)]
    if not shorter:
        return []
    counts: dict[str, int] = {}
    for record in shorter:
        counts[family(record)] = counts.get(family(record), 0) + 1
    chosen = max(counts, key=counts.get)
    return [r for r in shorter if family(r) == chosen]

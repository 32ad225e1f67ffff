"""When did each rescue appear: the mechanism cells across TensorFlow/Keras releases.

    python -m experiments.versions --tf 2.12,2.13,2.14,2.15,2.16,2.21 --quick --out DIR

For each release, a cached virtual environment (``experiments.versions.env``: ``tensorflow==X.Y.*`` and the
numpy and Keras pip picks with it; ``--rebuild`` remakes it) runs ``experiments/versions/tf_cells.py`` — TensorFlow and
numpy only — on data, batch order and initial weights prepared here by ``common``. The cells: the softmax
written three ways (``activation``, ``layer``, ``op``) x fit / eager loop / compiled loop, probs head,
Keras' own probability loss. The child's raw measurements go through the shared training driver (replayed)
and become the usual records in ``DIR/runs.jsonl``, with ``tf_version`` in the spec and the TensorFlow and
Keras versions in ``env.frameworks``; re-running skips finished cells. Each environment also runs the
cross-entropy atlas' probe stage of its Keras cells (``experiments.atlas.keras_cells --engine installed``: the
Keras beside TensorFlow, on the atlas' probe logits, no training; it too needs only TensorFlow and numpy, and
runs from this checkout), whose records go to ``DIR/keras_cells.jsonl`` with ``tf_version`` added; a release
already probed there is not probed again. Every environment's fate (built, reused, or skipped with the reason)
is appended to ``DIR/environments.jsonl``. Then DIR gets the report (``experiments.versions.report``):
table.md, table.csv, versions.png, findings.md, and keras_cells.md (when each Keras cell took its current
behaviour).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from experiments.harness import cli
from common.data import Dataset, Mnist, epoch_batches, load_mnist, prepare
from common.diagnostics import probe_rows
from common.dirlock import locked
from experiments.harness.published import check_publishable
from experiments.harness.report import classify
from common.results import (RUNS_FILE, append_record, capture_env, finished_keys, make_record, read_records,
                            run_key)
from common.spec import SOFTMAXES, Spec
from common.training import Trainer, TrainOutcome, train
from common.variants import VARIANTS
from common.weights import Weights, initial_weights
from experiments.atlas import inputs as atlas_inputs
from experiments.versions import env as versions_env
from experiments.versions.report import write_report

PROG = "python -m experiments.versions"
CHILD = Path(__file__).with_name("tf_cells.py")
ROOT = Path(__file__).resolve().parents[2]  # the atlas' Keras child runs from here: python -m puts it on the path
ENVIRONMENTS_FILE = "environments.jsonl"
KERAS_CELLS_FILE = "keras_cells.jsonl"
# The atlas' child keeps TensorFlow's C++ log on (a call's C++ warnings are part of its record), one thread each.
KERAS_CELLS_ENV = {"TF_CPP_MIN_LOG_LEVEL": "0", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                   "TF_NUM_INTEROP_THREADS": "1"}
QUICK = {"epochs": 1, "train_size": 6000, "test_size": 2000}  # as experiments.compare --quick
# Releases a child can run: keras.utils.set_random_seed (TF 2.7) and the Keras optimizers it uses.
OLDEST_TF = (2, 7)
BACKEND, ENGINE, DEVICE = "keras", "tensorflow", "cpu"
CHILD_TIMEOUT_S = 6 * 3600


@dataclasses.dataclass(frozen=True)
class Cell:
    """One mechanism cell: how the softmax is written and how the model trains."""

    softmax: str
    mode: str  # fit or loop
    loop_exec: str | None  # eager / compiled for loops, None for fit

    @property
    def name(self) -> str:
        return f"{self.softmax}/{self.loop_exec or self.mode}"

    @property
    def variant(self):
        return VARIANTS[f"{self.mode}_probs"]

    def spec(self, base: Spec, tf_version: str) -> Spec:
        return base.replace(prob_loss="native", softmax=self.softmax, loop_exec=self.loop_exec,
                            tf_version=tf_version)


CELLS = tuple(Cell(s, mode, loop_exec) for s in SOFTMAXES
              for mode, loop_exec in (("fit", None), ("loop", "eager"), ("loop", "compiled")))
CELL_NAMES = tuple(c.name for c in CELLS)


def parse_tf_versions(text: str) -> list[str]:
    """``"2.13, 2.21"`` -> ``["2.13", "2.21"]``, oldest first; a ValueError names the bad value."""
    found = [v.strip() for v in text.split(",") if v.strip()]
    if not found:
        raise ValueError("--tf: give TensorFlow releases like 2.13,2.21")
    for value in found:
        match = re.fullmatch(r"(\d+)\.(\d+)", value)
        if not match:
            raise ValueError(f"--tf {value}: give a TensorFlow release as MAJOR.MINOR, like 2.13")
        if int(match[1]) != 2 or (int(match[1]), int(match[2])) < OLDEST_TF:
            raise ValueError(f"--tf {value}: the study runs TensorFlow 2.{OLDEST_TF[1]} and later 2.x releases")
    if len(set(found)) < len(found):
        raise ValueError(f"--tf {text}: a release is named twice")
    return sorted(found, key=version_key)


def version_key(tf_version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in tf_version.split("."))


def parse_cells(text: str) -> list[Cell]:
    """``all`` or comma-separated cell names (``layer/eager``, ``op/fit``, ...), in canonical order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(CELLS)
    unknown = [n for n in names if n not in CELL_NAMES]
    if unknown or not names:
        raise ValueError(f"--cells: unknown cell {', '.join(unknown) or '(none given)'}; choose from: all, "
                         f"{', '.join(CELL_NAMES)}")
    return [c for c in CELLS if c.name in names]


# --- the child's measurements, through the shared driver ------------------------------------------------------
class Replay(Trainer):
    """A ``Trainer`` that hands back what the child measured, epoch by epoch, so that ``common.training.train``
    derives costs, divergence, diagnostics and accuracy exactly as for every other run."""

    def __init__(self, result: dict[str, Any]):
        self.result, self.loss_path = result, result["loss_path"]
        self._epochs = iter(result["step_losses"])
        self._probes = iter(zip(result["probe_logits"], result["grad_norms"]))
        self.compile_seconds = 0.0  # the child's timings replace the replay's in ``outcome``

    def run_epoch(self, batches: np.ndarray) -> np.ndarray:
        return np.asarray(next(self._epochs), dtype=np.float64)

    def probe(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        logits, grad_norm = next(self._probes)
        return np.asarray(logits, dtype=np.float64), grad_norm

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return self.result["test_loss"], np.asarray(self.result["predicted"])

    def train_predictions(self, x: np.ndarray, y: np.ndarray) -> None:
        return None  # the child measures no training-set predictions: no locked class set

    def weights(self) -> Weights:
        raise NotImplementedError("the weights stay in the child process")


def outcome(spec: Spec, data: Dataset, result: dict[str, Any]) -> TrainOutcome:
    """The child's measurements as a ``TrainOutcome``, with the child's own timings."""
    replayed = train(spec, Replay(result), data)
    steps = len(replayed.step_losses)
    run_seconds = max(result["wall_seconds"] - result["compile_seconds"], 1e-9)
    return dataclasses.replace(replayed, wall_seconds=result["wall_seconds"],
                               compile_seconds=result["compile_seconds"], steps_per_second=steps / run_seconds)


def measure(python: str | Path, base: Spec, cells: list[Cell], data: Dataset) -> tuple[dict[str, dict], str]:
    """Run ``cells`` in the child with ``python``; each cell's raw result by name, and the child's last words."""
    with tempfile.TemporaryDirectory(prefix="xent-versions-") as scratch:
        scratch = Path(scratch)
        write_inputs(scratch, base, cells, data)
        output = scratch / "results.jsonl"
        try:
            child = subprocess.run([str(python), str(CHILD), str(scratch), str(output)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=CHILD_TIMEOUT_S,
                                   env=versions_env.child_env())
            last_words = f"exit status {child.returncode}: {versions_env.last_line(child.stdout)}"
        except subprocess.TimeoutExpired:
            last_words = f"timed out after {CHILD_TIMEOUT_S} s"
        results = [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []
    return {r["cell"]: r for r in results}, last_words


def rerun_args(record: dict[str, Any], data: Path) -> tuple[list[str] | None, str | None]:
    """(this command's arguments that make ``record``'s cell again, None), or (None, why not): one release,
    one cell, the record's epochs, sizes and seed (``experiments.reproduce`` re-runs the study's records so)."""
    spec = Spec.from_dict(record["spec"])
    cell = next((c for c in CELLS if (c.softmax, c.loop_exec, c.variant.name)
                 == (record["softmax"], record["loop_exec"], record["variant"])), None)
    if cell is None:
        return None, f"{PROG} has no cell {record['softmax']}/{record['loop_exec'] or record['mode']}"
    base = Spec(epochs=spec.epochs, train_size=spec.train_size, test_size=spec.test_size, seed=spec.seed)
    if cell.spec(base, spec.tf_version) != spec:
        differing = sorted(k for k, v in spec.to_dict().items() if cell.spec(base, spec.tf_version).to_dict()[k] != v)
        return None, f"{PROG} has no flags for its spec's {', '.join(differing)}"
    args = ["--tf", spec.tf_version, "--cells", cell.name, "--epochs", str(spec.epochs), "--seed", str(spec.seed),
            "--data", str(data)]
    for flag in ("train_size", "test_size"):
        if getattr(spec, flag) is not None:
            args += [f"--{flag.replace('_', '-')}", str(getattr(spec, flag))]
    return args, None


def write_inputs(scratch: Path, base: Spec, cells: list[Cell], data: Dataset) -> None:
    """``arrays.npz`` (data, every epoch's batches, initial weights) and ``cells.json`` for the child."""
    n_train = len(data.x_train)
    batches = np.stack([epoch_batches(base, epoch, n_train) for epoch in range(base.epochs)])
    weights = {f"weight.{name}": value for name, value in initial_weights(base).items()}
    np.savez(scratch / "arrays.npz", x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
             y_test=data.y_test, batches=batches, **weights)
    hyper = {name: getattr(base, name) for name in ("hidden_layers", "hidden_units", "drop_rate", "learning_rate",
                                                   "beta_1", "beta_2", "epsilon", "batch_size", "seed",
                                                   "stop_on_nonfinite")}
    hyper["probe_size"] = probe_rows(n_train).stop
    cell_list = [{"id": c.name, "softmax": c.softmax, "mode": c.mode, "loop_exec": c.loop_exec} for c in cells]
    (scratch / "cells.json").write_text(json.dumps({"hyper": hyper, "cells": cell_list}))


# --- one release ------------------------------------------------------------------------------------------------
def study_version(environment: versions_env.Environment, base: Spec, cells: list[Cell], data: Dataset,
                  out: Path) -> list[dict[str, Any]]:
    """Run the unfinished ``cells`` in one environment and append a record for each."""
    version = environment.tf_version
    results, last_words = measure(environment.python, base, cells, data)
    records = []
    for cell in cells:
        spec = cell.spec(base, version)
        result = results.get(cell.name)
        versions = (result or {}).get("versions", environment.versions)
        env = capture_env({"tensorflow": versions["tensorflow"], "keras": versions["keras"]}, DEVICE,
                          (result or {}).get("threads", {}))
        env.update(python=versions["python"], numpy=versions["numpy"], venv=str(environment.python.parent.parent))
        args = dict(spec=spec, variant=cell.variant, backend=BACKEND, engine=ENGINE, device=DEVICE,
                    data_sha256=data.data_sha256, env=env)
        if result is None:
            record = make_record(**args, error=f"the child stopped before this cell ({last_words})")
        elif result["error"]:
            record = make_record(**args, error=result["error"])
        else:
            record = make_record(**args, outcome=outcome(spec, data, result))
        append_record(out / RUNS_FILE, record)
        records.append(record)
    return records


# --- the atlas' Keras cells, probed ------------------------------------------------------------------------------
def probe_keras_cells(environment: versions_env.Environment, mnist: Mnist, out: Path) -> str | None:
    """Run the atlas' Keras cells in the environment on the atlas' probe logits and append their records, each
    with ``tf_version``, to DIR/keras_cells.jsonl; why it failed in one line, or None."""
    with tempfile.TemporaryDirectory(prefix="xent-versions-atlas-") as scratch:
        probe_inputs, records = Path(scratch) / "probe_inputs.npz", Path(scratch) / "records.jsonl"
        atlas_inputs.save(probe_inputs, atlas_inputs.probe_logits(mnist), mnist.y_test[:atlas_inputs.PROBE_ROWS])
        command = [str(environment.python), "-m", "experiments.atlas.keras_cells", "--engine", "installed",
                   "--inputs", str(probe_inputs), "--records", str(records)]
        try:
            child = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                   timeout=CHILD_TIMEOUT_S, env={**versions_env.child_env(), **KERAS_CELLS_ENV})
        except subprocess.TimeoutExpired:
            return f"timed out after {CHILD_TIMEOUT_S} s"
        if child.returncode or not records.exists():
            return f"exit status {child.returncode}: {versions_env.last_line(child.stdout)}"
        lines = records.read_text(encoding="utf-8").splitlines()
    with open(out / KERAS_CELLS_FILE, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps({**json.loads(line), "tf_version": environment.tf_version}) + "\n")
    return None


def read_keras_cells(out: Path) -> list[dict[str, Any]]:
    path = out / KERAS_CELLS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def cell_key(spec: Spec, cell: Cell) -> tuple:
    return run_key(spec.hash(), BACKEND, ENGINE, cell.variant.name, spec.seed, DEVICE)


def log_environment(out: Path, fate: versions_env.Environment | versions_env.Skipped) -> None:
    entry = {"tf_version": fate.tf_version, "status": fate.status,
             "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if isinstance(fate, versions_env.Skipped):
        entry["reason"] = fate.reason
    else:
        entry.update(versions=fate.versions, venv=str(fate.python.parent.parent), seconds=round(fate.seconds, 1))
    with open(out / ENVIRONMENTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def read_environments(out: Path) -> list[dict[str, Any]]:
    path = out / ENVIRONMENTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# --- command line -----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--tf", required=True, help="comma-separated TensorFlow releases, e.g. 2.13,2.21")
    parser.add_argument("--out", metavar="DIR", type=cli.output_dir, required=True,
                        help="results go to DIR/runs.jsonl, the report beside it")
    parser.add_argument("--quick", action="store_true", help=f"a short run: {QUICK} unless given explicitly")
    parser.add_argument("--rebuild", action="store_true", help="remake each release's cached environment")
    parser.add_argument("--cells", default="all", help=f"all, or names from: {', '.join(CELL_NAMES)}")
    parser.add_argument("--epochs", type=int, default=Spec().epochs)
    parser.add_argument("--train-size", type=int, help="first N training images (default: all 60000)")
    parser.add_argument("--test-size", type=int, help="first N test images (default: all 10000)")
    parser.add_argument("--seed", type=int, default=Spec().seed)
    parser.add_argument("--data", metavar="PATH", help="MNIST .npz (default: $MNIST_PATH, caches, download)")
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = build_parser()
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)  # explicit --epochs/--train-size/--test-size still win
    args = parser.parse_args(argv)
    try:
        tf_versions, cells = parse_tf_versions(args.tf), parse_cells(args.cells)
    except ValueError as exc:
        parser.error(str(exc))
    out = Path(args.out)
    with cli.friendly_errors(PROG):
        check_publishable(out)  # refused before anything is built or run
        base = Spec(epochs=args.epochs, train_size=args.train_size, test_size=args.test_size, seed=args.seed)
        mnist = load_mnist(args.data)  # before any environment is built, so a bad file fails fast
        data = prepare(base, mnist)
        with locked(out):
            for version in tf_versions:
                done = finished_keys(out / RUNS_FILE)
                todo = [c for c in cells if cell_key(c.spec(base, version), c) not in done]
                probe = version not in {r["tf_version"] for r in read_keras_cells(out)}
                if not todo and not probe:
                    print(f"TF {version}: all {len(cells)} cells already finished in {out / RUNS_FILE}, and its "
                          f"Keras cells probed in {out / KERAS_CELLS_FILE}")
                    continue
                fate = versions_env.ensure(version, rebuild=args.rebuild)
                log_environment(out, fate)
                if isinstance(fate, versions_env.Skipped):
                    print(f"TF {version}: skipped: {fate.reason}")
                    continue
                print(f"TF {version}: {fate.status} environment (TensorFlow {fate.versions['tensorflow']}, Keras "
                      f"{fate.versions['keras']}); running {len(todo)} cell(s)"
                      + ("; probing the atlas' Keras cells" if probe else ""))
                for record in study_version(fate, base, todo, data, out):
                    print(f"  {record_line(record)}")
                problem = probe_keras_cells(fate, mnist, out) if probe else None
                if problem:
                    print(f"  the atlas' Keras cells: failed: {problem}")
            report = write_report(out, read_records(out / RUNS_FILE), read_environments(out),
                                  read_keras_cells(out))
    print(report)
    return read_records(out / RUNS_FILE)


def record_line(record: dict[str, Any]) -> str:
    cell = f"{record['softmax']}/{record['loop_exec'] or record['mode']}"
    if record["status"] == "failed":
        return f"{cell:<20} failed: {record['error']}"
    costs = record["epoch_costs"]
    cost = "nan" if not costs or costs[-1] is None else f"{costs[-1]:.4g}"
    return f"{cell:<20} {classify(record):<8} accuracy {record['test_accuracy']:.4f}  last cost {cost}  " \
           f"{record['loss_path']}"


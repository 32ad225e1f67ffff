"""The cross-entropy atlas: every probability/logit cross-entropy call users reach for, in every framework,
measured on the same logits (the probe stage) and trained (the training stage).

    python -m experiments.atlas --out DIR                       # every framework (about a minute on 2 cores)
    python -m experiments.atlas --out DIR --frameworks torch,keras/jax
    python -m experiments.atlas --train --quick --out DIR       # + every trainable cell, quick spec (hours)
    python -m experiments.atlas --train --out DIR               # + the full spec for the cells the quick runs pick
    python -m experiments.atlas --train --full-from QUICK_DIR --out DIR   # the same, picked from QUICK_DIR

Writes DIR/probe_inputs.npz (the float32 logits every child probes: the post's model at the canonical initial
weights on 100 MNIST test images, raw pixels and pixels / 255), runs one child process per framework (each
Keras engine in its own: Keras fixes its engine at import), merges their records into DIR/atlas.jsonl (one
JSON object per cell and input: the call, head, from_logits, exec, the loss path decided from the measured
losses, the warnings it emitted, the loss, the exact reference, the gradient's health, versions, env) and
writes DIR/atlas.md, DIR/atlas.png, DIR/findings.md and DIR/headline.md (``experiments.atlas.report``). A
child's own log is kept in DIR/logs/.

``--train`` (``experiments.atlas.training``) first runs the probe stage if DIR has no atlas.jsonl, then trains
the post's MLP with every cell whose probe path is not ``error``: ``--quick`` is 1 epoch of the first 6,000 /
2,000 images, raw and unit inputs, seeds 777-779; without ``--quick`` it is the post's full spec (15 epochs, all
images, seed 777) for the cells that ``training.full_selection`` picks from the quick records of ``--full-from
DIR`` (default: ``--out``): on raw pixels every cell whose quick raw-pixel runs did not all end stuck, failed
or diverged at step 0; on unit pixels every double-softmax cell, beside its group's logits cell as baseline.
``--epochs``, ``--train-size``, ``--test-size``, ``--seeds`` and ``--inputs`` change a stage's spec (a tiny
check: ``--train --quick --train-size 600 --test-size 200 --seeds 1 --cell 'torch |'``). Runs are ordinary
records in DIR/runs.jsonl, made by one process per framework or Keras engine, seed, input and chunk of cells
through the sweep (``--executor local|ray``), and the same command resumes an interrupted stage. The reports
then gain each cell's training outcome and accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from common.data import DataError, load_mnist
from common.dirlock import DirectoryInUse, locked
from common.results import RUNS_FILE, read_records
from common.spec import INPUT_SCALES, Spec, SpecError
from experiments.atlas import inputs, report, training
from experiments.compare import command as compare
from experiments.harness import sweep
from experiments.harness.cli import Parser, output_dir

ATLAS_FILE, INPUTS_FILE = report.ATLAS_FILE, report.INPUTS_FILE
FRAMEWORKS = ("keras", "torch", "jax", "tensorflow")
# The children's frameworks each get one thread: the probes are tiny, and --jobs children share the cores.
# TensorFlow's C++ log is left at its default level (0) so that a call's C++ warnings reach the records.
CHILD_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", "JAX_PLATFORMS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "0",
}


@dataclasses.dataclass(frozen=True)
class Child:
    """One child process: a framework, or one Keras engine."""

    name: str
    framework: str
    module: str
    arguments: tuple[str, ...] = ()
    seconds: int = 10  # roughly how long it runs on 2 busy cores: the longest start first

    def command(self, inputs_path: Path, records_path: Path) -> list[str]:
        return [sys.executable, "-m", f"experiments.atlas.{self.module}", *self.arguments,
                "--inputs", str(inputs_path), "--records", str(records_path)]


CHILDREN = (
    Child("keras/tensorflow", "keras", "keras_cells", ("--engine", "tensorflow"), 10),
    Child("keras/tf_keras", "keras", "keras_cells", ("--engine", "tf_keras"), 12),
    Child("keras/jax", "keras", "keras_cells", ("--engine", "jax"), 12),
    Child("keras/torch", "keras", "keras_cells", ("--engine", "torch"), 14),
    Child("torch", "torch", "torch_cells", seconds=4),
    Child("jax", "jax", "jax_cells", seconds=12),
    Child("tensorflow", "tensorflow", "tf_cells", seconds=8),
)


def select_children(value: str) -> list[Child]:
    """``--frameworks``: comma-separated framework names (all their children) or child names (``keras/jax``)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    known = {child.name for child in CHILDREN} | set(FRAMEWORKS)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown framework(s) {', '.join(unknown) or '(none given)'}; use a comma-separated list of "
            f"{', '.join(FRAMEWORKS)} or of {', '.join(child.name for child in CHILDREN)}")
    return [child for child in CHILDREN if child.name in names or child.framework in names]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m experiments.atlas", description=__doc__.splitlines()[0])
    parser.add_argument("--out", metavar="DIR", type=output_dir, required=True,
                        help="writes DIR/atlas.jsonl, atlas.md, atlas.png, findings.md")
    parser.add_argument("--frameworks", type=select_children, default=list(CHILDREN),
                        help=f"comma-separated: {', '.join(FRAMEWORKS)}, or single Keras engines "
                             f"({', '.join(c.name for c in CHILDREN if c.framework == 'keras')}); default all")
    parser.add_argument("--data", metavar="PATH", help="MNIST .npz (default: $MNIST_PATH, caches, download)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="probe stage: children run at once (default %(default)s)")
    training_flags = parser.add_argument_group("training stage")
    training_flags.add_argument("--train", action="store_true",
                                help="train the post's MLP with every trainable cell (after the probe stage)")
    training_flags.add_argument("--quick", action="store_true",
                                help=f"with --train: the quick stage, {training.QUICK}, seeds 777-779, raw and "
                                     "unit inputs; without it, the full spec for the cells the quick runs pick")
    training_flags.add_argument("--full-from", metavar="DIR", type=output_dir,
                                help="the full stage picks its cells from DIR's quick records (default: --out)")
    training_flags.add_argument("--cell", action="append", metavar="TEXT",
                                help="train only cells whose id (atlas.jsonl's 'cell') contains TEXT; repeatable")
    training_flags.add_argument("--inputs", help=f"quick stage: comma-separated inputs (default "
                                                 f"{','.join(training.QUICK_INPUTS)})")
    training_flags.add_argument("--seeds", type=int, metavar="N",
                                help=f"seeds from 777 (default: {len(training.QUICK_SEEDS)} quick, "
                                     f"{len(training.FULL_SEEDS)} full)")
    training_flags.add_argument("--epochs", type=int, help="epochs per run (default: the stage's)")
    training_flags.add_argument("--train-size", type=int, help="first N training images (default: the stage's)")
    training_flags.add_argument("--test-size", type=int, help="first N test images (default: the stage's)")
    sweep.add_flags(parser)
    parser.set_defaults(device="cpu", verbose=False)
    return parser


def write_inputs(out_dir: Path, data: str | None) -> Path:
    mnist = load_mnist(data)
    path = out_dir / INPUTS_FILE
    inputs.save(path, inputs.probe_logits(mnist), mnist.y_test[:inputs.PROBE_ROWS])
    return path


def run_children(children: list[Child], out_dir: Path, inputs_path: Path,
                 jobs: int) -> list[tuple[Child, int, float]]:
    """Run the children, ``jobs`` at a time, the longest first; their records go to DIR/parts, their output to
    DIR/logs. Returns each child's exit status and wall time."""
    for folder in ("parts", "logs"):
        (out_dir / folder).mkdir(exist_ok=True)
    environment = {**CHILD_ENVIRONMENT, **os.environ}  # a caller's own setting wins
    waiting, running, finished = sorted(children, key=lambda child: -child.seconds), [], []
    while waiting or running:
        while waiting and len(running) < jobs:
            child = waiting.pop(0)
            _part(out_dir, child).unlink(missing_ok=True)  # a failed child leaves no stale records behind
            log = open(out_dir / "logs" / f"{_file_name(child)}.log", "w", encoding="utf-8")  # noqa: SIM115
            process = subprocess.Popen(child.command(inputs_path, _part(out_dir, child)), stdout=log,
                                       stderr=subprocess.STDOUT, env=environment)
            running.append((child, process, log, time.perf_counter()))
        time.sleep(0.2)
        for entry in [entry for entry in running if entry[1].poll() is not None]:
            child, process, log, started = entry
            log.close()
            running.remove(entry)
            finished.append((child, process.returncode, time.perf_counter() - started))
    return finished


def _file_name(child: Child) -> str:
    return child.name.replace("/", "-")


def _part(out_dir: Path, child: Child) -> Path:
    return out_dir / "parts" / f"{_file_name(child)}.jsonl"


def merge(children: list[Child], out_dir: Path) -> Path:
    """DIR/atlas.jsonl: the children's records in the fixed child order (a rerun replaces the file)."""
    path = out_dir / ATLAS_FILE
    with open(path, "w", encoding="utf-8") as atlas:
        for child in children:
            part = _part(out_dir, child)
            if part.exists():
                atlas.write(part.read_text(encoding="utf-8"))
    return path


def summary(records: list[dict], finished: list[tuple[Child, int, float]], seconds: float) -> str:
    raw = [r for r in records if r["input"] == inputs.INPUT_NAMES[0]]
    per_child = Counter(report.group_of(r) for r in raw)
    paths = Counter(r["loss_path"] for r in raw)
    return "\n".join([
        f"{len(raw)} cells x {len(inputs.INPUT_NAMES)} inputs = {len(records)} records in {seconds:.0f} s",
        "cells: " + ", ".join(f"{name} {count}" for name, count in per_child.items()),
        "children: " + ", ".join(f"{child.name} {wall:.0f} s" for child, _, wall in finished),
        "loss paths: " + ", ".join(f"{path} {count}" for path, count in paths.most_common()),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give at least 1")
    if not args.train and (args.quick or args.full_from or args.cell):
        parser.error("--quick, --full-from and --cell belong to the training stage: add --train")
    if args.quick and args.full_from:
        parser.error("--full-from picks the full stage's cells; the quick stage (--quick) trains them all")
    if args.inputs and not args.quick:
        parser.error("--inputs is for the quick stage (--train --quick); the full stage's inputs follow its cells")
    if args.train:
        executor = sweep.make_executor(parser, args)
        if (Path(args.out) / ATLAS_FILE).exists():
            return train(parser, args, argv, executor)
        status = probe_stage(parser, args)
        return status or train(parser, args, argv, executor)
    return probe_stage(parser, args)


def probe_stage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Probe every cell of ``--frameworks`` into DIR/atlas.jsonl and write the reports; 1 if a child failed."""
    out_dir = Path(args.out)
    started = time.perf_counter()
    try:
        with locked(out_dir):
            inputs_path = write_inputs(out_dir, args.data)
            finished = run_children(args.frameworks, out_dir, inputs_path, args.jobs)
            merge(args.frameworks, out_dir)
            records = report.read(out_dir)
            if records:
                report.write_reports(out_dir)
    except (DataError, DirectoryInUse) as exc:
        parser.error(str(exc))
    if records:
        print(summary(records, finished, time.perf_counter() - started))
        print(f"wrote {out_dir / ATLAS_FILE}, {', '.join(str(out_dir / name) for name in report.REPORT_FILES)}")
    failed = [(child, code) for child, code, _ in finished if code != 0]
    for child, code in failed:
        log = out_dir / "logs" / f"{_file_name(child)}.log"
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        print(f"child {child.name} failed (exit status {code}); its log, {log}, ends:\n{tail}", file=sys.stderr)
    return 1 if failed else 0


# --- the training stage -----------------------------------------------------------------------------------------

def train(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None,
          executor: sweep.Executor) -> int:
    """Plan the stage's jobs from the probe records (and, for the full stage, the quick records), sweep them
    into DIR/runs.jsonl (resuming) and rewrite the reports (``training`` module docstring)."""
    base = stage_spec(parser, args)
    jobs = stage_jobs(parser, args, chosen_cells(parser, args, report.read(Path(args.out))))
    compare.sweep_and_report(parser, args, argv, executor, lambda data: training.units(jobs, base, args.device, data),
                             lambda out, spec: training_summary(out))
    return 0


def stage_spec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Spec:
    """The stage's spec: quick or the post's, with --epochs / --train-size / --test-size where given."""
    stage = training.QUICK if args.quick else {"epochs": Spec().epochs, "train_size": None, "test_size": None}
    given = {name: getattr(args, name) for name in stage if getattr(args, name) is not None}
    try:
        return Spec(**{**stage, **given})
    except SpecError as exc:
        parser.error(str(exc))


def chosen_cells(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 probe_records: list[dict]) -> list[dict]:
    """The probe records of the --frameworks groups whose cell id contains a --cell text (all without one)."""
    groups = {child.name for child in args.frameworks}
    chosen = [r for r in probe_records if report.group_of(r) in groups
              and (not args.cell or any(text in r["cell"] for text in args.cell))]
    if not chosen:
        parser.error(f"no atlas cell of {', '.join(sorted(groups))} matches --cell {' / '.join(args.cell or [])} "
                     f"in {Path(args.out) / ATLAS_FILE}")
    return chosen


def stage_jobs(parser: argparse.ArgumentParser, args: argparse.Namespace,
               probe_records: list[dict]) -> list[training.Job]:
    seeds = training.QUICK_SEEDS if args.quick else training.FULL_SEEDS
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error(f"--seeds {args.seeds}: give a positive number of seeds")
        seeds = tuple(Spec().seed + i for i in range(args.seeds))
    if args.quick:
        names = [name.strip() for name in (args.inputs or ",".join(training.QUICK_INPUTS)).split(",") if name.strip()]
        if not names or any(name not in INPUT_SCALES for name in names):
            parser.error(f"--inputs {args.inputs}: give a comma-separated list of {', '.join(INPUT_SCALES)}")
        jobs = training.quick_jobs(training.trainable(probe_records), seeds, names)
        if not jobs:
            parser.error("no chosen cell can train: a cell whose probe path is error has no loss")
        return jobs
    source = Path(args.full_from or args.out)
    quick = training.quick_records(read_records(source / RUNS_FILE))
    if not quick:
        parser.error(f"no quick training records in {source / RUNS_FILE}: run --train --quick there first, or "
                     "name the directory that holds them with --full-from")
    selection = training.full_selection(probe_records, quick)
    jobs = training.full_jobs(selection, seeds)
    if not jobs:
        parser.error(f"no cell qualifies for the full stage from the {len(quick)} quick records in {source}")
    return jobs


def training_summary(out_dir: str) -> str:
    """Rewrite the reports with the training outcomes; the training table, for the terminal."""
    report.write_reports(out_dir)
    return report.training_overview(report.read(Path(out_dir)),
                                    report.Trained.of(read_records(Path(out_dir) / RUNS_FILE)))

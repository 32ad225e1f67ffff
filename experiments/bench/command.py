"""Benchmark every training path against this machine's matrix-multiply floor and a straightforward reference loop.

    python -m experiments.bench                         # keras (TF engine), torch, jax on the CPU; < 10 min on 2 cores
    python -m experiments.bench --engines jax           # adds Keras 3 on the JAX engine
    python -m experiments.bench --device gpu --backends torch,jax --engines jax

For each backend, mode (fit, loop) and head (logits, probs) the backend's own trainer
(``backend.make_trainer``) runs on the full training set in memory: one warm-up ``run_epoch`` of ``--warmup``
steps (compilation included; the trainer reports ``compile_seconds``), then ``--steps`` timed steps in calls of
the same shape as the warm-up, so every compiled executable is reused. The probs head uses the ``clipped``
probability loss: the ``native`` one turns NaN on raw pixels in torch and JAX, and NaN arithmetic is slow on CPUs.

Round-robin with each path's timed calls, in the same process, run (1) the step's matrix multiplies alone, in
the same framework (``step_gemms``: the floor), and (2) for loops, the loop a user would write
(``experiments.bench.refs``: the post's Keras code, a PyTorch or JAX tutorial loop) on the same model, loss,
optimizer and batch size. Interleaving makes the ratios robust to load that drifts while the bench runs.

Each backend (and each extra Keras engine) runs in its own process (``--child``), which writes its figures to
``DIR/parts/``; this process merges them, checks the targets and writes ``DIR/bench.json`` and
``DIR/bench.md``. A backend whose framework is missing is reported as skipped.

This module is the command line and the processes; the work is in ``measure`` (timing one backend's
paths), ``targets`` (the targets, PASS or MISS), ``render`` (the report files) and
``refs`` (the GEMM floor and the reference loops, per framework).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backends import BACKEND_NAMES, KERAS_ENGINES, BackendError, get_backend
from backends.base import DEVICES
from experiments.harness import cli
from common.data import Dataset, Mnist, load_mnist, prepare, steps_per_epoch
from common.results import backend_label, capture_env
from common.spec import Spec, SpecError
from common.variants import HEADS, MODES
from experiments.bench import refs as bench_refs
from experiments.bench.measure import bench_path, progress, summary, timed_calls
from experiments.bench.refs.gemms import step_gemms
from experiments.bench.render import write_json, write_report
from experiments.bench.targets import assemble
from experiments.compare.command import rows

DEFAULT_OUT = "results/bench"
#: On a GPU a step takes well under a millisecond, so per-call costs (index upload, the loss read-back) would
#: swamp a 100-step call: time epoch-sized calls there, as a real run makes them.
GPU_DEFAULTS = {"warmup": 600, "steps": 1200}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="python -m experiments.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKEND_NAMES), help="comma-separated (default: all)")
    parser.add_argument("--engines", default="",
                        help=f"extra Keras engines as extra rows, comma-separated from: {', '.join(KERAS_ENGINES[1:])}")
    parser.add_argument("--steps", type=int, default=200,
                        help="timed steps per path, rounded up to whole warm-up-sized calls (default %(default)s; "
                             f"{GPU_DEFAULTS['steps']} with --device gpu)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="steps of the warm-up call, which compiles; 2 to one epoch (default %(default)s; "
                             f"{GPU_DEFAULTS['warmup']} with --device gpu)")
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--data", metavar="PATH", help="MNIST .npz (default: $MNIST_PATH, caches, download)")
    parser.add_argument("--train-size", type=int, help="first N training images (default: all 60000)")
    parser.add_argument("--out", metavar="DIR", type=cli.output_dir, default=DEFAULT_OUT,
                        help="writes DIR/bench.json, DIR/bench.md")
    # Internal: one backend in this process (the parent starts one child per backend).
    parser.add_argument("--child", choices=BACKEND_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=KERAS_ENGINES, help=argparse.SUPPRESS)
    return parser


def bench_spec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Spec:
    """The post's spec with the clipped probability loss (finite on raw pixels, so no NaN arithmetic)."""
    try:
        return Spec(train_size=args.train_size, prob_loss="clipped")
    except SpecError as exc:
        parser.error(str(exc))


def check_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace, spec: Spec, mnist: Mnist) -> None:
    n_train = spec.train_size or len(mnist.x_train)
    if n_train > len(mnist.x_train):
        parser.error(f"--train-size {n_train}: {mnist.path} has only {len(mnist.x_train)} training images")
    per_epoch = steps_per_epoch(spec, n_train)
    # A call is at most an epoch: Keras' fit records at most one epoch of step losses.
    if not 2 <= args.warmup <= per_epoch:
        parser.error(f"--warmup {args.warmup}: give 2 to {per_epoch} steps (one epoch)")
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: give a positive number of steps")


def parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    if parser.parse_known_args(argv)[0].device == "gpu":
        parser.set_defaults(**GPU_DEFAULTS)  # explicit --warmup/--steps still win
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    parser, args = parse(argv)
    spec = bench_spec(parser, args)
    with cli.friendly_errors(parser.prog):
        mnist = load_mnist(args.data)  # before any framework starts, so a bad file fails fast
    check_sizes(parser, args, spec, mnist)
    if args.child:
        write_json(part_path(args.out, args.child, args.engine), run_child(args, spec, prepare(spec, mnist)))
        return
    start = time.perf_counter()
    parts = [run_part(args, backend, engine, mnist.path.resolve()) for backend, engine in rows(parser, args)]
    command = " ".join(["python -m experiments.bench", *(sys.argv[1:] if argv is None else argv)])
    report = assemble(parts, args, command, time.perf_counter() - start)
    print(write_report(report, Path(args.out)))
    print(f"wrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'bench.md'}")


# --- parent: one child process per backend, then the merge ----------------------------------------------------
def part_path(out: str, backend: str, engine: str | None) -> Path:
    return Path(out) / "parts" / f"{backend_label(backend, engine).replace('/', '-')}.json"


def child_command(args: argparse.Namespace, backend: str, engine: str | None, data: Path) -> list[str]:
    command = [sys.executable, "-m", "experiments.bench", "--child", backend, "--data", str(data),
               "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup), "--out", args.out]
    if engine:
        command += ["--engine", engine]
    if args.train_size:
        command += ["--train-size", str(args.train_size)]
    return command


def run_part(args: argparse.Namespace, backend: str, engine: str | None, data: Path) -> dict[str, Any]:
    """Run one backend in its own process (frameworks never share one) and read what it wrote."""
    path = part_path(args.out, backend, engine)
    path.unlink(missing_ok=True)
    returncode = subprocess.run(child_command(args, backend, engine, data)).returncode
    if returncode == 0 and path.exists():
        return json.loads(path.read_text())
    return {"backend": backend, "engine": engine, "label": backend_label(backend, engine), "status": "failed",
            "reason": f"its process exited with status {returncode}; see its output above"}


# --- child: one backend in this process -----------------------------------------------------------------------
def run_child(args: argparse.Namespace, spec: Spec, data: Dataset) -> dict[str, Any]:
    """Every path of one backend, each timed with its floor and reference; what the parent reads."""
    part: dict[str, Any] = {"backend": args.child, "engine": args.engine,
                            "label": backend_label(args.child, args.engine)}
    try:
        backend = get_backend(args.child, device=args.device, engine=args.engine)
    except BackendError as exc:
        progress(part, f"skipped: {exc}")
        return {**part, "status": "skipped", "reason": str(exc), "env": capture_env({}, args.device, {})}
    part["engine"] = backend.engine
    floor_module, reference_module = bench_refs.modules(backend.name, backend.engine)
    floor = floor_module.floor(step_gemms(spec), args.device)
    calls = timed_calls(args) + 1
    paths = []
    for mode in MODES:
        for head in HEADS:
            reference = reference_module if mode == "loop" else None
            paths.append(bench_path(backend, spec, mode, head, data, floor, reference, args.warmup, calls))
            progress(part, summary(paths[-1]))
            gc.collect()  # the last trainer's device copy of the data, before the next one makes its own
    return {**part, "status": "ok", "device": args.device, "train_size": len(data.x_train), "paths": paths,
            "reference_loop": reference_module.DESCRIPTION if reference_module else "none for this engine",
            "env": capture_env(backend.versions(), backend.device_name(), backend.threads())}


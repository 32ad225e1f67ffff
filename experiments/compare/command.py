"""The cross-framework comparison: every variant on every backend, then the report.

    python -m experiments.compare --out results            # the full default run (15 epochs, full MNIST)
    python -m experiments.compare --quick --out /tmp/quick  # 1 epoch on 6000 images: every behaviour, minutes

Each backend (and each extra Keras engine) runs in its own process per seed (frameworks do not share a
process): one after another here, or as Ray tasks over a cluster (``--executor ray``, experiments/harness/sweep.py).
Records are appended to DIR/runs.jsonl as runs end; re-running the same command skips finished runs, so an
interrupted sweep resumes where it stopped. One sweep per DIR at a time (a second one exits 2). Then DIR gets
table.md, table.csv, curves.png, accuracy.png and findings.md (also: python -m experiments.report DIR).
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from backends import BACKEND_NAMES, KERAS_ENGINES
from common import dirlock
from experiments.harness import cli
from common.data import find_mnist
from experiments.harness.report import table_markdown, write_reports
from common.results import RUNS_FILE, append_record, capture_env
from common.spec import Spec
from experiments.harness import sweep

QUICK = {"epochs": 1, "train_size": 6000, "test_size": 2000}
SWEEPS_FILE = "sweeps.jsonl"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    cli.add_run_flags(parser)
    parser.add_argument("--backends", default=",".join(BACKEND_NAMES), help="comma-separated (default: all)")
    parser.add_argument("--engines", default="",
                        help=f"extra Keras engines as extra rows, comma-separated from: {', '.join(KERAS_ENGINES[1:])}")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run that still shows every behaviour: {QUICK} unless given explicitly")
    sweep.add_flags(parser)
    return parser


def parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)  # explicit --epochs/--train-size/--test-size still win
    return parser, parser.parse_args(argv)


def rows(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(backend, engine) pairs in run order; Keras' default engine first, extra engines after."""
    backends = [b for b in args.backends.replace(",", " ").split() if b]
    engines = [e for e in args.engines.replace(",", " ").split() if e]
    unknown = [b for b in backends if b not in BACKEND_NAMES] + [e for e in engines if e not in KERAS_ENGINES]
    if unknown or not backends:
        parser.error(f"unknown backend or engine {', '.join(unknown) or '(none given)'}; backends: "
                     f"{', '.join(BACKEND_NAMES)}; engines: {', '.join(KERAS_ENGINES)}")
    pairs = [(b, "tensorflow" if b == "keras" else None) for b in backends]
    return pairs + [("keras", e) for e in engines if ("keras", e) not in pairs]


def child_args(args: argparse.Namespace, seed: int, backend: str, engine: str | None, data: Path) -> list[str]:
    """The ``experiments.run`` arguments of one unit (one row, one seed); the executor adds ``--out``."""
    command = ["--backend", backend, "--variants", args.variants, "--epochs", str(args.epochs), "--prob-loss",
               args.prob_loss, "--softmax", args.softmax, "--input-scale", args.input_scale, "--data-order",
               args.data_order, "--data", str(data), "--device", args.device, "--seed", str(seed)]
    if engine:
        command += ["--engine", engine]
    if args.loop_exec:
        command += ["--loop-exec", args.loop_exec]
    if args.controls:
        command += ["--controls"]
    for flag in ("train_size", "test_size"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return command + (["--keep-going"] if args.keep_going else []) + (["--verbose"] if args.verbose else [])


def main(argv: list[str] | None = None) -> None:
    parser, args = parse(argv)
    run(parser, args, argv, report)


def report(out_dir: str, spec: Spec) -> str:
    """Write the cross-framework report into ``out_dir``; its table, for the terminal."""
    table = write_reports(out_dir, spec)
    return table_markdown(table) + "\n\nwrote table.md, table.csv, curves.png, accuracy.png, findings.md"


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None,
        write_report: Callable[[str, Spec], str]) -> None:
    """Sweep every row's plan (resuming), then ``write_report``; shared with experiments.mechanism."""
    executor = sweep.make_executor(parser, args)
    plans = {pair: cli.plan(parser, args, *pair) for pair in rows(parser, args)}

    def units(data: Path) -> list[sweep.Unit]:
        return sweep.make_units(plans, args.device, lambda b, e, seed: child_args(args, seed, b, e, data))

    sweep_and_report(parser, args, argv, executor, units, write_report)


def sweep_and_report(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None,
                     executor: sweep.Executor, make_units: Callable[[Path], list[sweep.Unit]],
                     write_report: Callable[[str, Spec], str]) -> None:
    """Run the units ``make_units(MNIST file)`` into ``args.out`` (resuming; holding its lock), then
    ``write_report``, and log the sweep's wall time; shared with experiments.plateaus."""
    with cli.friendly_errors(parser.prog), dirlock.locked(args.out):
        units = make_units(find_mnist(args.data).resolve())
        start = time.perf_counter()
        # A `kill` reaches only this process: turn it into the same clean stop as Ctrl-C, which ends the children.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            count = sweep.run_units(units, args.out, executor)
        except KeyboardInterrupt:
            sys.exit(f"interrupted: finished runs are in {Path(args.out) / RUNS_FILE}; run the same command again "
                     "to resume")
        except sweep.ExecutorError as exc:
            cli.fail(parser.prog, str(exc))
        wall = time.perf_counter() - start
        summary = write_report(args.out, units[0].planned[0].spec)
        append_record(Path(args.out) / SWEEPS_FILE, {  # the sweep's own wall time, beside its runs
            "command": " ".join([parser.prog, *(sys.argv[1:] if argv is None else argv)]),
            "executor": args.executor, "wall_seconds": round(wall, 1), "runs_planned": count.planned,
            "runs_finished": count.finished, "runs_this_session": count.this_session,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "env": capture_env({}, args.device, {})})
    print(summary)
    print(f"\n{count.finished} of {count.planned} runs finished ({wall:.0f} s this session) in {args.out} "
          f"(sweep timing in {SWEEPS_FILE})")


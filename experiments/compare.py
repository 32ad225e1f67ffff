"""The cross-framework comparison: every variant on every backend, then the report.

    python -m experiments.compare --out results            # the full default run (15 epochs, full MNIST)
    python -m experiments.compare --quick --out /tmp/quick  # 1 epoch on 6000 images: every behaviour, minutes

Each backend (and each extra Keras engine) runs in its own process, one after another (frameworks do not
share a process). Records are appended to DIR/runs.jsonl as each run ends; re-running the same command skips
finished runs, so an interrupted sweep resumes where it stopped. Then DIR gets table.md, table.csv,
curves.png, accuracy.png and findings.md (also: python -m experiments.report DIR).
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from backends import BACKEND_NAMES, KERAS_ENGINES
from common import cli
from common.data import find_mnist
from common.report import table_markdown, write_reports
from common.results import RUNS_FILE, append_record, capture_env, finished_keys, make_record, run_key
from common.runner import PlannedRun, plan_runs

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


def child_command(args: argparse.Namespace, seeds: list[int], backend: str, engine: str | None,
                  data: Path) -> list[str]:
    command = [sys.executable, "-m", "experiments.run", "--backend", backend, "--variants", args.variants,
               "--epochs", str(args.epochs), "--prob-loss", args.prob_loss, "--input-scale", args.input_scale,
               "--data-order", args.data_order, "--data", str(data), "--device", args.device, "--out", args.out]
    if engine:
        command += ["--engine", engine]
    for seed in seeds:
        command += ["--seed", str(seed)]
    for flag in ("train_size", "test_size"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return command + (["--keep-going"] if args.keep_going else []) + (["--verbose"] if args.verbose else [])


def main(argv: list[str] | None = None) -> None:
    parser, args = parse(argv)
    seeds = cli.seeds(parser, args)
    plan = plan_runs(cli.base_spec(parser, args), cli.variants(parser, args), seeds, cli.prob_losses(args))
    pairs = rows(parser, args)
    with cli.friendly_errors(parser.prog):
        data = find_mnist(args.data).resolve()
    runs_file = Path(args.out) / RUNS_FILE
    keys = {pair: [run_key(p.spec.hash(), *pair, p.variant.name, p.spec.seed, args.device) for p in plan]
            for pair in pairs}
    total = sum(map(len, keys.values()))
    start = time.perf_counter()
    overall = tqdm(total=total, desc="sweep", unit="run", disable=None, position=0)
    env = dict(os.environ, XENT_PARITY_BAR_POSITION="1" if not overall.disable else "0")
    finished_at_start = _count_finished(runs_file, keys)
    # A `kill` reaches only this process: turn it into the same clean stop as Ctrl-C, which ends the child too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    process = None
    try:
        for (backend, engine), pair_keys in keys.items():
            overall.n = _count_finished(runs_file, keys)
            overall.refresh()
            if all(k in finished_keys(runs_file) for k in pair_keys):
                continue
            process = subprocess.Popen(child_command(args, seeds, backend, engine, data), env=env)
            while process.poll() is None:
                time.sleep(0.5)
                overall.n = _count_finished(runs_file, keys)
                overall.refresh()
            if process.returncode != 0:
                _record_crash(runs_file, plan, backend, engine, args.device, pair_keys, process.returncode)
    except KeyboardInterrupt:
        overall.close()
        sys.exit(f"interrupted: finished runs are in {runs_file}; run the same command again to resume")
    finally:
        if process is not None and process.poll() is None:  # never leave a backend running on its own
            process.terminate()
            process.wait()
    overall.n = _count_finished(runs_file, keys)
    overall.close()
    wall = time.perf_counter() - start
    table = write_reports(args.out, plan[0].spec)
    append_record(Path(args.out) / SWEEPS_FILE, {  # the sweep's own wall time, beside its runs
        "command": " ".join(["python -m experiments.compare", *(sys.argv[1:] if argv is None else argv)]),
        "wall_seconds": round(wall, 1), "runs_planned": total, "runs_finished": overall.n,
        "runs_this_session": overall.n - finished_at_start,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "env": capture_env({}, args.device, {})})
    print(table_markdown(table))
    print(f"\n{overall.n} of {total} runs finished ({wall:.0f} s this session); wrote table.md, table.csv, "
          f"curves.png, accuracy.png, findings.md in {args.out} (sweep timing in {SWEEPS_FILE})")


def _count_finished(runs_file: Path, keys: dict) -> int:
    done = finished_keys(runs_file)
    return sum(k in done for pair_keys in keys.values() for k in pair_keys)


def _record_crash(runs_file: Path, plan: list[PlannedRun], backend: str, engine: str | None, device: str,
                  pair_keys: list[tuple], returncode: int) -> None:
    """A backend process that died records its unfinished runs as failed, so the table shows them."""
    done = finished_keys(runs_file)
    env = capture_env({}, device, {})
    error = f"the {backend}{'/' + engine if engine else ''} process exited with status {returncode}; see its output"
    for planned, key in zip(plan, pair_keys):
        if key not in done:
            append_record(runs_file, make_record(planned.spec, planned.variant, backend, engine, device,
                                                 data_sha256="", env=env, error=error))


if __name__ == "__main__":
    main()

"""Re-run the records of a results directory on this machine and report what reproduced.

    python -m experiments.reproduce docs/results/cpu-quick --sample 6
    python -m experiments.reproduce DIR --backends jax,keras/jax --quick-only

Reads DIR/runs.jsonl and keeps the last record of each finished run (ok or diverged) whose spec
``experiments.run``'s flags can make again (or, for a cell of the versions study, ``experiments.versions``'
flags: it is re-run by that command, in its release's environment); then ``--backends`` and ``--quick-only``
filter them, and ``--sample N`` draws N with a generator seeded by ``--sample-seed`` (the same records from
the same file, on any machine). Each is re-run in its own ``experiments.run`` process, planned and run as the sweep does
(``experiments.harness.sweep``: the command ``experiments.compare`` builds, a unit per run, the local executor,
as many threads as the record's run had) into a scratch directory; each re-run is set beside its record
(``experiments.reproduce.report``: identical, same outcome, different outcome, with both machine classes), and
DIR gets reproduction.md and reproduction.jsonl. The atlas' trained cells are re-run by its training child
(``experiments.atlas.train_child``). An atlas directory with ``--probe``, or one of the probe stage alone
(DIR/atlas.jsonl, no runs.jsonl), has its probe re-run whole and compared cell by cell
(``experiments.reproduce.atlas``: probe_reproduction.md and .jsonl; the record filters do not apply to it).
Exit status: 0 when every outcome (an atlas cell's loss path) held, 1 when any changed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from backends import BACKEND_NAMES, KERAS_ENGINES
from common.data import find_mnist, load_mnist
from common.results import FINISHED, RUNS_FILE, backend_label, read_records, record_key
from common.spec import Spec, SpecError
from common.variants import VARIANTS
from experiments import run
from experiments.atlas import report as atlas_report
from experiments.atlas import training
from experiments.compare import command as compare
from experiments.harness import cli, sweep
from experiments.harness.published import check_publishable
from experiments.harness.report import machine_class_of
from experiments.harness.runner import PlannedRun
from experiments.reproduce import atlas
from experiments.reproduce.report import (PAIRS_FILE, Pair, earlier_reruns, summary_lines, table_markdown,
                                        write_report)
from experiments.versions import command as versions

PROG = "python -m experiments.reproduce"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("dir", metavar="DIR", help="a results directory holding runs.jsonl")
    parser.add_argument("--sample", type=int, metavar="N", help="re-run N of the records picked (default: all)")
    parser.add_argument("--sample-seed", type=int, default=0, metavar="S",
                        help="seed of the generator that draws the sample (default %(default)s)")
    parser.add_argument("--backends", default="",
                        help="comma-separated rows: backends (jax, torch, keras) or labels (keras/jax); default: all")
    parser.add_argument("--quick-only", action="store_true",
                        help=f"only records no larger than experiments.compare --quick ({compare.QUICK['epochs']} "
                             f"epoch, {compare.QUICK['train_size']} training and {compare.QUICK['test_size']} test "
                             "images)")
    parser.add_argument("--probe", action="store_true",
                        help="an atlas directory: re-run its probe stage (DIR/atlas.jsonl) rather than its training "
                             "records (the default where DIR also has runs.jsonl)")
    parser.add_argument("--data", metavar="PATH",
                        help="the MNIST .npz the records trained on (default: $MNIST_PATH, caches, download)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    runs, probed = Path(args.dir) / RUNS_FILE, (Path(args.dir) / atlas.ATLAS_FILE).is_file()
    if args.probe and not probed:
        parser.error(f"--probe: {Path(args.dir) / atlas.ATLAS_FILE} does not exist; it re-runs an atlas "
                     "directory's probe stage")
    if probed and (args.probe or not runs.is_file()):
        reproduce_atlas(args, argv)
    if not runs.is_file():
        cli.fail(PROG, f"no results file at {runs}; give a directory holding the runs.jsonl of a sweep (or the "
                       "atlas.jsonl of the atlas' probe)")
    if args.sample is not None and args.sample < 1:
        parser.error(f"--sample {args.sample}: give a positive number of records")
    rows = parse_rows(parser, args.backends)
    with cli.friendly_errors(PROG):
        check_publishable(args.dir, elsewhere="into a copy of the directory outside docs/results/")
        data = find_mnist(args.data).resolve()
        chosen, arguments, skipped = choose(args, rows, runs, data)
        check_data(chosen, data)
        new = [dataclasses.replace(pair, command=command_line(argv)) for pair in rerun(chosen, arguments)]
    published = {record_key(r): r for r in latest_runs(read_records(runs))}
    pairs = earlier_reruns(Path(args.dir) / PAIRS_FILE, published, Pair.key_of,
                           {machine_class_of(p.rerun) for p in new}, Pair) + new
    written = write_report(args.dir, pairs, skipped)
    print(table_markdown(new), "", *summary_lines(new), sep="\n")
    print(f"\nwrote {', '.join(str(path) for path in written)}")
    sys.exit(1 if any(p.verdict == "different_outcome" for p in new) else 0)  # this re-run's pairs, not those kept


def reproduce_atlas(args: argparse.Namespace, argv: list[str] | None) -> NoReturn:
    """The atlas' probe stage re-run whole into a scratch directory and compared with DIR/atlas.jsonl."""
    if args.sample is not None or args.backends or args.quick_only:
        print(f"{PROG}: an atlas directory's probe is re-run whole (a few minutes); --sample, --backends and "
              "--quick-only apply to run records and are ignored here", file=sys.stderr)
    with cli.friendly_errors(PROG):
        check_publishable(args.dir, elsewhere="into a copy of the directory outside docs/results/")
        data = find_mnist(args.data).resolve()
        with tempfile.TemporaryDirectory(prefix="xent-parity-reproduce-atlas-") as scratch:
            try:
                published = atlas_report.read(Path(args.dir))
                new = atlas.pair(published, atlas.rerun_probe(data, Path(scratch)), command_line(argv))
            except atlas.ProbeFailed as exc:
                cli.fail(PROG, str(exc))
    pairs = earlier_reruns(Path(args.dir) / atlas.PROBE_FILES[1], {atlas.key(r): r for r in published},
                           atlas.key, {machine_class_of(p.rerun) for p in new if p.rerun}, atlas.ProbePair) + new
    written = atlas.write_report(args.dir, pairs)
    print(*atlas.summary_lines(new), sep="\n")
    print(f"\nwrote {', '.join(str(path) for path in written)}")
    sys.exit(1 if any(p.verdict == "different_path" for p in new) else 0)


def command_line(argv: list[str] | None) -> str:
    """The command as its user typed it (it goes into each pair it made)."""
    return " ".join([PROG, *(sys.argv[1:] if argv is None else argv)])


# --- picking records -----------------------------------------------------------------------------------------
def parse_rows(parser: argparse.ArgumentParser, text: str) -> set[str]:
    """``--backends``: backend names and backend/engine labels; empty: every row."""
    rows = {token for token in text.replace(",", " ").split() if token}
    known = {*BACKEND_NAMES, *(backend_label("keras", engine) for engine in KERAS_ENGINES)}
    unknown = sorted(rows - known)
    if unknown:
        parser.error(f"--backends: unknown row {', '.join(unknown)}; choose from: {', '.join(sorted(known))}")
    return rows


def choose(args: argparse.Namespace, rows: set[str], runs: Path,
           data: Path) -> tuple[list[dict[str, Any]], dict[tuple, list[str]], list[str]]:
    """(the records to re-run, {run key: experiments.run arguments}, a line per finished record that command
    cannot make again); none left to re-run is an error (exit 2)."""
    records = [r for r in latest_runs(read_records(runs)) if r["status"] in FINISHED]
    arguments, skipped = split_runnable(records, data)
    runnable = [r for r in records if record_key(r) in arguments]
    chosen = sample(pick(runnable, rows, args.quick_only), args.sample, args.sample_seed)
    if not chosen:
        cli.fail(PROG, f"{runs}: none of its {len(records)} finished records is left to re-run after the filters "
                       f"({len(skipped)} not runnable by experiments.run); widen --backends or drop --quick-only")
    return chosen, arguments, skipped


def latest_runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each run (a resumed sweep appends a retry after a failure), in first-seen order."""
    return list({record_key(r): r for r in records}.values())


def rerun_args(record: dict[str, Any], data: Path) -> tuple[list[str] | None, str | None]:
    """(the ``experiments.run`` arguments that make the record's run again, None) — the command
    ``experiments.compare`` gives its units — or (None, why not) when no flags make exactly its spec."""
    try:
        spec = Spec.from_dict(record["spec"])
    except (SpecError, TypeError) as exc:
        return None, f"its spec is not this version's ({exc})"
    if spec.tf_version is not None:  # a cell of the versions study: its own command makes it, in its release
        return versions.rerun_args(record, data)
    if spec.loss_cell is not None:  # an atlas cell trained: the atlas' training child makes it
        return training.rerun_args(record, data)
    flags = argparse.Namespace(
        variants=record["variant"], epochs=spec.epochs, prob_loss=spec.prob_loss, softmax=spec.softmax,
        input_scale=spec.input_scale, data_order=spec.data_order, device=record["device"], loop_exec=spec.loop_exec,
        controls=False, train_size=spec.train_size, test_size=spec.test_size, keep_going=not spec.stop_on_nonfinite,
        verbose=False)
    args = compare.child_args(flags, spec.seed, record["backend"], record["engine"], data)
    if (spec.optimizer, spec.epsilon) != (Spec().optimizer, Spec().epsilon):  # the plateau study's ablations
        args += cli.optimizer_args(spec.optimizer, spec.epsilon)
    parser = run.build_parser()
    plan = cli.plan(parser, parser.parse_args(args), record["backend"], record["engine"])
    planned = next((p.spec for p in plan if p.variant.name == record["variant"]), None)
    if planned == spec:
        return args, None
    fields = sorted(k for k, v in spec.to_dict().items() if planned is None or planned.to_dict()[k] != v)
    return None, f"experiments.run has no flags for its spec's {', '.join(fields)}"


def split_runnable(records: list[dict[str, Any]], data: Path) -> tuple[dict[tuple, list[str]], list[str]]:
    """({run key: its ``experiments.run`` arguments} for the records that command can make again, and a line
    for each record it cannot)."""
    arguments, skipped = {}, []
    for record in records:
        args, why_not = rerun_args(record, data)
        if args is None:
            skipped.append(f"{describe(record)}: {why_not}")
        else:
            arguments[record_key(record)] = args
    return arguments, skipped


def describe(record: dict[str, Any]) -> str:
    return f"{backend_label(record['backend'], record['engine'])} {record['variant']} seed {record['seed']} " \
           f"(spec {record['spec_hash']})"


def is_quick(spec: dict[str, Any]) -> bool:
    """No larger than ``experiments.compare --quick``: at most its epochs and its training and test images."""
    return spec["epochs"] <= compare.QUICK["epochs"] and all(
        spec[size] is not None and spec[size] <= compare.QUICK[size] for size in ("train_size", "test_size"))


def pick(records: list[dict[str, Any]], rows: set[str], quick_only: bool) -> list[dict[str, Any]]:
    return [r for r in records
            if (not rows or r["backend"] in rows or backend_label(r["backend"], r["engine"]) in rows)
            and (not quick_only or is_quick(r["spec"]))]


def sample(records: list[dict[str, Any]], size: int | None, seed: int) -> list[dict[str, Any]]:
    """``size`` of ``records`` drawn without replacement by ``default_rng(seed)``, in file order; all of them
    when ``size`` is None or not smaller."""
    if size is None or size >= len(records):
        return records
    drawn = np.random.default_rng(seed).choice(len(records), size=size, replace=False)
    return [records[i] for i in sorted(drawn)]


def check_data(records: list[dict[str, Any]], data: Path) -> None:
    """The data file must be the one the records trained on (its content hash), or the re-runs mean nothing."""
    content = load_mnist(data).content_sha256
    other = [r for r in records if r["data_sha256"] != content]
    if other:
        cli.fail(PROG, f"{len(other)} of the {len(records)} picked records trained on data with content hash "
                       f"{other[0]['data_sha256'][:16]}, but {data} has {content[:16]}; give the file they used "
                       "with --data")


# --- re-running ----------------------------------------------------------------------------------------------
def threads_of(record: dict[str, Any]) -> int:
    """The threads the record's run had: its process' ``OMP_NUM_THREADS`` (a sweep sets it to the CPUs of the
    unit), else its machine's CPU count (what a sweep gives a unit by default)."""
    env = record["env"]
    setting = ((env.get("machine") or {}).get("settings") or {}).get("OMP_NUM_THREADS", "")
    first = setting.split(",")[0]
    return int(first) if first.isdigit() and int(first) > 0 else int(env["cpu_count"])


def rerun(records: list[dict[str, Any]], arguments: dict[tuple, list[str]]) -> list[Pair]:
    """Re-run each record in its own process, as a sweep unit of one run with ``arguments[its key]``, grouped
    by thread count (a local executor per count) — or, for the versions study's cells, by that study's own
    command (``rerun_versions``); the pairs in the records' order."""
    by_versions = [r for r in records if r["spec"].get("tf_version") is not None]
    swept = [r for r in records if r["spec"].get("tf_version") is None]
    units = [unit_of(record, arguments[record_key(record)]) for record in swept]
    with tempfile.TemporaryDirectory(prefix="xent-parity-reproduce-") as scratch:
        by_threads = sorted(zip(swept, units), key=lambda pair: threads_of(pair[0]))
        for cpus, group in itertools.groupby(by_threads, key=lambda pair: threads_of(pair[0])):
            sweep.run_units([unit for _, unit in group], scratch, sweep.LocalExecutor(cpus))
        reruns = {record_key(r): r for r in read_records(Path(scratch) / RUNS_FILE)}
        reruns.update(rerun_versions(by_versions, arguments, Path(scratch)))
    return [Pair(record, reruns[record_key(record)]) for record in records]


def rerun_versions(records: list[dict[str, Any]], arguments: dict[tuple, list[str]],
                   scratch: Path) -> dict[tuple, dict[str, Any]]:
    """The versions study's cells re-run by ``experiments.versions`` into ``scratch``, one process per release
    and spec (all of its picked cells: the study runs a release's cells in one child); {run key: record}."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for record in records:
        args = arguments[record_key(record)]
        at = args.index("--cells")
        groups.setdefault(tuple(args[:at] + args[at + 2:]), []).append(args[at + 1])
    reruns = {}
    for index, (args, cells) in enumerate(groups.items()):
        out = scratch / f"versions-{index}"
        failure = sweep.run_module("experiments.versions", [*args, "--cells", ",".join(cells), "--out", str(out)],
                                   versions.CHILD_TIMEOUT_S)
        if failure:
            cli.fail(PROG, failure)
        reruns.update({record_key(r): r for r in read_records(out / RUNS_FILE)})
    return reruns


def unit_of(record: dict[str, Any], args: list[str]) -> sweep.Unit:
    """The sweep unit that runs exactly ``record``'s run: one process of ``experiments.run ARGS`` (of the atlas'
    training child for an atlas cell)."""
    if record["spec"].get("loss_cell") is not None:
        return training.rerun_unit(record, args)
    planned = PlannedRun(Spec.from_dict(record["spec"]), VARIANTS[record["variant"]])
    [unit] = sweep.make_units({(record["backend"], record["engine"]): [planned]}, record["device"],
                              lambda backend, engine, seed: args)
    return unit

"""The sweep driver: units of work run by an executor, their records appended by the driver alone.

A ``Unit`` is one backend (and Keras engine) on one seed: one ``python -m experiments.run`` child process (or
a study's own child module built on ``experiments.harness.runner``), the same command on every executor. The
child writes into a scratch directory of its own; the driver (``run_units``) is the only writer of
``DIR/runs.jsonl``, so resuming, skipping finished runs and the report work the same whether the child ran
here or on another machine.

Executors:
  local — one child at a time on this machine (frameworks do not share a process, and a 2-core machine gains
          nothing from two); its records reach ``runs.jsonl`` as each run ends (the scratch file is tailed).
  ray   — each unit is a Ray task (``num_cpus`` = ``--cpus-per-task``) on any node of a Ray cluster, or of a
          local Ray instance; the task is a Ray generator that streams its records' lines back as runs end,
          so a sweep stopped mid-unit keeps the runs that unit finished. Ray is imported only here.

Either way the child's threads are the CPUs its unit was given (``child_env``), so a spec gives the same
numbers on both. A unit whose child exits non-zero, or whose Ray worker dies, leaves its unfinished runs
recorded as ``failed`` with the reason; the sweep goes on, and running it again retries them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from experiments.harness import cli
from common.results import (FINISHED, RECORD_KEYS, RUNS_FILE, append_record, capture_env, make_record, read_records,
                            record_key, run_key)
from experiments.harness.published import check_publishable
from experiments.harness.runner import PlannedRun

EXECUTORS = ("local", "ray")
RAY_EXTRA = "pip install -c constraints.txt -e '.[ray]'"
ROOT = Path(__file__).resolve().parents[2]  # this node's checkout: the child's working directory
# Thread pools sized by the environment (OpenMP for torch, MKL/OpenBLAS for numpy, TensorFlow's intra-op pool).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One backend/engine on one seed: the arguments of its ``experiments.run`` child and the runs it makes.

    ``args`` excludes ``--out``: each executor points the child at a scratch directory. ``module`` is the child's
    module, run with ``python -m``: ``experiments.run``, or a study's child that takes the same ``--out``.
    """

    backend: str
    engine: str | None
    seed: int
    device: str
    args: tuple[str, ...]
    planned: tuple[PlannedRun, ...]
    module: str = "experiments.run"

    @property
    def label(self) -> str:
        return f"{self.backend}{'/' + self.engine if self.engine else ''} seed {self.seed}"

    def keys(self) -> list[tuple]:
        return [run_key(p.spec.hash(), self.backend, self.engine, p.variant.name, p.spec.seed, self.device)
                for p in self.planned]


def make_units(plans: dict[tuple[str, str | None], list[PlannedRun]], device: str,
               child_args: Callable[[str, str | None, int], list[str]]) -> list[Unit]:
    """Split each row's plan (by (backend, engine)) per seed; ``child_args(backend, engine, seed)`` is the
    ``experiments.run`` argument list of that unit (without ``--out``)."""
    units = []
    for (backend, engine), plan in plans.items():
        for seed in dict.fromkeys(p.spec.seed for p in plan):
            runs = tuple(p for p in plan if p.spec.seed == seed)
            units.append(Unit(backend, engine, seed, device, tuple(child_args(backend, engine, seed)), runs))
    return units


# Events an executor yields while it runs units.
@dataclasses.dataclass(frozen=True)
class Records:
    """Lines of records a unit's child wrote (its runs' results, as they are in the child's runs.jsonl)."""

    index: int
    lines: list[str]


@dataclasses.dataclass(frozen=True)
class Ended:
    """A unit's child is gone; ``error`` says why it failed (None: it exited normally)."""

    index: int
    error: str | None


class Executor(Protocol):
    def run(self, jobs: list[tuple[Unit, list[str]]]) -> Iterator[Records | Ended]:
        """Run each (unit, lines of its already-finished records) job; yield its Records, then its Ended."""


class ExecutorError(RuntimeError):
    """The executor cannot run at all (e.g. no Ray cluster at the address); the message says why."""


def child_command(args: Iterable[str], out: str | os.PathLike, module: str = "experiments.run") -> list[str]:
    return [sys.executable, "-m", module, *args, "--out", str(out)]


def child_env(cpus: int, bar_position: int = 0) -> dict[str, str]:
    """This process's environment with the child's thread pools sized to ``cpus``.

    OpenMP's wait policy is PASSIVE unless already set: idle spinning threads ran torch ~30x slower on 2 cores.
    Keras' engine variables (KERAS_BACKEND, ...) are set by the child itself (backends/keras_backend/engine.py).
    """
    env = dict(os.environ, XENT_PARITY_BAR_POSITION=str(bar_position))
    env.update({name: str(cpus) for name in THREAD_VARIABLES})
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of ``path`` (a line being written is left for the next read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line + "\n" for line in text.split("\n")[:-1]]


def stream_child(args: tuple[str, ...], finished: list[str], cpus: int, bar_position: int = 0,
                 module: str = "experiments.run") -> Iterator[list[str] | int]:
    """Run one unit's child in a scratch directory: yield each batch of new record lines as its runs end, then
    its exit status (an int). The body of a local unit, and of a Ray generator task.

    ``finished`` (lines of runs the unit already finished) is written to the scratch file first, so the child
    skips those runs as it would in the results directory itself. Closing the generator early (Ctrl-C, an error
    in the driver) stops the child: a backend never runs on alone.
    """
    with tempfile.TemporaryDirectory(prefix="xent-parity-unit-") as scratch:
        runs = Path(scratch) / RUNS_FILE
        runs.write_text("".join(finished), encoding="utf-8")
        seen = len(finished)
        process = subprocess.Popen(child_command(args, scratch, module), env=child_env(cpus, bar_position), cwd=ROOT)
        try:
            while True:
                running = process.poll() is None
                lines = complete_lines(runs)[seen:]
                if lines:
                    seen += len(lines)
                    yield lines
                if not running:
                    break
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
        yield process.returncode


def run_module(module: str, args: list[str], timeout: float) -> str | None:
    """``python -m MODULE ARGS`` from this checkout, waited for; None when it exits 0, else one line saying what
    failed (the command, its exit status and its last line of error output)."""
    command = [sys.executable, "-m", module, *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode == 0:
        return None
    last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
    return f"{' '.join(command[2:])} failed (exit {result.returncode}): {last}"


def exit_error(unit: Unit, returncode: int) -> str | None:
    if returncode == 0:
        return None
    return f"the {unit.label} process exited with status {returncode}; see its output"


class LocalExecutor:
    """Units one after another, each a child process of this one, with ``cpus`` threads (default: all cores)."""

    def __init__(self, cpus: int | None = None):
        self.cpus = cpus or os.cpu_count() or 1

    def run(self, jobs: list[tuple[Unit, list[str]]]) -> Iterator[Records | Ended]:
        # Under a terminal the sweep's overall bar holds line 0; each run's bar goes below it.
        position = 1 if sys.stderr.isatty() else 0
        for index, (unit, finished) in enumerate(jobs):
            with contextlib.closing(stream_child(unit.args, finished, self.cpus, position, unit.module)) as child:
                for item in child:
                    if isinstance(item, int):
                        yield Ended(index, exit_error(unit, item))
                    else:
                        yield Records(index, item)


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` address must answer a TCP connect within ``timeout`` seconds: ``ray.init`` itself keeps
    retrying an address where nothing listens for minutes."""
    if not address or address == "auto" or ":" not in address or "://" in address:
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise ExecutorError(f"no Ray cluster answers at {address} ({exc}); start one there with `ray start --head`, "
                            "or check --address") from None


class RayExecutor:
    """Units as Ray tasks: on the cluster at ``address`` (``auto``: the one this machine joined), or on a local
    Ray instance started for the sweep when ``address`` is None (or on the one already running in this process).

    Each task asks for ``cpus`` CPUs (default: the smallest node's count, so every node can take a task) and
    gets no retries: a task whose worker dies is reported, not silently re-run.
    """

    def __init__(self, address: str | None = None, cpus: int | None = None):
        self.address, self.cpus = address, cpus

    def run(self, jobs: list[tuple[Unit, list[str]]]) -> Iterator[Records | Ended]:
        import ray

        started = not ray.is_initialized()
        if started:
            check_reachable(self.address)
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level="WARNING",
                         configure_logging=True, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {self.address}" if self.address else "(a local instance)"
                raise ExecutorError(f"cannot start or reach Ray {where}: {exc}") from None
        pending: dict[Any, int] = {}  # a generator task's ObjectRefGenerator -> its job's index
        try:
            cpus = self._cpus_per_task()
            task = ray.remote(num_cpus=cpus, max_retries=0)(stream_child)
            pending = {task.remote(unit.args, finished, cpus, 0, unit.module): index
                       for index, (unit, finished) in enumerate(jobs)}
            while pending:
                [child], _ = ray.wait(list(pending), num_returns=1)  # a task with a new item (or its end)
                index = pending[child]
                label = jobs[index][0].label
                try:
                    item = ray.get(next(child))
                except StopIteration:  # ended without an exit status: not expected, but never wait on it again
                    item = f"the Ray task running {label} ended without an exit status"
                except ray.exceptions.RayError as exc:
                    what = "task raised" if isinstance(exc, ray.exceptions.RayTaskError) else "worker died"
                    reason = (str(exc).strip().splitlines() or [""])[0]
                    item = f"the Ray {what} running {label} ({type(exc).__name__}: {reason})"
                if isinstance(item, list):  # record lines; the task goes on
                    yield Records(index, item)
                    continue
                del pending[child]
                yield Ended(index, exit_error(jobs[index][0], item) if isinstance(item, int) else item)
        finally:
            for child in pending:  # interrupted: stop what is still queued or running
                ray.cancel(child, force=True)
            if started:
                ray.shutdown()

    def _cpus_per_task(self) -> int:
        """``cpus``, or the smallest node's CPU count; a request no node can meet would wait forever: an error."""
        import ray

        counts = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]
        counts = [c for c in counts if c > 0]
        if not counts:
            raise ExecutorError("the Ray cluster has no node with CPUs")
        if self.cpus is not None and self.cpus > max(counts):
            raise ExecutorError(f"--cpus-per-task {self.cpus}: the largest Ray node has {max(counts)} CPUs")
        return self.cpus or min(counts)


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="where the backend processes run: here, one at a time (default), or as Ray tasks")
    parser.add_argument("--address", metavar="ADDR",
                        help="--executor ray: the cluster (HEAD:6379, or auto); default: a local Ray instance")
    parser.add_argument("--cpus-per-task", type=int, metavar="N",
                        help="CPUs, and threads, of each backend process (default: all of a machine's; "
                             "ray: the smallest node's)")


def make_executor(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Executor:
    """The executor the flags ask for; a flag that makes no sense, or Ray not installed, is a parser error."""
    if args.cpus_per_task is not None and args.cpus_per_task < 1:
        parser.error(f"--cpus-per-task {args.cpus_per_task}: give a positive number of CPUs")
    if args.executor == "local":
        if args.address:
            parser.error("--address is for --executor ray")
        return LocalExecutor(args.cpus_per_task)
    if importlib.util.find_spec("ray") is None:
        cli.fail(parser.prog, f"--executor ray needs Ray, the 'ray' extra: {RAY_EXTRA}")  # keeps the quotes
    return RayExecutor(args.address, args.cpus_per_task)


@dataclasses.dataclass(frozen=True)
class SweepCount:
    planned: int
    finished: int
    this_session: int


def run_units(units: list[Unit], out_dir: str | os.PathLike, executor: Executor) -> SweepCount:
    """Run every unit not yet finished in ``DIR/runs.jsonl`` and append its records there (see module docstring).

    The caller holds the directory's lock (common.dirlock) for the sweep. Refuses (``DirtyTree``) to write
    under docs/results/ from uncommitted code (``published``).
    """
    check_publishable(out_dir)
    runs_file = Path(out_dir) / RUNS_FILE
    records = read_records(runs_file)
    done = {record_key(r) for r in records if r["status"] in FINISHED}
    wanted = [set(unit.keys()) for unit in units]
    total = sum(map(len, wanted))
    at_start = sum(len(keys & done) for keys in wanted)
    jobs, job_keys = [], []
    for unit, keys in zip(units, wanted):
        if not keys <= done:
            finished = [_line(r) for r in records if r["status"] in FINISHED and record_key(r) in keys]
            jobs.append((unit, finished))
            job_keys.append(keys)
    if at_start:
        tqdm.write(f"{runs_file}: {at_start} of {total} runs already finished; skipping them")
    overall = tqdm(total=total, initial=at_start, desc="sweep", unit="run", disable=None, position=0)
    written: list[set[tuple]] = [set() for _ in jobs]  # keys recorded for each job in this session
    try:
        with contextlib.closing(executor.run(jobs)) as events:
            for event in events:
                unit, keys = jobs[event.index][0], job_keys[event.index]
                if isinstance(event, Records):
                    for record in _parse(event.lines):
                        key = record_key(record)
                        if key in keys and key not in done:
                            append_record(runs_file, record)
                            written[event.index].add(key)
                            if record["status"] in FINISHED:
                                done.add(key)
                                overall.update(1)
                elif event.error is not None:
                    tqdm.write(f"{unit.label}: failed: {event.error}")
                    _record_failures(runs_file, unit, done | written[event.index], event.error)
    finally:
        overall.close()
    finished = sum(len(keys & done) for keys in wanted)
    return SweepCount(total, finished, finished - at_start)


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, allow_nan=False) + "\n"


def _parse(lines: list[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict) and set(RECORD_KEYS) <= set(record):
                yield record


def _record_failures(runs_file: Path, unit: Unit, recorded: set[tuple], error: str) -> None:
    """A unit that died records each of its runs not yet recorded as failed, so the table shows them."""
    env = capture_env({}, unit.device, {})
    for planned, key in zip(unit.planned, unit.keys()):
        if key not in recorded:
            append_record(runs_file, make_record(planned.spec, planned.variant, unit.backend, unit.engine,
                                                 unit.device, data_sha256="", env=env, error=error))

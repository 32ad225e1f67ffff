"""Run records: one JSON object per run, appended to ``runs.jsonl`` as whole lines; reader; environment.

Fixed keys (other tools read them): spec, spec_hash, backend, engine, variant, mode, head, prob_loss,
softmax, loop_exec, input_scale, seed, device, data_sha256, epoch_costs, test_loss, test_accuracy,
test_predicted_shares, status, first_nonfinite_step, error, diagnostics, wall_seconds, compile_seconds,
steps_per_second, label_shares, env. ``softmax`` is None for the logits head, ``loop_exec`` None for fit;
``test_predicted_shares[k]`` is the share of test rows the model predicts as class k, ``label_shares`` the
share of each class among the run's training and test rows ({"train": [...], "test": [...]}).
Non-finite numbers are written as null (JSON has no NaN); ``status`` says what happened.

An append is one ``os.write`` of a complete line to a file opened with O_APPEND, followed by fsync, so a
crash leaves at worst a half-written last line; ``read_records`` skips such a line and a later append
starts on a fresh line.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from common.machine import describe as describe_machine, machine_class
from common.spec import Spec
from common.variants import Variant

RECORD_KEYS = (
    "spec", "spec_hash", "backend", "engine", "variant", "mode", "head", "prob_loss", "softmax", "loop_exec",
    "input_scale", "seed", "device", "data_sha256", "epoch_costs", "test_loss", "test_accuracy",
    "test_predicted_shares", "label_shares", "status", "first_nonfinite_step",
    "error", "diagnostics", "loss_path", "wall_seconds", "compile_seconds", "steps_per_second", "env",
    "finished_at",
)
FINISHED = ("ok", "diverged")
RUNS_FILE = "runs.jsonl"
#: The thread settings of every record's ``env.threads``, whatever the backend: the framework's intra-op and
#: inter-op thread counts, and OpenMP's wait policy where OpenMP runs the math (torch).
THREAD_KEYS = ("intra_op", "inter_op", "omp_wait_policy")


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def backend_label(backend: str, engine: str | None) -> str:
    """How reports name a backend and engine: ``torch``, ``keras/jax``."""
    return f"{backend}/{engine}" if engine else backend


def run_key(spec_hash: str, backend: str, engine: str | None, variant: str, seed: int, device: str) -> tuple:
    """What makes two runs the same run (for resuming a sweep)."""
    return (spec_hash, backend, engine, variant, seed, device)


def record_key(record: dict[str, Any]) -> tuple:
    return run_key(record["spec_hash"], record["backend"], record["engine"], record["variant"], record["seed"],
                   record["device"])


def make_record(spec: Spec, variant: Variant, backend: str, engine: str | None, device: str, data_sha256: str,
                env: dict[str, Any], outcome: Any = None, error: str | None = None,
                label_shares: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """A run record from a ``TrainOutcome`` (``outcome``), or a failed one from ``error``."""
    record: dict[str, Any] = {
        "spec": spec.to_dict(),
        "spec_hash": spec.hash(),
        "backend": backend,
        "engine": engine,
        "variant": variant.name,
        "mode": variant.mode,
        "head": variant.head,
        "prob_loss": spec.prob_loss if variant.uses_prob_loss else None,
        "softmax": spec.softmax if variant.uses_prob_loss else None,
        "loop_exec": spec.loop_exec,
        "input_scale": spec.input_scale,
        "seed": spec.seed,
        "device": device,
        "data_sha256": data_sha256,
        "label_shares": label_shares,
        "env": env,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if outcome is None:
        record.update(status="failed", error=error, epoch_costs=[], test_loss=None, test_accuracy=None,
                      test_predicted_shares=None,
                      first_nonfinite_step=None, diagnostics=[], loss_path=None, wall_seconds=None,
                      compile_seconds=None, steps_per_second=None)
    else:
        record.update(
            status=outcome.status,
            error=None,
            epoch_costs=[finite_or_none(c) for c in outcome.epoch_costs],
            test_loss=finite_or_none(outcome.test_loss),
            test_accuracy=finite_or_none(outcome.test_accuracy),
            test_predicted_shares=[round(float(s), 6) for s in outcome.test_predicted_shares],
            first_nonfinite_step=outcome.first_nonfinite_step,
            diagnostics=[d.to_dict() for d in outcome.diagnostics],
            loss_path=outcome.loss_path,
            wall_seconds=round(outcome.wall_seconds, 3),
            compile_seconds=round(outcome.compile_seconds, 3),
            steps_per_second=round(outcome.steps_per_second, 2),
        )
    return {key: record[key] for key in RECORD_KEYS}


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as one whole line (see module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=False, allow_nan=False, default=_json_default) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size and not _ends_with_newline(path):
            line = "\n" + line  # a crash left half a line: start ours on a fresh one
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete record in ``path`` (missing file: none); malformed lines are skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    records, skipped = [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if isinstance(record, dict) and set(RECORD_KEYS) <= set(record):
                records.append(record)
            else:
                skipped += 1
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} incomplete line(s) (an interrupted write)", stacklevel=2)
    return records


def finished_keys(path: str | os.PathLike) -> set[tuple]:
    """Keys of the runs in ``path`` that finished (ok or diverged); failed runs are tried again."""
    return {record_key(r) for r in read_records(path) if r["status"] in FINISHED}


def capture_env(framework_versions: dict[str, str], device_name: str, threads: dict[str, Any],
                kernels: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions, machine and code identity recorded beside every result.

    ``device_name`` is ``"cpu"`` or the accelerator's model; ``threads`` holds exactly ``THREAD_KEYS`` (a
    setting the framework does not have, or a run that never started one, is None); ``kernels`` is the
    framework's own account of the kernels it runs (a backend's ``kernel_info()``; None where no framework ran).
    What decides a run's bits is in ``machine`` (``common.machine.describe``: CPU vendor, family, model,
    instruction-set flags, kernel settings, GPUs) and its short key ``machine_class``; ``cpu`` (the model
    name) stays for older readers.
    """
    unknown = sorted(set(threads) - set(THREAD_KEYS))
    if unknown:
        raise ValueError(f"thread settings {unknown} are not among {THREAD_KEYS}")
    threads = {key: threads.get(key) for key in THREAD_KEYS}
    machine = describe_machine()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "frameworks": framework_versions,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device_name": device_name,
        "threads": threads,
        "machine": machine,
        "machine_class": machine_class(machine, device_name),
        "kernels": kernels,
        "git_commit": git_commit(),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: This checkout, whose git state every record names.
CHECKOUT = Path(__file__).resolve().parent.parent
#: Where the published results live, relative to the checkout (their files are outputs, not code).
RESULTS_DIR = "docs/results"


def git_commit() -> str | None:
    """HEAD of this checkout, with ``+dirty`` when tracked files have uncommitted changes (``tracked_changes``);
    None outside git."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None
    return head.strip() + ("+dirty" if tracked_changes() else "")


def tracked_changes() -> list[str] | None:
    """The tracked files of this checkout with uncommitted changes, staged or not, as ``git status`` names them
    (``old -> new`` for a rename), results files under ``RESULTS_DIR`` aside; None outside git."""
    # Results files are what runs write, not what computes them: a sweep appending to a committed
    # docs/results/*/runs.jsonl must not mark its own later records dirty.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS_DIR}")
    return None if status is None else [line[3:] for line in status.splitlines() if line.strip()]


def _git(*args: str) -> str | None:
    """``git ARGS``' output in this checkout; None where git or the repository is missing."""
    try:
        return subprocess.run(["git", *args], cwd=CHECKOUT, capture_output=True, text=True, timeout=10,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None

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
(``experiments.bench_refs``: the post's Keras code, a PyTorch or JAX tutorial loop) on the same model, loss,
optimizer and batch size. Interleaving makes the ratios robust to load that drifts while the bench runs.

Each backend (and each extra Keras engine) runs in its own process (``--child``), which writes its figures to
``DIR/parts/``; this process merges them, checks the targets (DESIGN.md "Performance") and writes
``DIR/bench.json`` and ``DIR/bench.md``. A backend whose framework is missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from backends import BACKEND_NAMES, KERAS_ENGINES, BackendError, get_backend
from common import cli
from common.data import Dataset, Mnist, epoch_batches, load_mnist, prepare, steps_per_epoch
from common.results import capture_env
from common.spec import Spec, SpecError
from common.variants import HEADS, MODES, VARIANTS
from common.weights import initial_weights
from experiments import bench_refs
from experiments.compare import rows

DEFAULT_OUT = "results/bench"
MNIST_TRAIN_SIZE = 60_000
#: Steps of one full run of the post: 15 epochs x 600 batches.
FULL_RUN_STEPS = Spec().epochs * (MNIST_TRAIN_SIZE // Spec().batch_size)
#: Target limits (DESIGN.md "Performance", issue 8).
COMPILED_MAX_X_FLOOR = 1.5
BUSY_WAIT_X_FLOOR = 5.0
GPU_JAX_FIT_MAX_S = 2.0
GPU_TORCH_LOOP_MAX_S = 25.0
#: On a GPU a step takes well under a millisecond, so per-call costs (index upload, the loss read-back) would
#: swamp a 100-step call: time epoch-sized calls there, as a real run makes them.
GPU_DEFAULTS = {"warmup": 600, "steps": 1200}


# --- the floor: the step's matrix multiplies ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Gemm:
    """One (m, k) @ (k, n) product of a training step. ``layout`` says which operand is stored transposed, as in
    the step: ``nn`` A @ B; ``tn`` A^T @ B with A stored (k, m); ``nt`` A @ B^T with B stored (n, k)."""

    name: str
    m: int
    k: int
    n: int
    layout: str

    @property
    def a_shape(self) -> tuple[int, int]:
        return (self.k, self.m) if self.layout == "tn" else (self.m, self.k)

    @property
    def b_shape(self) -> tuple[int, int]:
        return (self.n, self.k) if self.layout == "nt" else (self.k, self.n)

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def step_gemms(spec: Spec) -> list[Gemm]:
    """Every GEMM of one step of the MLP: per layer the forward x @ W, the kernel gradient dW = X^T dY, and the
    input gradient dX = dY W^T for all but the first layer (nothing needs the gradient of the images)."""
    batch, sizes = spec.batch_size, spec.layer_sizes
    gemms = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        gemms.append(Gemm(f"dense_{i} x@W", batch, fan_in, fan_out, "nn"))
        gemms.append(Gemm(f"dense_{i} dW=X^T dY", fan_in, batch, fan_out, "tn"))
        if i > 0:
            gemms.append(Gemm(f"dense_{i} dX=dY W^T", batch, fan_out, fan_in, "nt"))
    return gemms


# --- command line -----------------------------------------------------------------------------------------------
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
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--data", metavar="PATH", help="MNIST .npz (default: $MNIST_PATH, caches, download)")
    parser.add_argument("--train-size", type=int, help="first N training images (default: all 60000)")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help="writes DIR/bench.json, DIR/bench.md")
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
    return Path(out) / "parts" / f"{label(backend, engine).replace('/', '-')}.json"


def label(backend: str, engine: str | None) -> str:
    return f"{backend}/{engine}" if engine else backend


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
    return {"backend": backend, "engine": engine, "label": label(backend, engine), "status": "failed",
            "reason": f"its process exited with status {returncode}; see its output above"}


def assemble(parts: list[dict[str, Any]], args: argparse.Namespace, command: str, wall_s: float) -> dict[str, Any]:
    """bench.json: settings, every backend's figures (with ratios) and environment, and the targets."""
    for part in parts:
        for path in part.get("paths", []):
            path.update(ratios(path))
    return {
        "command": command,
        "device": args.device,
        "settings": {"warmup_steps": args.warmup, "timed_steps": timed_calls(args) * args.warmup,
                     "full_run_steps": FULL_RUN_STEPS,
                     "probs_loss": "clipped", "gemm_flops_per_step": sum(g.flops for g in step_gemms(Spec()))},
        "wall_seconds": round(wall_s, 1),
        "backends": parts,
        "targets": targets(parts, args.device),
    }


def ratios(path: dict[str, Any]) -> dict[str, float | None]:
    ms = path.get("ms_per_step")
    return {"x_floor": ratio(ms, path.get("floor_ms_per_step")),
            "x_reference": ratio(ms, path.get("reference_ms_per_step"))}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None where either is missing (a failed path, no reference)."""
    return numerator / denominator if numerator and denominator else None


def is_compiled(part: dict[str, Any], path: dict[str, Any]) -> bool:
    """Fit is the framework's compiled path; the JAX loops (ours and Keras-on-JAX) run a jitted step."""
    return path["mode"] == "fit" or "jax" in (part["backend"], part["engine"])


def targets(parts: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """Every target of DESIGN.md "Performance" (issue 8) that applies, with its value, limit and PASS/MISS."""
    found = []

    def check(target: str, part: dict, path: dict, value: float | None, limit: float, unit: str) -> None:
        status = "PASS" if value is not None and value <= limit else "MISS"
        found.append({"target": target, "path": f"{part['label']} {path['mode']} {path['head']}", "value": value,
                      "limit": limit, "unit": unit, "status": status, "error": path.get("error")})

    for part in parts:
        paths = part.get("paths", [])
        by_key = {(p["mode"], p["head"]): p for p in paths}
        torch_engine = "torch" in (part["backend"], part["engine"])
        for path in paths:
            if device == "cpu" and is_compiled(part, path):
                check("compiled path within 1.5x of the GEMM floor", part, path, path.get("x_floor"),
                      COMPILED_MAX_X_FLOOR, "x floor")
            if device == "cpu" and torch_engine:
                check("torch not in the OpenMP busy-wait regime", part, path, path.get("x_floor"),
                      BUSY_WAIT_X_FLOOR, "x floor")
            if path["mode"] == "loop" and path.get("has_reference"):
                check("loop no slower than its reference", part, path, path.get("x_reference"), 1.0, "x reference")
            if device == "gpu" and part["backend"] == "jax" and path["mode"] == "fit":
                check("JAX fit: training time of a full run", part, path, path.get("full_run_s"),
                      GPU_JAX_FIT_MAX_S, "s")
            if device == "gpu" and part["backend"] == "torch" and path["mode"] == "loop":
                check("torch eager: training time of a full run", part, path, path.get("full_run_s"),
                      GPU_TORCH_LOOP_MAX_S, "s")
            if device == "gpu" and part["backend"] == "torch" and path["mode"] == "fit":
                eager = by_key.get(("loop", path["head"]), {}).get("ms_per_step")
                check("torch fit no slower than torch eager", part, path, ratio(path.get("ms_per_step"), eager), 1.0,
                      "x eager")
    return found


# --- report ---------------------------------------------------------------------------------------------------
def write_report(report: dict[str, Any], out: Path) -> str:
    """Write DIR/bench.json and DIR/bench.md; return the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", report)
    markdown = render_markdown(report)
    (out / "bench.md").write_text(markdown)
    return markdown


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, allow_nan=False) + "\n")


def render_markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        f"# Benchmark ({report['device']})", "",
        f"`{report['command']}` — {report['wall_seconds']:.0f} s wall. Per path: a {settings['warmup_steps']}-step "
        f"warm-up call (compiles), then {settings['timed_steps']} timed steps in calls of the same shape; "
        f"'full run' = ms/step x {settings['full_run_steps']:,} steps (15 epochs x 600), compile excluded. "
        f"The probs head runs the `clipped` probability loss (finite, so no NaN arithmetic slows it). Each path is "
        f"timed round-robin with its floor (the step's {len(step_gemms(Spec()))} GEMMs alone, "
        f"{settings['gemm_flops_per_step'] / 1e6:.1f} MFLOP/step, in the same framework) and, for loops, its "
        f"reference loop, in the same process.", "",
        "| backend | path | ms/step | full run (s) | compile (s) | floor ms/step | x floor | reference ms/step "
        "| ours / reference | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for part in report["backends"]:
        if part["status"] != "ok":
            lines.append(f"| {part['label']} | — | | | | | | | | {part['status']}: {part['reason']} |")
            continue
        for path in part["paths"]:
            lines.append(path_row(part, path, report["device"]))
    lines += ["", "| target | path | value | limit | result |", "|---|---|---:|---:|---|"]
    for t in report["targets"]:
        value = "failed" if t["value"] is None else f"{t['value']:.2f} {t['unit']}"
        lines.append(f"| {t['target']} | {t['path']} | {value} | {t['limit']:g} {t['unit']} | {t['status']} |")
    lines += ["", "Machine, versions and reference loops:", ""]
    for part in report["backends"]:
        if part["status"] == "ok":
            env = part["env"]
            versions = ", ".join(f"{k} {v}" for k, v in env["frameworks"].items())
            lines.append(f"- {part['label']}: {env['device_name']} ({env['cpu']}, {env['cpu_count']} cores); "
                         f"Python {env['python']}, numpy {env['numpy']}, {versions}; threads {env['threads']}; "
                         f"commit {env['git_commit']}; {part['train_size']:,} training images in memory. "
                         f"Reference loop: {part['reference_loop']}")
    return "\n".join(lines) + "\n"


def path_row(part: dict[str, Any], path: dict[str, Any], device: str) -> str:
    name = f"{path['mode']} {path['head']}"
    if path.get("error"):
        return f"| {part['label']} | {name} | | | | | | | | failed: {path['error']} |"
    notes = []
    # OpenMP's spinning idle threads (DESIGN.md "Performance") made torch ~30x slower than this on 2 cores.
    torch_cpu = device == "cpu" and "torch" in (part["backend"], part["engine"])
    if torch_cpu and (path.get("x_floor") or 0) > BUSY_WAIT_X_FLOOR:
        notes.append("busy-wait suspected")
    if path.get("nonfinite_steps"):
        notes.append(f"{path['nonfinite_steps']} non-finite losses")
    return (f"| {part['label']} | {name} | {fmt(path['ms_per_step'], 2)} | {fmt(path['full_run_s'], 0)} | "
            f"{fmt(path['compile_s'], 1)} | {fmt(path['floor_ms_per_step'], 2)} | {fmt(path['x_floor'], 2)} | "
            f"{fmt(path.get('reference_ms_per_step'), 2)} | {fmt(path.get('x_reference'), 2)} | {'; '.join(notes)} |")


def fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


# --- child: one backend in this process -----------------------------------------------------------------------
def timed_calls(args: argparse.Namespace) -> int:
    return math.ceil(args.steps / args.warmup)


def batch_calls(spec: Spec, n_train: int, size: int, calls: int) -> list[np.ndarray]:
    """``calls`` arrays of ``size`` batches each, (size, batch) row indices, from consecutive epochs' orders."""
    needed = size * calls
    epochs = math.ceil(needed / steps_per_epoch(spec, n_train))
    order = np.concatenate([epoch_batches(spec, epoch, n_train) for epoch in range(epochs)])[:needed]
    return list(order.reshape(calls, size, spec.batch_size))


def measure(runs: dict[str, tuple[Callable[[Any], Any], list]]) -> dict[str, dict[str, Any]]:
    """Call each ``run`` on its first argument (the warm-up), then on the others round-robin, each call timed.

    Round-robin, so that load drifting during the bench slows every run alike and their ratios hold. Each run
    must finish its device work before it returns (host numpy, ``.item()``, or an explicit sync).
    """
    timings = {name: {"warmup_s": 0.0, "timed_s": 0.0, "outputs": []} for name in runs}
    for name, (run, calls) in runs.items():
        start = time.perf_counter()
        run(calls[0])
        timings[name]["warmup_s"] = time.perf_counter() - start
    for i in range(1, len(next(iter(runs.values()))[1])):
        for name, (run, calls) in runs.items():
            start = time.perf_counter()
            timings[name]["outputs"].append(run(calls[i]))
            timings[name]["timed_s"] += time.perf_counter() - start
    return timings


def run_child(args: argparse.Namespace, spec: Spec, data: Dataset) -> dict[str, Any]:
    """Every path of one backend, each timed with its floor and reference; what the parent reads."""
    part: dict[str, Any] = {"backend": args.child, "engine": args.engine, "label": label(args.child, args.engine)}
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


def bench_path(backend: Any, spec: Spec, mode: str, head: str, data: Dataset, floor: Callable[[int], Any],
               reference_module: ModuleType | None, size: int, calls: int) -> dict[str, Any]:
    """One trainer's warm-up and timed calls, round-robin with the floor and (for loops) the reference loop."""
    result: dict[str, Any] = {"mode": mode, "head": head, "prob_loss": spec.prob_loss if head == "probs" else None,
                              "has_reference": reference_module is not None}
    try:
        trainer = backend.make_trainer(spec, VARIANTS[f"{mode}_{head}"], data, initial_weights(spec))
        runs = {"path": (trainer.run_epoch, batch_calls(spec, len(data.x_train), size, calls)),
                "floor": (floor, [size] * calls)}
        if reference_module is not None:
            runs["reference"] = (reference_module.reference(backend, spec, head, data), [size] * calls)
        timings = measure(runs)
    except Exception as exc:  # a path that fails is reported; the other paths still run
        return {**result, "error": f"{type(exc).__name__}: {exc}"}
    steps = (calls - 1) * size
    ms = {name: 1000 * t["timed_s"] / steps for name, t in timings.items()}
    losses = np.concatenate(timings["path"]["outputs"])
    result.update(ms_per_step=ms["path"], full_run_s=ms["path"] * FULL_RUN_STEPS / 1000,
                  compile_s=trainer.compile_seconds, warmup_s=timings["path"]["warmup_s"], timed_steps=steps,
                  floor_ms_per_step=ms["floor"], reference_ms_per_step=ms.get("reference"),
                  loss_path=trainer.loss_path, nonfinite_steps=int(np.sum(~np.isfinite(losses))))
    return result


def summary(path: dict[str, Any]) -> str:
    name = f"{path['mode']} {path['head']}"
    if path.get("error"):
        return f"{name}: failed: {path['error']}"
    text = (f"{name}: {path['ms_per_step']:.2f} ms/step (compile {path['compile_s']:.1f} s), "
            f"floor {path['floor_ms_per_step']:.2f}")
    if path["reference_ms_per_step"]:
        text += f", reference {path['reference_ms_per_step']:.2f}"
    return text


def progress(part: dict[str, Any], message: str) -> None:
    print(f"bench {part['label']}: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

"""Measuring one backend's training paths: the batches of each timed call, the round-robin timer, and one
path's figures beside its floor and reference loop.

A path is the backend's own trainer (``backend.make_trainer``) on the training set in memory: a warm-up call
(compilation included; the trainer reports ``compile_seconds``) and then timed calls of the same shape, so
every compiled executable is reused. Each timed call is followed by one of the floor and, for loops, one of
the reference loop, so that load drifting while the bench runs slows all three alike.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from common.data import Dataset, epoch_batches, steps_per_epoch
from common.spec import Spec
from common.variants import VARIANTS
from common.weights import initial_weights

MNIST_TRAIN_SIZE = 60_000
#: Steps of one full run of the post: 15 epochs x 600 batches.
FULL_RUN_STEPS = Spec().epochs * (MNIST_TRAIN_SIZE // Spec().batch_size)


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

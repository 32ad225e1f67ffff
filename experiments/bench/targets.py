"""The bench's targets (docs/design.md, "Performance"): which apply to a path, and PASS or MISS.

On CPU a compiled path (fit; the jitted JAX loops) should come within ``COMPILED_MAX_X_FLOOR`` of the step's
GEMMs alone, and torch should stay out of OpenMP's busy-wait regime (``BUSY_WAIT_X_FLOOR``); everywhere a loop
should be no slower than the loop a user would write; on a GPU the full-run times below hold, and torch's
compiled fit should be no slower than its eager loop.
"""

from __future__ import annotations

import argparse
from typing import Any

from common.spec import Spec
from experiments.bench.measure import FULL_RUN_STEPS, timed_calls
from experiments.bench.refs.gemms import step_gemms

COMPILED_MAX_X_FLOOR = 1.5
BUSY_WAIT_X_FLOOR = 5.0  # measured ~30x the floor with OpenMP's spinning default on 2 cores
GPU_JAX_FIT_MAX_S = 2.0
GPU_TORCH_LOOP_MAX_S = 25.0


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
    """Every target (module docstring) that applies, with its value, limit and PASS/MISS."""
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

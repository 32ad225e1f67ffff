"""Rendering the bench's report: ``DIR/bench.json`` (every figure, its environment, the targets) and
``DIR/bench.md`` (the same as tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.spec import Spec
from experiments.bench.refs.gemms import step_gemms
from experiments.bench.targets import BUSY_WAIT_X_FLOOR


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
    # OpenMP's spinning idle threads made torch ~30x slower than this on 2 cores (docs/design.md, "Performance").
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

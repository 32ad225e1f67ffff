"""The benchmark: the floor's GEMM list, the timing harness (on a fake clock), the targets' PASS/MISS logic and
the report files (synthetic numbers), the parent/child processes, and one tiny real run. No assertion on real
timings: targets live in the bench's own report."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from backends import BackendError
from common.data import epoch_batches
from common.results import backend_label
from common.spec import Spec
from common.weights import canonical_shapes
from experiments.bench import command as bench, measure as bench_measure, render as bench_render, targets as bench_targets
from experiments.bench.refs.gemms import step_gemms

from tests_support import TEST_SUBSET


# --- the floor --------------------------------------------------------------------------------------------------
def test_step_gemms_cover_forward_and_backward_with_the_steps_shapes():
    spec = Spec()
    gemms = step_gemms(spec)
    kernels = [shape for name, shape in canonical_shapes(spec).items() if name.endswith(".kernel")]
    assert len(gemms) == 3 * len(kernels) - 1  # x@W and dW per layer; dX for all but the first
    for gemm in gemms:  # operands as stored, multiplied as the layout says, give (m, n)
        a, b = np.ones(gemm.a_shape), np.ones(gemm.b_shape)
        a, b = (a.T if gemm.layout == "tn" else a), (b.T if gemm.layout == "nt" else b)
        assert (a @ b).shape == (gemm.m, gemm.n)
    forward = [(g.k, g.n) for g in gemms if g.layout == "nn"]
    assert forward == kernels and all(g.m == spec.batch_size for g in gemms if g.layout == "nn")
    assert [g.b_shape for g in gemms if g.layout == "nt"] == kernels[1:]  # dX multiplies by the stored W^T


def test_floor_flops_are_three_passes_over_the_kernels_less_the_images_gradient():
    spec = Spec()
    kernel_params = sum(a * b for a, b in zip(spec.layer_sizes[:-1], spec.layer_sizes[1:]))
    per_step = sum(g.flops for g in step_gemms(spec))
    assert per_step == 3 * 2 * spec.batch_size * kernel_params - 2 * spec.batch_size * 784 * 512 == 635_494_400
    assert bench_measure.FULL_RUN_STEPS == 9000
    # docs/design.md, "Performance": 5.7 TFLOP of matrix multiplies per run.
    assert per_step * bench_measure.FULL_RUN_STEPS == pytest.approx(5.7e12, rel=0.01)


# --- the harness ------------------------------------------------------------------------------------------------
def test_batch_calls_follow_the_shared_epoch_order_across_epochs():
    spec = Spec(train_size=300)
    calls = bench_measure.batch_calls(spec, 300, size=2, calls=3)
    assert [c.shape for c in calls] == [(2, 100)] * 3
    expected = np.concatenate([epoch_batches(spec, 0, 300), epoch_batches(spec, 1, 300)])
    np.testing.assert_array_equal(np.concatenate(calls), expected)


def test_measure_warms_every_run_up_then_times_them_round_robin(monkeypatch):
    """On a fake clock that only the runs advance: "a" takes 1 s a call, "b" 10 s."""
    now, seen = [0.0], []
    monkeypatch.setattr(bench_measure.time, "perf_counter", lambda: now[0])

    def run(name, seconds):
        def call(arg):
            seen.append((name, arg))
            now[0] += seconds
            return arg
        return call

    timings = bench_measure.measure({"a": (run("a", 1.0), [0, 1, 2]), "b": (run("b", 10.0), [10, 11, 12])})
    assert seen == [("a", 0), ("b", 10), ("a", 1), ("b", 11), ("a", 2), ("b", 12)]
    assert timings["a"]["outputs"] == [1, 2] and timings["b"]["outputs"] == [11, 12]
    # The warm-up call is timed on its own; the timed total holds each run's own calls and nothing else.
    assert (timings["a"]["warmup_s"], timings["a"]["timed_s"]) == (1.0, 2.0)
    assert (timings["b"]["warmup_s"], timings["b"]["timed_s"]) == (10.0, 20.0)


# --- merge, targets and report on synthetic numbers -------------------------------------------------------------
def path(mode, head, ms, floor, reference=None, **extra):
    return {"mode": mode, "head": head, "prob_loss": "clipped" if head == "probs" else None,
            "has_reference": reference is not None, "ms_per_step": ms, "full_run_s": ms * 9,
            "compile_s": 1.0, "warmup_s": 2.0, "timed_steps": 200, "floor_ms_per_step": floor,
            "reference_ms_per_step": reference, "loss_path": "logits", "nonfinite_steps": 0, **extra}


def part(backend, engine, paths):
    env = {"python": "3", "numpy": "2", "frameworks": {backend: "1.0"}, "platform": "p", "cpu": "cpu",
           "cpu_count": 2, "device_name": "cpu", "threads": {}, "git_commit": None}
    return {"backend": backend, "engine": engine, "label": backend_label(backend, engine), "status": "ok",
            "device": "cpu", "train_size": 60000, "paths": paths, "reference_loop": "a tutorial loop", "env": env}


def synthetic_parts():
    return [
        part("keras", "tensorflow", [path("fit", "logits", 16.0, 6.4), path("loop", "logits", 48.0, 6.4, 50.0)]),
        part("torch", None, [path("fit", "logits", 9.0, 6.0), path("loop", "logits", 36.0, 6.0, 30.0),
                             {"mode": "fit", "head": "probs", "prob_loss": "clipped", "has_reference": False,
                              "error": "RuntimeError: compile failed"}]),
        part("jax", None, [path("fit", "logits", 7.0, 6.5), path("loop", "logits", 7.5, 6.5, 8.0)]),
        {"backend": "keras", "engine": "jax", "label": "keras/jax", "status": "skipped",
         "reason": "the keras backend on the jax engine needs the Python package 'keras'", "env": {}},
    ]


def settings(**changes):
    values = dict(warmup=100, steps=200, train_size=None, device="cpu")
    return argparse.Namespace(**{**values, **changes})


def test_targets_pass_and_miss_on_synthetic_numbers():
    report = bench_targets.assemble(synthetic_parts(), settings(), "python -m experiments.bench", 12.0)
    status = {(t["target"].split()[0], t["path"]): t["status"] for t in report["targets"]}
    assert status[("compiled", "keras/tensorflow fit logits")] == "MISS"  # 2.5x the floor
    assert status[("loop", "keras/tensorflow loop logits")] == "PASS"  # 0.96x the post's loop
    assert status[("compiled", "torch fit logits")] == "PASS"  # 1.5x exactly
    assert status[("torch", "torch loop logits")] == "MISS"  # 6x the floor: busy-wait
    assert status[("loop", "torch loop logits")] == "MISS"  # 1.2x the tutorial
    assert status[("compiled", "torch fit probs")] == "MISS"  # failed: no value
    assert status[("compiled", "jax loop logits")] == "PASS"  # the jitted loop is a compiled path
    assert status[("loop", "jax loop logits")] == "PASS"
    assert not any(t["path"].startswith("keras/jax") for t in report["targets"])  # skipped
    assert report["backends"][0]["paths"][0]["x_floor"] == pytest.approx(2.5)
    assert report["settings"]["timed_steps"] == 200 and report["settings"]["full_run_steps"] == 9000


def test_gpu_targets_are_full_run_seconds_and_torch_fit_against_eager():
    parts = [part("torch", None, [path("fit", "logits", 3.0, 0.1), path("loop", "logits", 2.0, 0.1, 2.5)]),
             part("jax", None, [path("fit", "logits", 0.2, 0.1)])]  # full runs: 27 s, 18 s, 1.8 s
    report = bench_targets.assemble(parts, settings(device="gpu"), "python -m experiments.bench --device gpu", 5.0)
    status = {(t["target"], t["path"]): t["status"] for t in report["targets"]}
    assert status == {
        ("torch fit no slower than torch eager", "torch fit logits"): "MISS",
        ("torch eager: training time of a full run", "torch loop logits"): "PASS",
        ("loop no slower than its reference", "torch loop logits"): "PASS",
        ("JAX fit: training time of a full run", "jax fit logits"): "PASS",
    }


def test_report_files_hold_the_figures_the_table_and_the_machine(tmp_path):
    report = bench_targets.assemble(synthetic_parts(), settings(), "python -m experiments.bench --steps 200", 12.0)
    markdown = bench_render.write_report(report, tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text()) == report
    assert (tmp_path / "bench.md").read_text() == markdown
    assert "`python -m experiments.bench --steps 200`" in markdown
    assert "| torch | loop logits | 36.00 | 324 | 1.0 | 6.00 | 6.00 | 30.00 | 1.20 | busy-wait suspected |" in markdown
    assert "| torch | fit probs | | | | | | | | failed: RuntimeError: compile failed |" in markdown
    assert "| keras/jax | — | | | | | | | | skipped: the keras backend on the jax engine needs" in markdown
    assert "| compiled path within 1.5x of the GEMM floor | keras/tensorflow fit logits | 2.50 x floor | 1.5 x floor " \
           "| MISS |" in markdown
    assert "`clipped` probability loss" in markdown


# --- children ---------------------------------------------------------------------------------------------------
def test_a_backend_that_cannot_run_is_reported_as_skipped(monkeypatch, capsys):
    def missing(*args, **kwargs):
        raise BackendError("the keras backend needs the Python package 'tensorflow', which is not installed")

    monkeypatch.setattr(bench, "get_backend", missing)
    args = settings(child="keras", engine=None)
    result = bench.run_child(args, Spec(), data=None)
    assert result["status"] == "skipped" and "tensorflow" in result["reason"]
    assert result["label"] == "keras" and result["env"]["frameworks"] == {}
    assert "skipped" in capsys.readouterr().err


def test_a_child_that_dies_is_reported_as_failed(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "child_command", lambda *args: [sys.executable, "-c", "raise SystemExit(3)"])
    result = bench.run_part(argparse.Namespace(out=str(tmp_path)), "torch", None, TEST_SUBSET)
    assert result["status"] == "failed" and "exited with status 3" in result["reason"]


def test_gpu_times_epoch_sized_calls_unless_told_otherwise():
    assert (bench.parse(["--device", "gpu"])[1].warmup, bench.parse(["--device", "gpu"])[1].steps) == (600, 1200)
    assert bench.parse(["--device", "gpu", "--warmup", "50"])[1].warmup == 50
    assert bench.parse([])[1].warmup == 100


@pytest.mark.parametrize("flags, words", [
    (["--warmup", "1"], ["--warmup 1", "2 to 3 steps"]),
    (["--warmup", "4"], ["--warmup 4", "2 to 3 steps"]),
    (["--steps", "0"], ["--steps 0"]),
    (["--backends", "theano"], ["theano", "keras, torch, jax"]),
])
def test_bad_flags_are_one_line_and_exit_2(flags, words):
    result = subprocess.run([sys.executable, "-m", "experiments.bench", "--data", str(TEST_SUBSET), "--train-size",
                             "300", "--warmup", "2", *flags], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), result.stderr


def test_a_tiny_real_run_of_jax_writes_well_formed_results(tmp_path):
    command = [sys.executable, "-m", "experiments.bench", "--backends", "jax", "--steps", "3", "--warmup", "2",
               "--train-size", "300", "--data", str(TEST_SUBSET), "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    (jax_part,) = report["backends"]
    assert jax_part["status"] == "ok" and jax_part["env"]["frameworks"]["jax"] and jax_part["train_size"] == 300
    assert [(p["mode"], p["head"]) for p in jax_part["paths"]] == [
        ("fit", "probs"), ("fit", "logits"), ("loop", "probs"), ("loop", "logits")]
    for p in jax_part["paths"]:
        assert "error" not in p and p["timed_steps"] == 4 and p["nonfinite_steps"] == 0  # 2 calls of 2 steps
        assert p["ms_per_step"] > 0 and p["floor_ms_per_step"] > 0 and p["compile_s"] > 0
        assert p["full_run_s"] == pytest.approx(p["ms_per_step"] * 9)
        assert p["has_reference"] == (p["mode"] == "loop") and (p["x_reference"] is not None) == p["has_reference"]
    paths = {f"jax {mode} {head}" for mode in ("fit", "loop") for head in ("probs", "logits")}
    assert {t["path"] for t in report["targets"]} == paths
    assert "| jax | loop logits |" in (tmp_path / "bench.md").read_text()
    assert "| jax | fit probs |" in result.stdout

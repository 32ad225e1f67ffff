"""The report's statistics over seeds, on hand-made records: cell text, CSV columns, outcome counts,
differences in the findings, table.md."""

import csv
import io
import math

import numpy as np
import pytest

from common.diagnostics import EpochDiagnostics
from experiments.harness.report import Cell, build_table, differences_markdown, table_csv, table_markdown, write_reports
from common.results import append_record, make_record
from common.spec import Spec
from common.training import TrainOutcome
from common.variants import VARIANTS

SPEC = Spec(epochs=1, train_size=6000, test_size=2000)


def record(variant, accuracy, seed, backend="torch", status="ok"):
    diverged = status == "diverged"
    outcome = TrainOutcome(
        epoch_costs=[float("nan") if diverged else 3.0], step_losses=np.array([3.0]), status=status,
        diagnostics=[EpochDiagnostics(e, 0.0, 0.0, 140.0, "logits") for e in range(2)],
        first_nonfinite_step=3 if diverged else None, test_loss=0.3, test_accuracy=accuracy,
        test_predicted_shares=np.full(10, 0.1), loss_path="logits", wall_seconds=1.0, compile_seconds=0.0,
        steps_per_second=10.0, trainer=None)
    spec = SPEC.replace(seed=seed, loop_exec="eager" if VARIANTS[variant].mode == "loop" else None)
    return make_record(spec, VARIANTS[variant], backend, None, "cpu", "abc", {"frameworks": {}}, outcome)


FIVE = [0.95, 0.96, 0.97, 0.98, 0.99]  # mean 0.97, std sqrt(0.00025), 95% CI 0.97 ± 0.019632
HALF = 2.776445 * math.sqrt(0.00025) / math.sqrt(5)
# torch fit_logits = loop_logits + these, seed by seed: mean 0.001, std sqrt(1e-5 / 4) = 0.0015811
FIT_MINUS_LOOP = [0.001, -0.001, 0.002, 0.0, 0.003]


@pytest.fixture
def records():
    seeds, other_seeds = range(777, 782), range(782, 787)  # jax on other seeds: no pairing with torch
    return ([record("loop_logits", a, s) for a, s in zip(FIVE, seeds)]
            + [record("fit_logits", a + d, s) for a, d, s in zip(FIVE, FIT_MINUS_LOOP, seeds)]
            + [record("fit_logits", a - 0.5, s, backend="jax") for a, s in zip(FIVE, other_seeds)]
            + [record("loop_probs", 0.1, s, status="diverged" if s < 779 else "ok") for s in seeds])


def test_cell_statistics_and_text(records):
    cell = build_table(records).rows["torch"]["loop_logits"]
    assert (cell.stats.n, cell.stats.min, cell.stats.max) == (5, 0.95, 0.99)
    assert cell.stats.mean == pytest.approx(0.97) and cell.stats.std == pytest.approx(math.sqrt(0.00025))
    assert cell.stats.ci95 == pytest.approx((0.97 - HALF, 0.97 + HALF), abs=1e-7)
    assert cell.text() == f"0.9700 [{0.97 - HALF:.4f}, {0.97 + HALF:.4f}] (n=5)"
    assert Cell([records[0]]).text() == "0.9500 (n=1)"  # one seed: as before, no interval


def test_outcome_counts_of_a_mixed_cell(records):
    cell = build_table(records).rows["torch"]["loop_probs"]
    assert cell.outcome == "diverged" and cell.outcome_counts == {"diverged": 2, "stuck": 3}
    assert cell.counts_text() == "2 of 5 seeds diverged, 3 stuck"
    assert cell.text().endswith("(n=5) ✗ diverged (2 of 5 seeds diverged, 3 stuck)")


def test_csv_columns(records):
    rows = list(csv.DictReader(io.StringIO(table_csv(build_table(records)))))
    cell = next(r for r in rows if r["row"] == "torch" and r["variant"] == "loop_logits")
    assert (cell["n"], cell["accuracy_mean"], cell["accuracy_min"], cell["accuracy_max"]) == (
        "5", "0.970000", "0.950000", "0.990000")
    assert float(cell["accuracy_std"]) == pytest.approx(math.sqrt(0.00025), abs=1e-6)
    assert float(cell["ci95_low"]) == pytest.approx(0.97 - HALF, abs=1e-6)
    assert float(cell["ci95_high"]) == pytest.approx(0.97 + HALF, abs=1e-6)
    probs = next(r for r in rows if r["row"] == "torch" and r["variant"] == "loop_probs")
    assert (probs["n_diverged"], probs["n_stuck"], probs["n_trains"], probs["n_failed"]) == ("2", "3", "0", "0")


def test_differences_fit_vs_loop_and_between_backends(records):
    text = differences_markdown(build_table(records))
    # fit − loop of torch, paired by seed: mean 0.001, half-width t(0.975, 4) · 0.0015811 / sqrt(5) = 0.0019632.
    assert "- torch: fit_logits − loop_logits = +0.0010, 95% CI (paired t) [-0.0010, +0.0030] (df 4.0; n=5): " \
           "indistinguishable at n=5." in text
    # jax ran other seeds: Welch. Variances 0.00025 (jax) and 0.0002775 (torch fit) over 5 each:
    # se = sqrt(0.0001055) = 0.010271, df = 0.0001055² / ((5.55e-5² + 5e-5²) / 4) = 7.98, t = 2.3077.
    assert "- fit_logits: jax − torch = -0.5010, 95% CI (Welch t) [-0.5247, -0.4773] (df 8.0; n=5): torch is " \
           "higher (the interval excludes 0)." in text


def test_a_difference_the_same_on_every_seed_is_exact(records):
    shifted = [record("fit_logits", a, s) for a, s in zip(FIVE, range(777, 782))]
    loops = [r for r in records if r["variant"] == "loop_logits"]
    text = differences_markdown(build_table(loops + shifted))
    assert "- torch: fit_logits − loop_logits = +0.0000, 95% CI (paired t) [+0.0000, +0.0000] (the same on every " \
           "seed; n=5): identical on every seed." in text


def test_table_md_shows_n_mean_and_interval(records, tmp_path):
    for r in records:
        append_record(tmp_path / "runs.jsonl", r)
    write_reports(tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert f"| torch | loop_logits | 5 | 0.9700 | 0.0158 | [{0.97 - HALF:.4f}, {0.97 + HALF:.4f}] | 0.9500–0.9900 |" \
           in table
    assert "95% CI (Student t)" in table and "indistinguishable at n=5" in table
    findings = (tmp_path / "findings.md").read_text()
    assert "## Differences over seeds" in findings and "Seeds: 2 of 5 seeds diverged, 3 stuck" in findings
    assert table_markdown(build_table(records)).count("(n=5)") == 4


def on_machine(record_, machine_class):
    record_["env"] = {**record_["env"], "machine_class": machine_class}
    return record_


def test_a_cell_from_two_machine_classes_says_so_with_the_counts(records):
    torch_loop = [r for r in records if r["backend"] == "torch" and r["variant"] == "loop_logits"]
    for r in torch_loop[:2]:
        on_machine(r, "x86_64-amd-25.17-avx512")
    for r in torch_loop[2:]:
        on_machine(r, "x86_64-intel-6.207-avx512")
    cell = build_table(records).rows["torch"]["loop_logits"]
    assert cell.machine_counts == {"x86_64-intel-6.207-avx512": 3, "x86_64-amd-25.17-avx512": 2}
    assert cell.text().endswith("(mixed machines: 3 on x86_64-intel-6.207-avx512, 2 on x86_64-amd-25.17-avx512)")
    assert "mixed" not in build_table(records).rows["torch"]["fit_logits"].text()  # one (unrecorded) class


def test_a_paired_difference_pairs_only_runs_of_one_machine_class(records):
    paired = differences_markdown(build_table(records))
    assert "torch: fit_logits − loop_logits" in paired and "paired" in paired.split("\n")[0]
    on_machine(next(r for r in records if r["backend"] == "torch" and r["variant"] == "fit_logits"), "other-class")
    unpaired = [line for line in differences_markdown(build_table(records)).split("\n") if "torch: fit_logits" in line]
    assert len(unpaired) == 1 and "cannot pair by seed" in unpaired[0] and "Welch" in unpaired[0]

"""The report from runs.jsonl alone: cells, marks, reference row, findings, plots, family selection."""

import csv
import io

import numpy as np
import pytest

from common.diagnostics import EpochDiagnostics
from experiments.harness.report import build_table, classify, findings_markdown, table_csv, table_markdown, write_reports
from common.results import append_record, make_record
from common.spec import Spec
from common.training import TrainOutcome
from common.variants import VARIANTS

SPEC = Spec(epochs=2, train_size=6000, test_size=2000)


def fake(variant, backend="torch", engine=None, seed=777, status="ok", accuracy=0.9, path="logits",
         prob_loss="native", spec=SPEC):
    costs = [3.0, float("nan")] if status == "diverged" else [14.3, 14.2] if accuracy < 0.3 else [3.0, 0.5]
    outcome = TrainOutcome(
        epoch_costs=costs, step_losses=np.array(costs), status=status,
        diagnostics=[EpochDiagnostics(e, 0.89 if accuracy < 0.3 else 0.0, 0.0, 140.0, path) for e in range(3)],
        first_nonfinite_step=7 if status == "diverged" else None, test_loss=0.3,
        test_accuracy=float("nan") if status == "diverged" else accuracy,
        test_predicted_shares=np.full(10, 0.1), loss_path=path, wall_seconds=1.0,
        compile_seconds=0.0, steps_per_second=10.0, trainer=None)
    spec = spec.replace(seed=seed, prob_loss=prob_loss)
    return make_record(spec, VARIANTS[variant], backend, engine, "cpu", "abc", {"frameworks": {"torch": "2.13.0"}},
                       outcome)


@pytest.fixture
def runs(tmp_path):
    records = [
        fake("fit_probs", status="diverged", path="log_probs"),
        fake("loop_probs", status="diverged", path="log_probs"),
        fake("loop_logits", accuracy=0.95),
        fake("loop_logits", accuracy=0.97, seed=778),
        fake("fit_logits", accuracy=0.96),
        fake("loop_probs", backend="keras", engine="tensorflow", accuracy=0.93, path="recovered_logits"),
        fake("fit_probs", backend="keras", engine="jax", accuracy=0.1, path="clipped_probs"),
    ]
    for r in records:
        append_record(tmp_path / "runs.jsonl", r)
    return tmp_path, records


def test_classify():
    assert classify(fake("loop_logits")) == "trains"
    assert classify(fake("loop_probs", accuracy=0.2092)) == "stuck"  # the post's stuck loop
    assert classify(fake("loop_probs", status="diverged")) == "diverged"


def test_table_cells_marks_and_post_row(runs):
    _, records = runs
    table = build_table(records)
    assert list(table.rows) == ["keras/jax", "keras/tensorflow", "torch"]
    text = table_markdown(table)
    torch_row = next(line for line in text.splitlines() if line.startswith("| torch |"))
    # mean 0.96, std 0.0141, 95% CI 0.96 ± t(0.975, 1) · 0.0141 / sqrt(2) = 0.96 ± 0.1271
    assert "✗ diverged" in torch_row and "0.9600 [0.8329, 1.0871] (n=2)" in torch_row
    assert "0.1000 (n=1) ⚠ stuck" in text
    assert text.splitlines()[-1] == "| post (TF 2.x / Keras 2, 2020) | 0.9715 | 0.2092 ⚠ stuck | 0.9701 | 0.9725 |"
    rows = list(csv.DictReader(io.StringIO(table_csv(table))))
    cell = next(r for r in rows if r["row"] == "torch" and r["variant"] == "loop_logits")
    assert (cell["outcome"], cell["n"], cell["accuracy_mean"]) == ("trains", "2", "0.960000")


def test_control_rows_beside_the_posts_cells():
    """The post's cells (native loss, raw pixels) form the backend's row; each control gets a row below it,
    and the logits variants, which have no control, sit in the post's row only."""
    records = [fake("loop_probs", status="diverged", path="log_probs"),
               fake("loop_probs", accuracy=0.1, path="clipped_probs", prob_loss="clipped"),
               fake("loop_probs", accuracy=0.9, path="log_probs", spec=SPEC.replace(input_scale="unit")),
               fake("loop_probs", status="diverged", path="log_probs", spec=SPEC.replace(softmax="op")),
               fake("loop_logits", accuracy=0.95)]
    table = build_table(records)
    assert list(table.rows) == ["torch", "torch · clipped loss", "torch · softmax op", "torch · unit inputs"]
    assert set(table.rows["torch"]) == {"loop_probs", "loop_logits"}
    assert set(table.rows["torch · unit inputs"]) == {"loop_probs"}


def test_newest_family_only(runs):
    _, records = runs
    other = fake("fit_logits", spec=SPEC.replace(epochs=1), accuracy=0.5)
    assert list(build_table(records + [other]).rows) == ["torch"]
    assert list(build_table(records + [other], SPEC).rows) == ["keras/jax", "keras/tensorflow", "torch"]


def test_write_reports_files_and_findings(runs):
    out, _ = runs
    write_reports(out)
    for name in ("table.md", "table.csv", "findings.md", "curves.png", "accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    findings = (out / "findings.md").read_text()
    assert "**fit_probs**: stuck" in findings and "the post's own mechanism" in findings
    assert "First non-finite loss at step 7" in findings
    assert "`_keras_logits`" in findings and "Unlike the post" in findings
    assert "rows at p_true ≤ 1e-7 89% → 89%" in findings


def test_empty_results_are_refused():
    with pytest.raises(ValueError, match="no complete record"):
        build_table([])


def test_a_late_divergence_says_how_far_the_run_trained():
    """Unit inputs on the full spec: the raw log of softmax trains for epochs, then a probability underflows."""
    def diverged(costs, logits, step):
        outcome = TrainOutcome(
            epoch_costs=costs, step_losses=np.array([0.1]), status="diverged",
            diagnostics=[EpochDiagnostics(e, 0.0 if m is not None else None, 1.0, m, "log_probs")
                         for e, m in enumerate(logits)],
            first_nonfinite_step=step, test_loss=None, test_accuracy=0.098, test_predicted_shares=np.full(10, 0.1),
            loss_path="log_probs", wall_seconds=1.0, compile_seconds=0.0, steps_per_second=10.0, trainer=None)
        spec = SPEC.replace(input_scale="unit", epochs=5)
        return make_record(spec, VARIANTS["loop_probs"], "jax", None, "cpu", "abc", {"frameworks": {}}, outcome)

    late = findings_markdown(build_table([diverged([0.327, 0.145, 0.113, float("nan")], [0.72, 23.1, 26.3, 33.1,
                                                                                          None], 1976)]))
    assert "First non-finite loss at step 1976. It trained first (epoch costs 0.327, 0.145, 0.113) while the " \
           "probe's max |logit| grew from 0.72 to 33.1" in late
    at_once = findings_markdown(build_table([diverged([float("nan")], [184.0, None], 0)]))
    assert "First non-finite loss at step 0." in at_once and "It trained first" not in at_once

"""The trajectory of a stuck run (locked classes, unclipped rows, steps with a gradient, hops), counted inside each
backend's train step on a synthetic stuck model; the proportion intervals on textbook counts; the plateaus report
on hand-made records."""

import numpy as np
import pytest

from backends import get_backend
from common.data import Dataset
from common.diagnostics import EpochDiagnostics, StepCounts, class_hops
from common.results import append_record, make_record
from common.spec import Spec
from common.stats import proportion_difference, wilson_interval
from common.training import Trainer, TrainOutcome, train
from common.variants import VARIANTS
from common.weights import initial_weights
from experiments.plateaus import report

# --- proportions: Newcombe (1998), Statistics in Medicine 17, Table I of "single proportion" (method 3, the
# Wilson score interval) and Table II of "difference between independent proportions" (method 10), 4 decimals.


@pytest.mark.parametrize("k, n, low, high", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                             (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_the_published_table(k, n, low, high):
    p = wilson_interval(k, n)
    assert p.estimate == k / n
    assert p.ci95 == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("a, b, low, high", [((56, 70), (48, 80), 0.0524, 0.3339), ((9, 10), (3, 10), 0.1705, 0.8090),
                                             ((6, 7), (2, 7), 0.0582, 0.8062), ((5, 56), (0, 29), -0.0381, 0.1926),
                                             ((0, 10), (0, 20), -0.1611, 0.2775), ((10, 10), (0, 20), 0.6791, 1.0)])
def test_newcombe_difference_matches_the_published_table(a, b, low, high):
    diff = proportion_difference(*a, *b)
    assert diff.estimate == pytest.approx(a[0] / a[1] - b[0] / b[1])
    assert diff.ci95 == pytest.approx((low, high), abs=5e-5)
    assert diff.distinguishable == (low > 0 or high < 0)


def test_wilson_interval_refuses_impossible_counts():
    for k, n in ((3, 2), (-1, 5), (0, 0)):
        with pytest.raises(ValueError, match="successes"):
            wilson_interval(k, n)


# --- hops ---------------------------------------------------------------------------------------------------------
def test_hops_are_changes_between_epoch_ends_from_epoch_two_and_skip_unmeasured_epochs():
    sets = [[1, 2, 4], [3], [3], [3, 5], None, [5], [5, 7]]
    diagnostics = [{"epoch": e, "locked_classes": s} for e, s in enumerate(sets)]
    hops = class_hops(diagnostics)
    # epoch 1 is the first lock-in, not a hop; nothing is compared across the unmeasured epoch 4
    assert [(h.epoch, h.before, h.after) for h in hops] == [(3, (3,), (3, 5)), (6, (5,), (5, 7))]
    assert hops[0].text() == "epoch 3: {3} → {3, 5}"


class ScriptedTrainer(Trainer):
    """Predicts class 3 for every row until ``switch`` epochs have run, then class 5; each epoch's steps report
    unclipped rows 0, 1, 2, ... and a gradient where a step had one."""

    loss_path = "clipped_probs"

    def __init__(self, switch: int):
        self.switch, self.epochs = switch, 0

    def run_epoch(self, batches):
        self.epochs += 1
        unclipped = np.arange(len(batches)) % 3
        self.step_counts = StepCounts(unclipped, unclipped > 0)
        return np.full(len(batches), 14.5)

    def probe(self, x, y):
        return self._logits(len(x)), 0.0

    def evaluate(self, x, y):
        return 14.5, self._logits(len(x)).argmax(-1)

    def weights(self):
        raise NotImplementedError

    def _logits(self, rows):
        logits = np.zeros((rows, 10))
        logits[:, 3 if self.epochs < self.switch else 5] = 50.0
        return logits


def test_the_driver_records_the_trajectory_and_a_known_class_change_gives_one_hop(subset_mnist):
    from common.data import prepare

    spec = Spec(epochs=4, train_size=600, test_size=100, batch_size=100)
    outcome = train(spec, ScriptedTrainer(switch=3), prepare(spec, subset_mnist))
    diagnostics = [d.to_dict() for d in outcome.diagnostics]
    assert [d["locked_classes"] for d in diagnostics] == [[3], [3], [3], [5], [5]]
    assert diagnostics[3]["train_predicted_shares"][5] == 1.0
    # 6 steps per epoch report 0, 1, 2, 0, 1, 2 unclipped rows: 6 rows, 4 steps with a gradient
    assert [(d["unclipped_rows"], d["nonzero_grad_steps"]) for d in diagnostics] == [(None, None)] + [(6, 4)] * 4
    hops = class_hops(diagnostics)
    assert [(h.epoch, h.before, h.after) for h in hops] == [(3, (3,), (5,))]


# --- the counts inside each backend's train step, on a synthetic stuck model ------------------------------------
MARGIN_STUCK, MARGIN_FREE = 40.0, 2.0
FREE_ROWS = (0, 1, 2, 25, 57)  # batches of 10 in file order: 3 free rows in step 0, 1 in step 2, 1 in step 5
STUCK = Spec(hidden_layers=1, hidden_units=16, drop_rate=0.0, optimizer="sgd", learning_rate=1e-6, batch_size=10,
             epochs=2, data_order="sequential", prob_loss="clipped")


def stuck_model_and_data() -> tuple[dict, Dataset]:
    """A model whose only non-zero path is input 0 -> hidden unit 0 -> logit 3, so z = (0, 0, 0, x_0, 0, ...).

    Every row is predicted as class 3. With x_0 = 40 every true-class probability is clipped (class 3's rounds to 1
    in float32, the others' are e^-40 / (1 + 9 e^-40) ~ 4e-18); with x_0 = 2 it is 0.45 (class 3) or 0.061 (any
    other), inside the bounds. SGD at 1e-6 leaves the model where it is.
    """
    weights = {name: np.zeros_like(w) for name, w in initial_weights(STUCK).items()}
    weights["dense_0.kernel"][0, 0] = 1.0
    weights["dense_1.kernel"][0, 3] = 1.0
    x = np.zeros((100, 784), np.float32)
    x[:, 0] = MARGIN_STUCK
    x[list(FREE_ROWS), 0] = MARGIN_FREE
    y = np.eye(10, dtype=np.float32)[np.arange(100) % 10]
    return weights, Dataset(x, y, x[:20], y[:20], data_sha256="synthetic")


@pytest.mark.parametrize("backend, engine, variant, changes", [
    ("jax", None, "fit_probs", {}),
    ("jax", None, "loop_probs", {"loop_exec": "compiled"}),
    ("torch", None, "loop_probs", {"loop_exec": "eager"}),
    ("keras", "tensorflow", "loop_probs", {"loop_exec": "eager", "softmax": "op", "prob_loss": "native"}),
])
def test_known_unclipped_rows_give_the_right_counts(backend, engine, variant, changes):
    spec = STUCK.replace(**changes)
    weights, data = stuck_model_and_data()
    trainer = get_backend(backend, engine=engine).make_trainer(spec, VARIANTS[variant], data, weights)
    assert trainer.loss_path == "clipped_probs"
    outcome = train(spec, trainer, data)
    for entry in outcome.diagnostics[1:]:
        assert entry.unclipped_rows == len(FREE_ROWS)
        assert entry.nonzero_grad_steps == 3
        assert entry.locked_classes == (3,)
    assert trainer.step_counts.unclipped_rows.tolist() == [3, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert class_hops([d.to_dict() for d in outcome.diagnostics]) == []


def test_keras_fit_counts_nothing_and_says_so(subset_data):
    """Keras' fit has no step of ours to count in (a metric sees no gradients): its epochs carry None."""
    spec = STUCK.replace(softmax="op", prob_loss="native")
    weights, data = stuck_model_and_data()
    trainer = get_backend("keras", engine="tensorflow").make_trainer(spec, VARIANTS["fit_probs"], data, weights)
    outcome = train(spec.replace(epochs=1), trainer, data)
    assert outcome.diagnostics[1].unclipped_rows is None and outcome.diagnostics[1].locked_classes == (3,)


# --- the report, on hand-made records -------------------------------------------------------------------------------
def record(seed, sets, accuracy, order="sequential", optimizer="adam", unclipped=7):
    spec = Spec(epochs=len(sets) - 1, train_size=6000, test_size=2000, prob_loss="clipped", data_order=order,
                optimizer=optimizer, seed=seed)
    diagnostics = [EpochDiagnostics(e, 0.9, 0.0, 140.0, "clipped_probs", locked_classes=tuple(s),
                                    unclipped_rows=None if e == 0 else unclipped,
                                    nonzero_grad_steps=None if e == 0 else min(unclipped, 3))
                   for e, s in enumerate(sets)]
    outcome = TrainOutcome(epoch_costs=[14.3] * (len(sets) - 1), step_losses=np.zeros(1), diagnostics=diagnostics,
                           status="ok", first_nonfinite_step=None, test_loss=14.0, test_accuracy=accuracy,
                           test_predicted_shares=np.full(10, 0.1), loss_path="clipped_probs", wall_seconds=1.0,
                           compile_seconds=0.0, steps_per_second=1.0, trainer=None)
    return make_record(spec, VARIANTS["fit_probs"], "jax", None, "cpu", "abc", {"frameworks": {}}, outcome)


def test_the_report_counts_classes_hops_and_the_post_share(tmp_path):
    runs = [record(777, [[1, 2], [1], [1, 6], [1, 6]], 0.2093),  # one hop, ends on two classes, at the post
            record(778, [[1, 2], [8], [8], [8]], 0.0974),
            record(777, [[1, 2], [3], [3], [3]], 0.1010, order="shuffled"),
            record(777, [[1, 2], [4], [4], [4]], 0.0982, optimizer="sgd", unclipped=0)]
    for r in runs:
        append_record(tmp_path / "runs.jsonl", r)
    text = report.write_reports(tmp_path)
    sequential = "jax fit · Adam · sequential"
    # stuck 2 of 2, one hopped, one ends on two classes, one at or above 0.2092 (Wilson: 1/2 -> [0.09, 0.91])
    assert (f"| {sequential} | 2 | 2/2 = 1.00 [0.34, 1.00] | 1/2 = 0.50 [0.09, 0.91] | 1/2 = 0.50 [0.09, 0.91] | "
            "1/2 = 0.50 [0.09, 0.91] | 0.0974–0.2093 |") in text
    # classes at the end (one run on 1, one on 2) and hops per run (one with 0, one with 1): the same shares
    assert text.count(f"| {sequential} | 2 | 1/2 = 0.50 [0.09, 0.91] | 1/2 = 0.50 [0.09, 0.91] |") == 2
    assert f"| {sequential} | 777 | 2 | {{1}} → {{1, 6}} | 7 / 7 / 7 | 3 |" in text
    assert "jax fit · SGD lr 0.001 · sequential" in text and "jax fit · Adam · shuffled" in text
    findings = (tmp_path / "findings.md").read_text()
    assert "1 hop(s) in 1 of 4 runs" in findings
    assert f"ends on two classes: {sequential} 1/2 − jax fit · Adam · shuffled 0/1" in findings
    assert (tmp_path / "accuracy.png").stat().st_size > 0 and (tmp_path / "costs.png").stat().st_size > 0


def test_a_run_that_trains_has_no_plateau_to_hop_from(tmp_path):
    """Its predicted classes change as it learns; the report counts no hop and says the ablation is not stuck."""
    runs = [record(777, [[1, 2], [1], [1, 6], [1, 6]], 0.0982),
            record(777, [[1, 2], [1, 3], [1, 3, 5], list(range(10))], 0.91, optimizer="sgd", unclipped=2000)]
    for r in runs:
        append_record(tmp_path / "runs.jsonl", r)
    report.write_reports(tmp_path)
    findings = (tmp_path / "findings.md").read_text()
    assert "1 hop(s) in 1 of 2 runs" in findings
    assert "- jax fit · SGD lr 0.001 · sequential: 0 of 1 runs got stuck. A run that does not get stuck" in findings
    assert "stuck runs that hop at least once" not in findings  # no stuck SGD run to compare


# --- the sweep's plan ---------------------------------------------------------------------------------------------
def test_every_unit_plans_exactly_what_its_child_runs(tmp_path):
    """A unit's records are kept only if their spec hashes are the planned ones: parse each unit's child command
    line as experiments.run does and plan it again."""
    from experiments import run
    from experiments.harness import cli
    from experiments.plateaus import command

    parser, args = command.parse(["--quick", "--seeds", "2", "--ablation-seeds", "1", "--framework-seeds", "1",
                                  "--out", str(tmp_path)])
    units = command.make_units(parser, args, tmp_path / "mnist.npz")
    assert [(u.backend, u.seed) for u in units][:6] == [("jax", 777)] * 4 + [("torch", 777), ("keras", 777)]
    assert len(units) == 2 * 2 + 2 * 1 + 2 * 1
    cells = set()
    for unit in units:
        child = run.build_parser()
        child_args = child.parse_args([*unit.args, "--out", str(tmp_path)])
        replanned = cli.plan(child, child_args, unit.backend, unit.engine)
        assert [p.spec.hash() for p in replanned] == [p.spec.hash() for p in unit.planned], unit.label
        spec = unit.planned[0].spec
        assert (spec.epochs, spec.train_size, spec.seed) == (3, 6000, unit.seed)
        cells.add((unit.backend, unit.planned[0].variant.name, spec.prob_loss, spec.softmax, spec.loop_exec,
                   spec.optimizer, spec.epsilon, spec.data_order))
    assert cells == {("jax", "fit_probs", "clipped", "activation", None, "adam", 1e-7, "sequential"),
                     ("jax", "fit_probs", "clipped", "activation", None, "adam", 1e-7, "shuffled"),
                     ("jax", "fit_probs", "clipped", "activation", None, "sgd", 1e-7, "sequential"),
                     ("jax", "fit_probs", "clipped", "activation", None, "adam", 1e-3, "sequential"),
                     ("torch", "loop_probs", "clipped", "activation", "eager", "adam", 1e-7, "sequential"),
                     ("keras", "loop_probs", "native", "op", "eager", "adam", 1e-7, "sequential")}

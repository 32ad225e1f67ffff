"""The shared training driver, exercised with the numpy reference trainer (no framework needed)."""

import pytest

from common.data import prepare
from common.reference_trainer import ReferenceTrainer
from common.spec import Spec
from common.training import train
from common.weights import initial_weights

SMALL = dict(hidden_layers=1, hidden_units=16, drop_rate=0.0, train_size=300, test_size=200, batch_size=50)


def run(subset_mnist, head="logits", **changes):
    spec = Spec(**{**SMALL, **changes})
    data = prepare(spec, subset_mnist)
    trainer = ReferenceTrainer(spec, head, data.x_train, data.y_train, initial_weights(spec))
    seen = []
    return train(spec, trainer, data, on_epoch=lambda *args: seen.append(args)), seen


def test_logits_train_and_the_driver_reports_per_epoch(subset_mnist):
    outcome, seen = run(subset_mnist, epochs=3, input_scale="unit", learning_rate=0.01)
    assert outcome.status == "ok" and outcome.first_nonfinite_step is None
    assert len(outcome.epoch_costs) == 3 and len(outcome.step_losses) == 18
    assert outcome.epoch_costs[-1] < outcome.epoch_costs[0]
    assert outcome.epoch_costs[1] == pytest.approx(outcome.step_losses[6:12].mean())
    assert [epoch for epoch, *_ in seen] == [1, 2, 3]
    assert [d.epoch for d in outcome.diagnostics] == [0, 1, 2, 3]
    assert outcome.test_accuracy > 0.5 and outcome.steps_per_second > 0


def test_clipped_probabilities_get_stuck_on_raw_pixels(subset_mnist):
    outcome, _ = run(subset_mnist, head="probs", prob_loss="clipped", hidden_units=128, epochs=2)
    assert outcome.status == "ok"
    assert min(outcome.epoch_costs) > 10  # most rows sit at -ln(1e-7) = 16.1 with zero gradient
    assert outcome.diagnostics[-1].saturated_share > 0.6
    assert outcome.diagnostics[-1].loss_path == "clipped_probs"


def test_non_finite_loss_stops_at_that_epoch_with_the_first_step(subset_mnist):
    # Raw pixels and a wide init saturate float64's softmax: log(0) = -inf on the first step.
    outcome, _ = run(subset_mnist, head="probs", prob_loss="native", init_stddev=5.0, epochs=4)
    assert outcome.status == "diverged" and outcome.first_nonfinite_step == 0
    assert len(outcome.epoch_costs) == 1  # stopped after the epoch where it happened
    kept, _ = run(subset_mnist, head="probs", prob_loss="native", init_stddev=5.0, epochs=2,
                  stop_on_nonfinite=False)
    assert len(kept.epoch_costs) == 2 and kept.status == "diverged"


def test_reference_trainer_refuses_dropout(subset_data):
    with pytest.raises(ValueError, match="drop_rate=0"):
        ReferenceTrainer(Spec(), "logits", subset_data.x_train, subset_data.y_train, initial_weights(Spec()))

"""The spec: the post's defaults, validation messages, JSON round trip and a hash stable across processes."""

import json
import subprocess
import sys

import pytest

from common.spec import Spec, SpecError
from common.variants import VARIANTS, VariantError, parse_variants


def test_defaults_are_the_posts_values():
    spec = Spec()
    assert spec.layer_sizes == (784, 512, 512, 512, 512, 10)
    assert (spec.drop_rate, spec.init_stddev, spec.learning_rate) == (0.3, 0.05, 0.001)
    assert (spec.beta_1, spec.beta_2, spec.epsilon) == (0.9, 0.999, 1e-7)  # Keras' Adam defaults
    assert (spec.batch_size, spec.epochs, spec.seed) == (100, 15, 777)
    assert (spec.input_scale, spec.train_size, spec.test_size) == ("raw", None, None)
    assert (spec.optimizer, spec.prob_loss, spec.clip_epsilon) == ("adam", "native", 1e-7)


def test_json_round_trip_and_hash():
    spec = Spec(epochs=2, input_scale="unit", train_size=500, prob_loss="clipped")
    again = Spec.from_json(spec.to_json())
    assert again == spec and again.hash() == spec.hash()
    assert Spec().hash() != Spec(seed=778).hash()
    assert json.loads(spec.to_json())["train_size"] == 500


def test_hash_is_stable_across_processes():
    code = "from common.spec import Spec; print(Spec(epochs=3).hash())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == Spec(epochs=3).hash()


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"epochs": 0}, ["epochs", ">= 1"]),
        ({"batch_size": 2.5}, ["batch_size", "integer"]),
        ({"input_scale": "mean"}, ["input_scale", "raw, unit"]),
        ({"prob_loss": "log"}, ["prob_loss", "native, clipped"]),
        ({"data_order": "random"}, ["data_order", "shuffled, sequential"]),
        ({"optimizer": "rmsprop"}, ["optimizer", "adam, sgd"]),
        ({"drop_rate": 1.0}, ["drop_rate", "[0.0, 1.0)"]),
        ({"learning_rate": -1}, ["learning_rate"]),
        ({"clip_epsilon": 0}, ["clip_epsilon"]),
        ({"train_size": 50}, ["train_size=50", "batch_size=100"]),
        ({"test_size": 0}, ["test_size"]),
    ],
)
def test_nonsense_is_rejected_with_the_field_named(changes, words):
    with pytest.raises(SpecError) as error:
        Spec(**changes)
    for word in words:
        assert word in str(error.value)


def test_unknown_field_in_json_is_named():
    with pytest.raises(SpecError, match="unknown spec field.*colour"):
        Spec.from_dict({"colour": "red"})


def test_variants_and_post_figures():
    assert [v.name for v in parse_variants("all")] == ["fit_probs", "loop_probs", "loop_logits", "fit_logits"]
    assert [v.name for v in parse_variants("fit_logits,loop_probs")] == ["loop_probs", "fit_logits"]
    assert {v.name: v.post.test_accuracy for v in VARIANTS.values()} == {
        "fit_probs": 0.9715, "loop_probs": 0.2092, "loop_logits": 0.9701, "fit_logits": 0.9725}
    assert len(VARIANTS["loop_probs"].post.epoch_costs) == len(VARIANTS["loop_logits"].post.epoch_costs) == 15
    assert VARIANTS["loop_logits"].post.epoch_costs[0] == 3.10352
    with pytest.raises(VariantError, match="fit_probs, loop_probs, loop_logits, fit_logits"):
        parse_variants("fit_prob")

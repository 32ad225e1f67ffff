"""The parity suite's dropout check, shared by every backend and Keras engine.

``measure(backend)`` reads a model's dropout in action; ``failures(figures)`` holds the figures to inverted
dropout at the spec's rate. The Keras engines that need a process of their own run the same measurement
there, beside the training paths' (``training_paths_check.py``).

Weights that make every unit visible: zero kernels and unit biases give every hidden ReLU output exactly 1,
whatever the input, so each unit's dropout output is 0 (dropped) or 1 / (1 - rate) (kept).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from common.spec import INPUT_DIM, Spec
from common.weights import Weights, initial_weights

SPEC = Spec()
ROWS = 100  # one batch: 100 x 512 = 51,200 draws per layer
STEPS = 2  # training-mode passes, to see masks change between steps
# The kept share of n draws has standard deviation sqrt(p (1 - p) / n) (0.002 here); 5 of them make a false
# alarm a one-in-a-million event, while the smallest slip worth catching (a rate off by 10%) moves it 15.
SIGMAS = 5
# A kept unit is 1 * (1 / (1 - rate)), computed in fp32 by multiplying or dividing: a few ulps of rounding
# (1 ulp = 1.2e-7 relative); a missing or wrong scale is off by 15% or more.
SCALE_RTOL = 1e-6


def visible_weights(spec: Spec = SPEC) -> Weights:
    """Zero kernels and unit biases (the canonical layout), so every hidden ReLU outputs exactly 1."""
    return {name: (np.ones_like(w) if name.endswith(".bias") else np.zeros_like(w))
            for name, w in initial_weights(spec).items()}


def measure(backend: Any, spec: Spec = SPEC) -> dict[str, Any]:
    """Dropout figures of ``backend``'s model on a fixed input: ``STEPS`` training-mode passes and one eval pass.

    ``kept_share[step][layer]``: the share of units kept; ``scale_error[step][layer]``: the largest relative
    deviation of a kept unit from 1 / (1 - rate); ``repeated_masks``: pairs of (step, layer) draws with
    identical masks, within a step, across steps, or both; ``eval_changed``: the largest change dropout makes
    in eval mode; ``activation_error``: how far the ReLU outputs are from 1 (the fixture's premise).
    """
    model = backend.build_model(spec, "logits", visible_weights(spec))
    x = np.ones((ROWS, INPUT_DIM), np.float32)
    train = [backend.hidden_outputs(model, x, training=True) for _ in range(STEPS)]
    evaluation = backend.hidden_outputs(model, x, training=False)
    scale = 1.0 / (1.0 - spec.drop_rate)
    masks = [[dropped != 0 for _, dropped in step] for step in train]
    draws = [((step, layer), mask) for step, step_masks in enumerate(masks) for layer, mask in enumerate(step_masks)]
    return {
        "drop_rate": spec.drop_rate,
        "draws_per_layer": int(masks[0][0].size),
        "kept_share": [[float(mask.mean()) for mask in step] for step in masks],
        "scale_error": [[float(np.max(np.abs(dropped[mask] / scale - 1.0), initial=0.0))
                         for (_, dropped), mask in zip(step, step_masks)] for step, step_masks in zip(train, masks)],
        "repeated_masks": [[a, b] for (a, mask_a), (b, mask_b) in itertools.combinations(draws, 2)
                           if np.array_equal(mask_a, mask_b)],
        "eval_changed": float(max(np.max(np.abs(dropped - activation)) for activation, dropped in evaluation)),
        "activation_error": float(max(np.max(np.abs(activation - 1.0)) for step in train + [evaluation]
                                      for activation, _ in step)),
        "layers": [len(step) for step in train + [evaluation]],
    }


def kept_share_bound(spec: Spec, draws: int) -> float:
    """How far the kept share of ``draws`` units may stray from 1 - rate: ``SIGMAS`` binomial standard deviations,
    sqrt((1 - rate) rate / draws) each."""
    keep = 1.0 - spec.drop_rate
    return SIGMAS * math.sqrt(keep * (1.0 - keep) / draws)


def failures(figures: dict[str, Any], spec: Spec = SPEC) -> list[str]:
    """What in ``figures`` is not inverted dropout at ``spec.drop_rate``: one message per slip, naming dropout."""
    found = []
    if figures["layers"] != [spec.hidden_layers] * (STEPS + 1):
        found.append(f"dropout layers per pass {figures['layers']}, expected {spec.hidden_layers} each")
    if figures["activation_error"] != 0.0:
        found.append(f"the fixture's ReLU outputs are off 1 by {figures['activation_error']:.3g}")
    keep = 1.0 - spec.drop_rate
    bound = kept_share_bound(spec, figures["draws_per_layer"])
    for step, shares in enumerate(figures["kept_share"]):
        for layer, share in enumerate(shares):
            if not abs(share - keep) <= bound:
                found.append(f"dropout keeps {share:.4f} of layer {layer} at step {step}, expected {keep} "
                             f"+- {bound:.4f} (rate {spec.drop_rate})")
    for step, errors in enumerate(figures["scale_error"]):
        for layer, error in enumerate(errors):
            if not error <= SCALE_RTOL:
                found.append(f"dropout scales kept units of layer {layer} at step {step} by a factor off "
                             f"1 / (1 - {spec.drop_rate}) by {error:.3g} relative")
    for (step_a, layer_a), (step_b, layer_b) in figures["repeated_masks"]:
        found.append(f"dropout draws the same mask for layer {layer_a} at step {step_a} and layer {layer_b} at "
                     f"step {step_b}")
    if figures["eval_changed"] != 0.0:
        found.append(f"dropout changes eval-mode outputs by up to {figures['eval_changed']:.3g}")
    return found

"""A float64 numpy reference of the model, its three cross-entropies, their gradients and the optimisers.

It is the oracle of every backend's parity tests: written from the formulas, with no framework.

Model: h_0 = x; h_{i+1} = dropout(relu(h_i W_i + b_i)) for hidden layers; logits z = h_L W_L + b_L.
Dropout is inverted (kept units scaled by 1/(1 - rate)), as in Keras, PyTorch and this project's JAX code.

Losses, mean over the batch of B rows (y one-hot, p = softmax(z)):
  logits:           L = -1/B sum_b sum_k y_bk (z_bk - logsumexp(z_b))
  native probs:     L = -1/B sum_b sum_k y_bk log(p_bk)                 (inf/NaN once p_bk underflows to 0)
  clipped probs:    L = -1/B sum_b sum_k y_bk log(clip(p_bk, eps, 1 - eps))  (zero gradient where clipped)

Adam (bias-corrected moments m, v after t steps, learning rate a):
  ``epsilon_form='corrected'`` (PyTorch, optax): w -= a * m_hat / (sqrt(v_hat) + eps)
  ``epsilon_form='hat'`` (Keras):  w -= a * sqrt(1 - b2^t)/(1 - b1^t) * m / (sqrt(v) + eps)
The two agree when eps is negligible next to sqrt(v_hat); Keras' form equals the corrected one with an
effective epsilon eps / sqrt(1 - b2^t): 31.6x larger at step 1, 1.4x at step 1000, -> eps later.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common.weights import Weights, param_name

LOSS_KINDS = ("logits", "native", "clipped")


def loss_kind(head: str, prob_loss: str) -> str:
    """The reference loss for a head: ``logits`` for the logits head, else the probability flavour."""
    return "logits" if head == "logits" else prob_loss


def _layers(weights: Weights) -> list[tuple[np.ndarray, np.ndarray]]:
    count = len(weights) // 2
    return [(weights[param_name(i, "kernel")].astype(np.float64), weights[param_name(i, "bias")].astype(np.float64))
            for i in range(count)]


def forward(weights: Weights, x: np.ndarray, masks: list[np.ndarray] | None = None, drop_rate: float = 0.0):
    """Logits (B, 10) and the activations needed for backprop. ``masks[i]`` is a 0/1 keep mask per hidden layer."""
    activations = [np.asarray(x, dtype=np.float64)]
    layers = _layers(weights)
    for i, (kernel, bias) in enumerate(layers[:-1]):
        h = np.maximum(activations[-1] @ kernel + bias, 0.0)
        if masks is not None:
            h = h * masks[i] / (1.0 - drop_rate)
        activations.append(h)
    kernel, bias = layers[-1]
    return activations[-1] @ kernel + bias, activations


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def loss_from_logits(kind: str, logits: np.ndarray, y: np.ndarray, clip_epsilon: float = 1e-7,
                     probs: np.ndarray | None = None) -> float:
    """Mean cross-entropy of ``kind``; ``probs`` overrides softmax(logits), e.g. with fp32 probabilities."""
    if kind == "logits":
        return float(-(y * log_softmax(logits)).sum(-1).mean())
    p = softmax(logits) if probs is None else np.asarray(probs, dtype=np.float64)
    if kind == "clipped":
        p = np.clip(p, clip_epsilon, 1.0 - clip_epsilon)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-(y * np.log(p)).sum(-1).mean())


def loss_grad_logits(kind: str, logits: np.ndarray, y: np.ndarray, clip_epsilon: float = 1e-7,
                     probs: np.ndarray | None = None) -> np.ndarray:
    """dL/dlogits by the chain rule the frameworks follow (so a saturated ``native`` softmax gives NaN)."""
    batch = len(logits)
    if kind == "logits":
        return (softmax(logits) - y) / batch
    p = softmax(logits) if probs is None else np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "clipped":
            inside = (p >= clip_epsilon) & (p <= 1.0 - clip_epsilon)
            grad_p = np.where(inside, -y / np.clip(p, clip_epsilon, 1.0 - clip_epsilon), 0.0) / batch
        else:
            grad_p = -y / p / batch
        # Softmax Jacobian-vector product: dz = p * (dp - <dp, p>).
        return p * (grad_p - (grad_p * p).sum(-1, keepdims=True))


def loss_and_grads(weights: Weights, x: np.ndarray, y: np.ndarray, kind: str, clip_epsilon: float = 1e-7,
                   masks: list[np.ndarray] | None = None, drop_rate: float = 0.0) -> tuple[float, Weights]:
    """Loss and its gradient for every canonical tensor (float64), by explicit backpropagation."""
    logits, activations = forward(weights, x, masks, drop_rate)
    loss = loss_from_logits(kind, logits, y, clip_epsilon)
    delta = loss_grad_logits(kind, logits, y, clip_epsilon)
    layers = _layers(weights)
    grads: Weights = {}
    for i in reversed(range(len(layers))):
        grads[param_name(i, "kernel")] = activations[i].T @ delta
        grads[param_name(i, "bias")] = delta.sum(0)
        if i:
            delta = delta @ layers[i][0].T
            if masks is not None:
                delta = delta * masks[i - 1] / (1.0 - drop_rate)
            delta = delta * (activations[i] > 0)
    return loss, grads


def sgd_step(weights: Weights, grads: Weights, learning_rate: float) -> Weights:
    return {k: weights[k] - learning_rate * grads[k] for k in weights}


@dataclasses.dataclass
class AdamState:
    step: int
    m: Weights
    v: Weights

    @classmethod
    def zeros_like(cls, weights: Weights) -> AdamState:
        return cls(0, {k: np.zeros_like(w, np.float64) for k, w in weights.items()},
                   {k: np.zeros_like(w, np.float64) for k, w in weights.items()})


def adam_step(weights: Weights, grads: Weights, state: AdamState, learning_rate: float, beta_1: float,
              beta_2: float, epsilon: float, epsilon_form: str = "corrected") -> tuple[Weights, AdamState]:
    """One Adam update; see the module docstring for the two epsilon placements."""
    t = state.step + 1
    m = {k: beta_1 * state.m[k] + (1 - beta_1) * grads[k] for k in weights}
    v = {k: beta_2 * state.v[k] + (1 - beta_2) * grads[k] ** 2 for k in weights}
    correction_1, correction_2 = 1 - beta_1**t, 1 - beta_2**t
    new = {}
    for k in weights:
        if epsilon_form == "hat":
            step = learning_rate * np.sqrt(correction_2) / correction_1 * m[k] / (np.sqrt(v[k]) + epsilon)
        elif epsilon_form == "corrected":
            step = learning_rate * (m[k] / correction_1) / (np.sqrt(v[k] / correction_2) + epsilon)
        else:
            raise ValueError(f"epsilon_form={epsilon_form!r}; use 'hat' (Keras) or 'corrected' (torch, optax)")
        new[k] = weights[k] - step
    return new, AdamState(t, m, v)

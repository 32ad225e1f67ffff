"""The float64 numpy reference as a ``Trainer``: the oracle that parity tests train every backend against.

Dropout is not modelled (``spec.drop_rate`` must be 0): parity runs turn it off so every framework sees the
same function. ``epsilon_form`` picks Adam's epsilon placement (``'hat'`` for Keras, ``'corrected'`` for
PyTorch and optax; see ``common.reference``).
"""

from __future__ import annotations

import numpy as np

from common import reference
from common.diagnostics import PLAIN_LOSS_PATH
from common.spec import Spec
from common.training import Trainer
from common.weights import Weights

class ReferenceTrainer(Trainer):
    def __init__(self, spec: Spec, head: str, x_train: np.ndarray, y_train: np.ndarray, weights: Weights,
                 epsilon_form: str = "corrected"):
        if spec.drop_rate:
            raise ValueError("the numpy reference trains without dropout: use a spec with drop_rate=0")
        self.spec, self.x, self.y = spec, x_train, y_train
        self.kind = reference.loss_kind(head, spec.prob_loss)
        self.loss_path = PLAIN_LOSS_PATH[self.kind]
        self.params = {k: w.astype(np.float64) for k, w in weights.items()}
        self.adam = reference.AdamState.zeros_like(self.params)
        self.epsilon_form = epsilon_form

    def _loss_and_grads(self, x, y):
        return reference.loss_and_grads(self.params, x, y, self.kind, self.spec.clip_epsilon)

    def run_epoch(self, batches: np.ndarray) -> np.ndarray:
        losses = []
        for rows in batches:
            loss, grads = self._loss_and_grads(self.x[rows], self.y[rows])
            losses.append(loss)
            if self.spec.optimizer == "sgd":
                self.params = reference.sgd_step(self.params, grads, self.spec.learning_rate)
            else:
                s = self.spec
                self.params, self.adam = reference.adam_step(self.params, grads, self.adam, s.learning_rate,
                                                             s.beta_1, s.beta_2, s.epsilon, self.epsilon_form)
        return np.asarray(losses)

    def probe(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        _, grads = self._loss_and_grads(x, y)
        with np.errstate(invalid="ignore", over="ignore"):
            norm = float(np.sqrt(sum((g**2).sum() for g in grads.values())))
        return reference.forward(self.params, x)[0], norm

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        logits = reference.forward(self.params, x)[0]
        return reference.loss_from_logits(self.kind, logits, y, self.spec.clip_epsilon), logits.argmax(1)

    def weights(self) -> Weights:
        return {k: w.astype(np.float32) for k, w in self.params.items()}

"""The Keras backend: the post's four variants on Keras 3 (engines tensorflow, jax, torch) and on legacy
Keras 2 (engine tf_keras).

Importing this package imports no Keras or TensorFlow (only ``_tf``, ``_jax`` and ``_torch`` do, and
``engine.load`` imports one of them after setting ``KERAS_BACKEND``/``TF_USE_LEGACY_KERAS``): the engine is
chosen when a ``KerasBackend`` is made, and each engine needs its own process.

Example (a new process per engine)::

    from backends import get_backend
    backend = get_backend("keras", engine="jax")     # Keras 3 on JAX from here on, in this process

Modules: ``engine`` (choosing and loading an engine; what differs between engines is in ``_tf``, ``_jax``,
``_torch``), ``model`` (model, weights, losses, which loss path runs), ``trainers`` (fit and loop).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.base import Backend
from backends.keras_backend import engine as engines
from backends.keras_backend import model as mlp
from backends.keras_backend.trainers import FitTrainer, LoopTrainer
from common.data import Dataset
from common.spec import Spec
from common.training import GivenLoss, Trainer
from common.variants import Variant
from common.weights import Weights


class KerasBackend(Backend):
    name = "keras"
    extra = "keras"
    engines = tuple(engines.ENGINES)

    def __init__(self, device: str = "cpu", engine: str | None = "tensorflow"):
        super().__init__(device=device, engine=engine)
        self.keras_engine = engines.load(engine, device)

    # --- identity -----------------------------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        return self.keras_engine.versions()

    def device_name(self) -> str:
        return self.keras_engine.device_name()

    def threads(self) -> dict[str, Any]:
        return self.keras_engine.threads()

    def kernel_info(self) -> dict[str, Any]:
        return self.keras_engine.kernel_info()

    # --- model --------------------------------------------------------------------------------------------
    def build_model(self, spec: Spec, head: str, weights: Weights) -> Any:
        return mlp.build_model(self.keras_engine, spec, head, weights)

    def get_weights(self, model: Any) -> Weights:
        return mlp.get_weights(self.keras_engine, model)

    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        return self.keras_engine.to_numpy(model(x, training=False))

    def hidden_outputs(self, model: Any, x: np.ndarray, training: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        to_numpy = self.keras_engine.to_numpy
        return [(to_numpy(a), to_numpy(h)) for a, h in mlp.hidden_outputs(self.keras_engine, model, x, training)]

    # --- loss ---------------------------------------------------------------------------------------------
    def loss_and_grad_logits(self, head: str, prob_loss: str, logits: np.ndarray, y: np.ndarray,
                             clip_epsilon: float = 1e-7) -> tuple[float, np.ndarray]:
        loss_of = mlp.loss_of_logits(self.keras_engine, head, prob_loss, clip_epsilon, y)
        loss, grad = self.keras_engine.value_and_grad_input(loss_of, np.asarray(logits, np.float32))
        return float(self.keras_engine.to_numpy(loss)), self.keras_engine.to_numpy(grad)

    def loss_and_grads(self, spec: Spec, head: str, model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        engine = self.keras_engine
        loss_fn = mlp.make_loss(engine, head, spec.prob_loss, spec.clip_epsilon)
        loss, grads, _ = engine.value_and_grads(model, loss_fn, x, y, training=False)
        names = mlp.canonical_names(engine, model)
        return float(engine.to_numpy(loss)), {n: engine.to_numpy(g) for n, g in zip(names, grads)}

    # --- training -----------------------------------------------------------------------------------------
    def make_trainer(self, spec: Spec, variant: Variant, data: Dataset, weights: Weights,
                     loss: GivenLoss | None = None) -> Trainer:
        trainer = FitTrainer if variant.mode == "fit" else LoopTrainer
        return trainer(self.keras_engine, spec, variant, data, weights, loss)


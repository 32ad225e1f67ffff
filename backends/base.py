"""The contract every backend implements (Keras, PyTorch, JAX): same shape, framework-specific insides.

A backend adds only model, loss and step; spec, data, weights, the training driver, results and reports
come from ``common``. All arrays crossing this interface are numpy, in the canonical layout of
``common.weights`` (kernels (fan_in, fan_out)).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from common.data import Dataset
from common.spec import Spec
from common.training import GivenLoss, Trainer
from common.variants import Variant
from common.weights import Weights

DEVICES = ("cpu", "gpu")


class BackendError(RuntimeError):
    """A backend that cannot run here (framework missing, no GPU, wrong engine); the message says the fix."""


class Backend(abc.ABC):
    #: Registry name: ``keras``, ``torch`` or ``jax``.
    name: ClassVar[str]
    #: The pip extra that installs this backend's framework.
    extra: ClassVar[str]
    #: Engines this backend can run on; ``(None,)`` for a single-engine framework.
    engines: ClassVar[tuple[str | None, ...]] = (None,)

    def __init__(self, device: str = "cpu", engine: str | None = None):
        if device not in DEVICES:
            raise BackendError(f"unknown device {device!r}; choose from: {', '.join(DEVICES)}")
        if engine not in self.engines:
            allowed = ", ".join(e for e in self.engines if e) or "none (this backend has a single engine)"
            raise BackendError(f"the {self.name} backend has no engine {engine!r}; engines: {allowed}")
        self.device = device
        self.engine = engine

    # --- identity -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework package versions, e.g. ``{"torch": "2.13.0"}``."""

    @abc.abstractmethod
    def device_name(self) -> str:
        """The hardware that runs the math: ``"cpu"`` (its model is in every record's env) or the accelerator's
        model, e.g. ``"NVIDIA H100 80GB HBM3"``."""

    def threads(self) -> dict[str, Any]:
        """Thread settings that affect speed, under ``common.results.THREAD_KEYS`` (None where not set)."""
        return {}

    @abc.abstractmethod
    def kernel_info(self) -> dict[str, Any]:
        """The framework's own account of the kernels it runs here, for every record's ``env.kernels``: the
        instruction set or kernel library it chose and the settings that change its arithmetic
        (``backends.kernel_info``); ``common.machine`` records what the hardware offers."""

    # --- model --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def build_model(self, spec: Spec, head: str, weights: Weights) -> Any:
        """The framework's model for ``head`` (``probs``: softmax output; ``logits``: none), set to ``weights``."""

    @abc.abstractmethod
    def get_weights(self, model: Any) -> Weights:
        """The model's parameters in the canonical layout (float32 numpy)."""

    @abc.abstractmethod
    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        """Eval-mode (no dropout) model output: probabilities for the probs head, logits for the logits head."""

    @abc.abstractmethod
    def hidden_outputs(self, model: Any, x: np.ndarray, training: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per hidden layer, (its ReLU output, what its dropout passes on) in one forward pass on ``x``.

        ``training=True`` drops units as a training step does, with new masks at every call (successive calls
        are successive steps); ``training=False`` is eval mode, where dropout passes its input through.
        """

    # --- loss ---------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def loss_and_grad_logits(self, head: str, prob_loss: str, logits: np.ndarray, y: np.ndarray,
                             clip_epsilon: float = 1e-7) -> tuple[float, np.ndarray]:
        """The training loss of ``head`` as this framework computes it, and its gradient w.r.t. ``logits``.

        For the probs head the framework's own softmax turns ``logits`` into the probabilities the loss sees,
        exactly as in the model, so any rewrite the framework does (Keras' recovered logits) shows here.
        """

    @abc.abstractmethod
    def loss_and_grads(self, spec: Spec, head: str, model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """Eval-mode training loss of ``head`` (flavour ``spec.prob_loss``) and its parameter gradients."""

    # --- training -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def make_trainer(self, spec: Spec, variant: Variant, data: Dataset, weights: Weights,
                     loss: GivenLoss | None = None) -> Trainer:
        """A ``Trainer`` for ``variant`` (fit: the compiled path; loop: the hand-written loop, run as
        ``spec.loop_exec`` says), with ``spec.softmax`` as the probs head's softmax form where the framework
        tells the forms apart (Keras); PyTorch and JAX compute one softmax whatever the form.

        ``loss``: a loss of the logits given by the caller instead of the variant's own (``common.training.
        GivenLoss``; ``spec.loss_cell`` names it and the variant is a logits one: ``check_given_loss``)."""

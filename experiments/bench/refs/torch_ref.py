"""PyTorch: the floor as plain ``torch.mm``, and the loop a PyTorch tutorial writes.

The tutorial loop: ``torch.optim.Adam(model.parameters(), lr=...)`` with torch's default implementation (not
the fused kernel the backend asks for), then per batch ``zero_grad``, forward, loss, ``backward``, ``step`` and
``total += loss.item()``, which waits for the step. Batches are slices of the training set already in memory
(DataLoader-free). Same model and loss as the backend (``backends.torch_backend``), and, since it runs in the
backend's process, the same thread settings: the ratio measures the loop, not the OpenMP policy.
"""

from __future__ import annotations

from typing import Any

import torch

from backends.torch_backend import make_loss, synchronize
from common.data import Dataset
from experiments.bench.refs import batch_slices
from common.spec import Spec
from common.weights import initial_weights

DESCRIPTION = "torch.optim.Adam defaults, in-memory batch slices, per-step loss.item()"


def floor(gemms: list, device: str):
    """``run(steps)``: the step's GEMMs as ``torch.mm`` calls on random operands already on the device."""
    target = torch.device("cuda" if device == "gpu" else "cpu")
    generator = torch.Generator().manual_seed(0)
    operands = [(g.layout, torch.randn(g.a_shape, generator=generator).to(target),
                 torch.randn(g.b_shape, generator=generator).to(target)) for g in gemms]

    def run(steps: int) -> None:
        for _ in range(steps):
            for layout, a, b in operands:
                # .t() is a view: torch hands BLAS the transpose flag, as autograd does in the real step.
                torch.mm(a.t() if layout == "tn" else a, b.t() if layout == "nt" else b)
        synchronize(target)

    return run


class TutorialLoop:
    """``loop(steps)`` trains ``steps`` batches as a tutorial's epoch loop does; returns the mean loss."""

    def __init__(self, backend: Any, spec: Spec, head: str, data: Dataset):
        self.model = backend.build_model(spec, head, initial_weights(spec))
        device = next(self.model.parameters()).device
        self.criterion = make_loss(head, spec.prob_loss, spec.clip_epsilon)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=spec.learning_rate,
                                          betas=(spec.beta_1, spec.beta_2), eps=spec.epsilon)
        self.x = torch.as_tensor(data.x_train, device=device)
        self.y = torch.as_tensor(data.y_train, device=device)
        self.labels = self.y.argmax(-1)
        self.rows = batch_slices(len(data.x_train), spec.batch_size)

    def __call__(self, steps: int) -> float:
        self.model.train()
        total = 0.0
        for _ in range(steps):
            rows = next(self.rows)
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(self.x[rows]), self.labels[rows], self.y[rows])
            loss.backward()
            self.optimizer.step()
            total += loss.item()
        return total / steps


reference = TutorialLoop

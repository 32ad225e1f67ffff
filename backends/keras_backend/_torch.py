"""Keras 3 on PyTorch (``KERAS_BACKEND=torch``).

Keras variables are ``torch.nn.Parameter``s (``variable.value``), so the hand-written loop is a plain eager
torch autograd loop, as in Keras' guide "Writing a training loop from scratch in PyTorch": forward, autograd
gradient of the loss w.r.t. the parameters, then the Keras optimizer's update under ``torch.no_grad``.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import torch

from backends.keras_backend.engine import Engine, no_gpu
from backends.kernel_info import torch_kernels


class TorchEngine(Engine):
    def __init__(self, name: str, device: str):
        self.name, self.device, self.keras, self.ops = name, device, keras, keras.ops

    def versions(self) -> dict[str, str]:
        return {"keras": keras.__version__, "torch": torch.__version__}

    def dropout_seed(self, seed: int, layer: int) -> int:
        # This engine seeds a torch.Generator with seed + the layer's call count, so with consecutive seeds
        # layer i + 1 replays layer i's masks one step later (seen in the parity suite's dropout check).
        # Seeds 2**20 apart stay distinct for longer than any run (9,000 steps).
        return seed + layer * 2**20

    def device_name(self) -> str:
        return torch.cuda.get_device_name() if self.device == "gpu" else "cpu"

    def threads(self) -> dict[str, int]:
        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}

    def kernel_info(self) -> dict[str, Any]:
        return torch_kernels(torch.device("cuda" if self.device == "gpu" else "cpu"))

    def value_and_grads(self, model, loss_fn, x, y, training: bool):
        output = model(x, training=training)
        loss = loss_fn(y, output)
        grads = torch.autograd.grad(loss, [v.value for v in model.trainable_variables])
        return loss.detach(), list(grads), output.detach()

    def softmax_op(self, z):
        return torch.softmax(z, dim=-1)

    def value_and_grad_input(self, fn, z):
        z = self.ops.convert_to_tensor(z).requires_grad_(True)
        loss = fn(z)
        (grad,) = torch.autograd.grad(loss, z)
        return loss.detach(), grad

    def apply(self, optimizer, grads, variables) -> None:
        with torch.no_grad():  # the update writes the parameters in place
            optimizer.apply_gradients(zip(grads, variables))


def load(name: str, device: str) -> TorchEngine:
    if device == "gpu":
        if not torch.cuda.is_available():
            raise no_gpu(name, "torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = False  # full fp32, as the parity tests assume
    return TorchEngine(name, device)

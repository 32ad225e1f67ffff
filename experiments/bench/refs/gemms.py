"""The GEMM floor's work list: every matrix multiply of one training step of the MLP, with its shapes.

Each framework's reference module (``tensorflow_ref``, ``torch_ref``, ``jax_ref``) turns this list into its
``floor``: the step's products alone, in that framework, timed beside the training path that contains them.

    >>> from common.spec import Spec
    >>> len(step_gemms(Spec())), sum(g.flops for g in step_gemms(Spec()))
    (14, 635494400)
"""

from __future__ import annotations

import dataclasses

from common.spec import Spec
from common.weights import layer_name


@dataclasses.dataclass(frozen=True)
class Gemm:
    """One (m, k) @ (k, n) product of a training step. ``layout`` says which operand is stored transposed, as in
    the step: ``nn`` A @ B; ``tn`` A^T @ B with A stored (k, m); ``nt`` A @ B^T with B stored (n, k)."""

    name: str
    m: int
    k: int
    n: int
    layout: str

    @property
    def a_shape(self) -> tuple[int, int]:
        return (self.k, self.m) if self.layout == "tn" else (self.m, self.k)

    @property
    def b_shape(self) -> tuple[int, int]:
        return (self.n, self.k) if self.layout == "nt" else (self.k, self.n)

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def step_gemms(spec: Spec) -> list[Gemm]:
    """Every GEMM of one step of the MLP: per layer the forward x @ W, the kernel gradient dW = X^T dY, and the
    input gradient dX = dY W^T for all but the first layer (nothing needs the gradient of the images)."""
    batch, sizes = spec.batch_size, spec.layer_sizes
    gemms = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        gemms.append(Gemm(f"{layer_name(i)} x@W", batch, fan_in, fan_out, "nn"))
        gemms.append(Gemm(f"{layer_name(i)} dW=X^T dY", fan_in, batch, fan_out, "tn"))
        if i > 0:
            gemms.append(Gemm(f"{layer_name(i)} dX=dY W^T", batch, fan_out, fan_in, "nt"))
    return gemms

"""PyTorch's cross-entropy calls, functional and module forms, eagerly; also the measurement that the Keras
cells on the torch engine share.

    python -m experiments.atlas.torch_cells --inputs PROBE.npz --records OUT.jsonl

``out`` is the head's output (``F.softmax(z, 1)``, ``torch.sigmoid(z)``, ``F.log_softmax(z, 1)`` or the logits),
``y`` the one-hot targets (float), ``t`` the integer labels; every call uses its default reduction unless the
api says otherwise (``mean``: over rows for the categorical losses, over rows and classes for BCE and
``kl_div``'s default). Not probed: ``torch.compile`` (seconds per cell; its inductor passes have no rule that
rewrites log(softmax(x)), see findings.md).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from experiments.atlas.probe import Cell, Measurement, child_parser, run_child

HEADS = {"softmax": lambda z: F.softmax(z, dim=1), "sigmoid": torch.sigmoid, "logits": lambda z: z,
         "log_softmax": lambda z: F.log_softmax(z, dim=1)}

# (api, family, reduction, targets, heads, loss(targets, out), label smoothing)
CALLS = [
    ("F.cross_entropy(out, t)", "categorical", "rows", "index", ("logits", "softmax", "sigmoid", "log_softmax"),
     lambda t, out: F.cross_entropy(out, t), 0.0),
    ("nn.CrossEntropyLoss()(out, t)", "categorical", "rows", "index", ("logits", "softmax"),
     lambda t, out: nn.CrossEntropyLoss()(out, t), 0.0),
    ("F.cross_entropy(out, y)", "categorical", "rows", "onehot", ("logits", "softmax"),
     lambda y, out: F.cross_entropy(out, y), 0.0),
    ("F.cross_entropy(out, t, label_smoothing=0.1)", "categorical", "rows", "index", ("logits", "softmax"),
     lambda t, out: F.cross_entropy(out, t, label_smoothing=0.1), 0.1),
    ("F.nll_loss(out, t)", "categorical", "rows", "index", ("log_softmax", "softmax"),
     lambda t, out: F.nll_loss(out, t), 0.0),
    ("nn.NLLLoss()(out, t)", "categorical", "rows", "index", ("log_softmax",),
     lambda t, out: nn.NLLLoss()(out, t), 0.0),
    ("F.nll_loss(torch.log(out), t)", "categorical", "rows", "index", ("softmax",),
     lambda t, out: F.nll_loss(torch.log(out), t), 0.0),
    ("-(y * torch.log(out)).sum(1).mean()", "categorical", "rows", "onehot", ("softmax",),
     lambda y, out: -(y * torch.log(out)).sum(1).mean(), 0.0),
    ("F.binary_cross_entropy(out, y)", "binary", "elements", "onehot", ("sigmoid", "softmax", "logits"),
     lambda y, out: F.binary_cross_entropy(out, y), 0.0),
    ("nn.BCELoss()(out, y)", "binary", "elements", "onehot", ("sigmoid", "softmax"),
     lambda y, out: nn.BCELoss()(out, y), 0.0),
    ("F.binary_cross_entropy_with_logits(out, y)", "binary", "elements", "onehot", ("logits", "sigmoid", "softmax"),
     lambda y, out: F.binary_cross_entropy_with_logits(out, y), 0.0),
    ("nn.BCEWithLogitsLoss()(out, y)", "binary", "elements", "onehot", ("logits", "sigmoid"),
     lambda y, out: nn.BCEWithLogitsLoss()(out, y), 0.0),
    ("F.kl_div(out, y, reduction='batchmean')", "kl", "rows", "onehot", ("log_softmax", "softmax"),
     lambda y, out: F.kl_div(out, y, reduction="batchmean"), 0.0),
    ("F.kl_div(torch.log(out), y, reduction='batchmean')", "kl", "rows", "onehot", ("softmax",),
     lambda y, out: F.kl_div(torch.log(out), y, reduction="batchmean"), 0.0),
    ("F.kl_div(out, y)", "kl", "elements", "onehot", ("log_softmax",),
     lambda y, out: F.kl_div(out, y), 0.0),
]


def cells() -> list[Cell]:
    return [Cell(api=api, head=head, from_logits=None, exec="eager", family=family, reduction=reduction,
                 targets=targets, make_head=HEADS[head], loss=loss, label_smoothing=smoothing)
            for api, family, reduction, targets, heads, loss, smoothing in CALLS for head in heads]


def measure(cell: Cell, logits: np.ndarray, targets: np.ndarray) -> Measurement:
    """Loss, d loss / d logits (``backward``) and the head output."""
    z = torch.tensor(logits, requires_grad=True)
    out = cell.make_head(z)
    loss = cell.loss(torch.from_numpy(targets), out)
    loss.backward()
    grad = z.grad if z.grad is not None else torch.zeros_like(z)
    return Measurement(float(loss.detach()), grad.numpy(), out.detach().numpy())


def index_targets(y):
    """Integer labels (int64) of one-hot rows, for a call that takes them; numpy rows too (Keras' evaluation)."""
    return y.argmax(-1)


def threads() -> dict[str, int]:
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def main(argv: list[str] | None = None) -> int:
    args = child_parser("python -m experiments.atlas.torch_cells").parse_args(argv)
    torch.set_num_threads(1)
    return run_child(args, "torch", None, cells(), measure, {"torch": torch.__version__}, threads())


if __name__ == "__main__":
    sys.exit(main())

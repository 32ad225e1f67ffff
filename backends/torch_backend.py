"""PyTorch backend: the dropout MLP, its three cross-entropies, an eager loop and a ``torch.compile``d fit.

Losses, mean over the batch (``p = softmax(z)``, ``y`` one-hot, ``c`` the integer labels):

  logits:         ``F.cross_entropy(z, c)``                        = -mean_b log_softmax(z_b)[c_b]
  native probs:   ``F.nll_loss(torch.log(p), c)``                  = -mean_b log(p_b[c_b])   (inf once p underflows)
  clipped probs:  ``-(y * log(clamp(p, eps, 1 - eps))).sum(-1).mean()``  (zero gradient where clamped)
  given:          the caller's loss of the logits (``common.training.GivenLoss``: the atlas' cells)

``loop_*`` is the plain eager loop a PyTorch user writes (``loop_exec="compiled"``: its step under
``torch.compile``); ``fit_*`` runs the same train step through ``torch.compile``: the graph-compiled path that
plays the part of Keras' ``fit``. A compiled loop and fit are therefore one computation here.

    >>> from common.spec import Spec
    >>> from common.weights import initial_weights
    >>> backend = TorchBackend()
    >>> model = backend.build_model(Spec(), "probs", initial_weights(Spec()))
    >>> backend.forward(model, np.zeros((2, 784), np.float32)).shape
    (2, 10)
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

# With as many OpenMP threads as cores, libgomp's idle workers spin and fight the busy threads for the two
# cores: measured ~650 ms/step instead of ~22 ms. OpenMP reads the policy once, when torch loads, so it must
# be set before the first `import torch` anywhere in the process; later it changes nothing.
_USER_POLICY = os.environ.get("OMP_WAIT_POLICY")
_TORCH_LOADED_FIRST = "torch" in sys.modules
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
#: The wait policy OpenMP runs with; None: libgomp's spinning default (torch was imported before this module).
OMP_WAIT_POLICY = _USER_POLICY if _TORCH_LOADED_FIRST else os.environ["OMP_WAIT_POLICY"]
if OMP_WAIT_POLICY is None:
    warnings.warn("torch was imported before backends.torch_backend with OMP_WAIT_POLICY unset, so OpenMP threads "
                  "may busy-wait (measured ~30x slower on 2 cores); set OMP_WAIT_POLICY=PASSIVE in the environment "
                  "or import backends.torch_backend first", RuntimeWarning, stacklevel=2)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from backends.base import Backend, BackendError  # noqa: E402
from backends.kernel_info import torch_kernels  # noqa: E402
from common.data import Dataset  # noqa: E402
from common.diagnostics import PLAIN_LOSS_PATH, StepCounts  # noqa: E402
from common.reference import loss_kind  # noqa: E402
from common.spec import Spec  # noqa: E402
from common.training import GivenLoss, Trainer, check_given_loss  # noqa: E402
from common.variants import Variant  # noqa: E402
from common.weights import Weights, layer_name  # noqa: E402

# All cores, or OMP_NUM_THREADS when set (experiments.harness.sweep sets it to the CPUs a backend process was given).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0] or os.cpu_count() or 1))
with contextlib.suppress(RuntimeError):  # settable once per process, before any inter-op work: keep the first
    torch.set_num_interop_threads(1)  # nothing here runs ops concurrently; extra pools only compete for cores


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# --- model ------------------------------------------------------------------------------------------------
def build_mlp(spec: Spec, head: str, device: torch.device) -> nn.Sequential:
    """Linear-ReLU-Dropout per hidden layer, a Linear output, then Softmax for the ``probs`` head."""
    layers: list[nn.Module] = []
    sizes = spec.layer_sizes
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out, device=device))
        if i < spec.hidden_layers:
            layers += [nn.ReLU(), nn.Dropout(spec.drop_rate)]
    if head == "probs":
        layers.append(nn.Softmax(dim=-1))
    return nn.Sequential(*layers)


def hidden_outputs(model: nn.Sequential, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ReLU output, Dropout output) of every hidden layer, in the model's current mode (train or eval)."""
    pairs, h = [], x
    for layer in model:
        activation, h = h, layer(h)
        if isinstance(layer, nn.Dropout):
            pairs.append((activation, h))
    return pairs


def split_head(model: nn.Sequential) -> tuple[nn.Module, nn.Module]:
    """(body giving the logits, output activation): the probe and the loss tests need the logits."""
    if isinstance(model[-1], nn.Softmax):
        return model[:-1], model[-1]
    return model, nn.Identity()


def linears(model: nn.Sequential) -> list[tuple[str, nn.Linear]]:
    """The canonical name ``dense_i`` of every Linear, in order."""
    return [(layer_name(i), m) for i, m in enumerate(m for m in model if isinstance(m, nn.Linear))]


def set_weights(model: nn.Sequential, weights: Weights) -> None:
    """Load canonical weights; ``nn.Linear`` stores its kernel as (out, in), the transpose of canonical."""
    with torch.no_grad():
        for name, linear in linears(model):
            linear.weight.copy_(torch.from_numpy(weights[f"{name}.kernel"].T))
            linear.bias.copy_(torch.from_numpy(weights[f"{name}.bias"]))


def get_weights(model: nn.Sequential, tensors: list[torch.Tensor] | None = None) -> Weights:
    """Parameters (or ``tensors`` in parameter order, e.g. their gradients) in the canonical layout."""
    tensors = list(model.parameters()) if tensors is None else tensors
    names = [f"{name}.{kind}" for name, _ in linears(model) for kind in ("weight", "bias")]
    out: Weights = {}
    for name, tensor in zip(names, tensors):
        array = tensor.detach().cpu().numpy()
        if name.endswith(".weight"):
            name, array = name.replace(".weight", ".kernel"), array.T
        out[name] = np.array(array, dtype=np.float32, order="C")  # a copy: training must not change it
    return out


# --- loss -------------------------------------------------------------------------------------------------
def make_loss(head: str, prob_loss: str, clip_epsilon: float, given: GivenLoss | None = None) -> LossFn:
    """``loss(output, labels, one_hot)`` for the head's output: logits, or softmax probabilities; with ``given``
    (the caller's ``loss(one_hot, logits)``, ``common.training.GivenLoss``) that loss of the logits."""
    if given is not None:
        return lambda z, labels, y: given(y, z)
    kind = loss_kind(head, prob_loss)
    if kind == "logits":
        return lambda z, labels, y: F.cross_entropy(z, labels)
    if kind == "native":
        return lambda p, labels, y: F.nll_loss(torch.log(p), labels)
    return lambda p, labels, y: -(y * torch.log(torch.clamp(p, clip_epsilon, 1.0 - clip_epsilon))).sum(-1).mean()


def unclipped_rows(output: torch.Tensor, labels: torch.Tensor, probs: bool, clip_epsilon: float) -> torch.Tensor:
    """Rows whose true-class probability lies inside (eps, 1 - eps), compared in float32 as the clamp compares
    them; ``output`` is the model's (probabilities when ``probs``, else logits)."""
    p = output if probs else torch.softmax(output, dim=-1)
    p_true = p.gather(1, labels[:, None])
    return ((p_true > clip_epsilon) & (p_true < 1.0 - clip_epsilon)).sum()


def nonzero_gradient(model: nn.Sequential) -> torch.Tensor:
    """Whether the step's gradient is non-zero, read off the output layer's (see ``backends.jax_backend.step_counts``
    for why that layer tells)."""
    output_layer = linears(model)[-1][1]
    return output_layer.weight.grad.ne(0).any() | output_layer.bias.grad.ne(0).any()


def eval_loss_and_grads(model: nn.Sequential, loss_fn: LossFn, x: torch.Tensor, labels: torch.Tensor,
                        y: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
    """Eval-mode (loss, parameter gradients, logits); ``autograd.grad`` leaves every ``.grad`` untouched."""
    model.eval()
    body, activation = split_head(model)
    logits = body(x)
    loss = loss_fn(activation(logits), labels, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), grads, logits.detach()


# --- optimiser --------------------------------------------------------------------------------------------
@functools.cache
def fused_adam_supported(device_type: str) -> bool:
    """Whether this torch build has a fused Adam kernel for the device (torch only checks at the first step)."""
    w = torch.zeros(1, device=device_type, requires_grad=True)
    w.grad = torch.zeros_like(w)
    try:
        torch.optim.Adam([w], fused=True).step()
    except RuntimeError:
        return False
    return True


def make_optimizer(spec: Spec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD, or Adam: w -= lr * m_hat / (sqrt(v_hat) + eps), fused into one kernel where torch has one.

    torch adds eps *after* the bias correction; Keras uses the epsilon-hat form (eps before it, a larger
    effective epsilon early in training: eps / sqrt(1 - beta_2^t)): see ``common.reference.adam_step``'s ``epsilon_form``.
    """
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.learning_rate)
    fused = fused_adam_supported(params[0].device.type)
    return torch.optim.Adam(params, lr=spec.learning_rate, betas=(spec.beta_1, spec.beta_2), eps=spec.epsilon,
                            fused=fused, foreach=not fused)


# --- training ---------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a wall-clock reading covers it (CPU ops are already synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TorchTrainer(Trainer):
    """One variant: model, optimiser and the whole training set as device tensors, sliced per step.

    ``loop``: the eager step. ``fit``: the same step with the batch loss (forward + loss) under
    ``torch.compile(fullgraph=True)``; its backward, which ``loss.backward()`` runs, is compiled with it
    (AOT autograd). The optimiser steps outside the compiled function, because in torch 2.13 compiling the
    whole step does not give one graph: dynamo does not trace ``zero_grad`` or ``Tensor.backward()`` (the
    step splits into 4+ graphs, and dynamo guards them on this optimiser object); fused Adam is marked
    ``compiler.disable`` (an eager island anyway); and a traced ``foreach`` Adam that recompiles once its
    state exists fails in fake-tensor tracing ("Expected scalars to be on CPU, got meta", seen with two fit
    trainers in one process). Both modes thus run the same fused Adam.
    """

    def __init__(self, spec: Spec, variant: Variant, data: Dataset, weights: Weights, device: torch.device,
                 loss: GivenLoss | None = None):
        check_given_loss(spec, variant.head, loss)
        self.device = device
        self.model = build_mlp(spec, variant.head, device)
        set_weights(self.model, weights)
        self.loss_fn = make_loss(variant.head, spec.prob_loss, spec.clip_epsilon, loss)
        # torch never rewrites a loss
        self.loss_path = "given" if loss else PLAIN_LOSS_PATH[loss_kind(variant.head, spec.prob_loss)]
        self.optimizer = make_optimizer(spec, list(self.model.parameters()))
        self.x, self.labels, self.y = self._tensors(data.x_train, data.y_train)
        self.seed = spec.seed
        self.rng_state: tuple[torch.Tensor, ...] | None = None
        self.compiled = variant.mode == "fit" or spec.loop_exec == "compiled"  # a compiled loop is fit's step
        self.probs, self.clip_epsilon = variant.head == "probs", spec.clip_epsilon
        # fullgraph: one graph or an error, never a silent eager fallback (graph break, recompile limit).
        # Parameters are graph inputs, so later trainers of the same head and loss reuse the compiled code.
        self.batch_loss = torch.compile(self.loss, fullgraph=True) if self.compiled else self.loss

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, integer labels, one-hot) on the device."""
        y = torch.as_tensor(y, device=self.device)
        return torch.as_tensor(x, device=self.device), y.argmax(-1), y

    def loss(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The variant's loss on a batch, with dropout as the model's mode (train/eval) says, and its unclipped
        rows (``unclipped_rows``)."""
        output = self.model(x)
        return self.loss_fn(output, labels, y), unclipped_rows(output, labels, self.probs, self.clip_epsilon)

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update; (the batch loss, [unclipped rows, 1 if the gradient was non-zero]), on the device."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, unclipped = self.batch_loss(x, labels, y)
        loss.backward()
        counts = torch.stack([unclipped, nonzero_gradient(self.model).long()])
        self.optimizer.step()
        return loss.detach(), counts

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """Draw dropout masks from this trainer's stream (seeded by the spec), not the process-global one.

        So the same seed gives the same masks whatever else used torch's RNG in between (another trainer,
        model construction, compilation). The global state is restored on exit.
        """
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device.index] if cuda else [], device_type=self.device.type):
            if self.rng_state is None:
                torch.manual_seed(self.seed)
            else:
                torch.set_rng_state(self.rng_state[0])
                if cuda:
                    torch.cuda.set_rng_state(self.rng_state[1], self.device)
            yield
            self.rng_state = (torch.get_rng_state(),) + ((torch.cuda.get_rng_state(self.device),) if cuda else ())

    def run_epoch(self, batches: np.ndarray) -> np.ndarray:
        rows = torch.as_tensor(batches, dtype=torch.long, device=self.device)
        losses = torch.empty(len(rows), device=self.device)
        counts = torch.empty((len(rows), 2), dtype=torch.long, device=self.device)
        self.model.train()
        with self.own_rng():
            start = 0
            if self.compiled and not self.compile_seconds:
                # Step 0 traces and compiles forward and backward, then trains; step 1 runs compiled code.
                first = self._timed_step(rows, losses, counts, 0)
                second = self._timed_step(rows, losses, counts, 1) if len(rows) > 1 else 0.0
                self.compile_seconds = max(first - second, 1e-9)
                start = min(2, len(rows))
            for i in range(start, len(rows)):
                self._step(rows, losses, counts, i)
        self.step_counts = StepCounts.from_columns(counts.cpu().numpy())  # the epoch's device-to-host reads
        return losses.cpu().numpy()

    def _step(self, rows: torch.Tensor, losses: torch.Tensor, counts: torch.Tensor, i: int) -> None:
        losses[i], counts[i] = self.train_step(self.x[rows[i]], self.labels[rows[i]], self.y[rows[i]])

    def _timed_step(self, rows: torch.Tensor, losses: torch.Tensor, counts: torch.Tensor, i: int) -> float:
        start = time.perf_counter()
        self._step(rows, losses, counts, i)
        synchronize(self.device)
        return time.perf_counter() - start

    def probe(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        _, grads, logits = eval_loss_and_grads(self.model, self.loss_fn, *self._tensors(x, y))
        norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads))
        return logits.cpu().numpy(), float(norm)

    @torch.no_grad()
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        x, labels, y = self._tensors(x, y)
        self.model.eval()
        body, activation = split_head(self.model)
        logits = body(x)
        loss = self.loss_fn(activation(logits), labels, y)
        return float(loss), logits.argmax(-1).cpu().numpy()

    def weights(self) -> Weights:
        return get_weights(self.model)


# --- backend ----------------------------------------------------------------------------------------------
class TorchBackend(Backend):
    name = "torch"
    extra = "torch"

    def __init__(self, device: str = "cpu", engine: str | None = None):
        super().__init__(device, engine)
        self.torch_device = torch.device("cpu")
        if device == "gpu":
            if not torch.cuda.is_available():
                build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
                raise BackendError(f"--device gpu needs CUDA, but torch {torch.__version__} ({build}) sees no "
                                   "CUDA GPU; use --device cpu, or install a CUDA build of torch on a GPU machine")
            # TF32 matmuls move raw-pixel logits by ~0.12 (docs/design.md, "Parity"): keep full fp32 for parity,
            # and silence inductor's hint to turn TF32 on, which would undo that.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            warnings.filterwarnings("ignore", message="TensorFloat32 tensor cores", category=UserWarning)
            # With an explicit index: the trainer forks and restores this device's RNG by it.
            self.torch_device = torch.device("cuda", torch.cuda.current_device())

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def device_name(self) -> str:
        if self.torch_device.type == "cuda":
            return torch.cuda.get_device_name(self.torch_device)
        return "cpu"

    def threads(self) -> dict[str, int | str | None]:
        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
                "omp_wait_policy": OMP_WAIT_POLICY or "default (torch was imported first)"}

    def kernel_info(self) -> dict[str, Any]:
        return torch_kernels(self.torch_device)

    def build_model(self, spec: Spec, head: str, weights: Weights) -> nn.Sequential:
        model = build_mlp(spec, head, self.torch_device)
        set_weights(model, weights)
        return model

    def get_weights(self, model: nn.Sequential) -> Weights:
        return get_weights(model)

    @torch.no_grad()
    def forward(self, model: nn.Sequential, x: np.ndarray) -> np.ndarray:
        model.eval()
        return model(torch.as_tensor(x, device=self.torch_device)).cpu().numpy()

    @torch.no_grad()
    def hidden_outputs(self, model: nn.Sequential, x: np.ndarray,
                       training: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        model.train(training)
        pairs = hidden_outputs(model, torch.as_tensor(x, device=self.torch_device))
        return [(a.cpu().numpy(), h.cpu().numpy()) for a, h in pairs]

    def loss_and_grad_logits(self, head: str, prob_loss: str, logits: np.ndarray, y: np.ndarray,
                             clip_epsilon: float = 1e-7) -> tuple[float, np.ndarray]:
        z = torch.tensor(logits, dtype=torch.float32, device=self.torch_device, requires_grad=True)
        y = torch.as_tensor(y, dtype=torch.float32, device=self.torch_device)
        output = torch.softmax(z, dim=-1) if head == "probs" else z
        loss = make_loss(head, prob_loss, clip_epsilon)(output, y.argmax(-1), y)
        (grad,) = torch.autograd.grad(loss, z)
        return float(loss.detach()), grad.cpu().numpy()

    def loss_and_grads(self, spec: Spec, head: str, model: nn.Sequential, x: np.ndarray,
                       y: np.ndarray) -> tuple[float, Weights]:
        x, y = torch.as_tensor(x, device=self.torch_device), torch.as_tensor(y, device=self.torch_device)
        loss_fn = make_loss(head, spec.prob_loss, spec.clip_epsilon)
        loss, grads, _ = eval_loss_and_grads(model, loss_fn, x, y.argmax(-1), y)
        return float(loss), get_weights(model, list(grads))

    def make_trainer(self, spec: Spec, variant: Variant, data: Dataset, weights: Weights,
                     loss: GivenLoss | None = None) -> TorchTrainer:
        return TorchTrainer(spec, variant, data, weights, self.torch_device, loss)

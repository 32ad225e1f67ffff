"""The atlas' report: atlas.md (one grid per framework), atlas.png (the same grids as an image), findings.md
(every loss path, explained from the library source that produces it) and headline.md (the short summary).

A grid's row is a call, a head and from_logits; its columns are where the call ran (the Keras engine and the
execution; eager or graph elsewhere). A grid cell shows the loss path decided from the measured losses
(``experiments.atlas.paths``), ⚠ when the call emitted a warning on any input, a gradient mark from the
saturated input (``raw``), and the loss there:

  ∇NaN   the gradient with respect to the logits is not finite
  ∇0     the true-class gradient is exactly 0 on at least half of the wrong-class rows (or its median is 0)
  ∇≈0    its median is below 1e-3 of the exact loss' (vanishing, not zero)
  ∇×s    its median is s times the exact loss' (s outside [0.5, 2])

Once the training stage has run (DIR/runs.jsonl, ``experiments.atlas.training``), a grid cell also shows the
quick stage's outcome per input: ✓ trains, ⚠ stuck, ✗ diverged (or failed), with the mean test accuracy over
seeds (``✓2 ⚠1`` when the seeds disagree), outcomes as ``experiments.harness.report.classify`` decides them;
atlas.md adds the outcome counts per framework and the full spec's runs beside their logits baseline.

Every explanation in ``EXPLANATIONS`` names the file and function of the installed library (the versions in
each record) that make a framework take a path; a (framework, path) pair measured without an explanation is
listed under "Unexplained" in findings.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from common import stats
from common.results import RUNS_FILE, read_records, record_key
from experiments.atlas import inputs, paths, training
from experiments.harness.report import OUTCOMES, classify, machine_class_of

REPORT_FILES = ("atlas.md", "atlas.png", "findings.md", "headline.md")
ATLAS_FILE = "atlas.jsonl"
INPUTS_FILE = "probe_inputs.npz"
SATURATED, MODERATE = inputs.INPUT_NAMES
FRAMEWORK_TITLES = {"keras": "Keras", "torch": "PyTorch", "jax": "JAX + optax", "tensorflow": "TensorFlow (raw)"}
GROUP_LABELS = {"keras/tensorflow": "Keras 3 on TF", "keras/tf_keras": "tf_keras (Keras 2)",
                "keras/jax": "Keras 3 on JAX", "keras/torch": "Keras 3 on torch", "torch": "PyTorch",
                "jax": "JAX + optax", "tensorflow": "TensorFlow"}
KERAS_COLUMNS = ("keras/tensorflow eager", "keras/tensorflow graph", "keras/tf_keras eager", "keras/tf_keras graph",
                 "keras/jax eager", "keras/torch eager")
PATH_COLOURS = {
    "logits": "#1a9850", "recovered_logits": "#91cf60", "double_softmax": "#fdae61", "double_sigmoid": "#fee08b",
    "clipped": "#d73027", "clipped_eps": "#f46d43", "eps_added": "#fc8d59", "clamped": "#b2182b",
    "raw_log": "#542788", "no_log": "#8073ac", "other": "#bababa", "error": "#404040",
}

_K3_TF = "`keras/src/backend/tensorflow/nn.py`"
_TFK = "`tf_keras/src/backend.py`"
_LOSSES = "`keras/src/losses/losses.py`"
# Why a framework takes a path, from the installed sources (file and function).
EXPLANATIONS: dict[tuple[str, str], str] = {
    ("keras/tensorflow", "recovered_logits"):
        f"{_K3_TF} `_get_logits` replaces the output by its logits before any probability arithmetic: first "
        "the `_keras_logits` attribute, which `keras.activations.softmax` / `sigmoid` "
        "(`keras/src/activations/activations.py`) and this backend's `softmax` / `sigmoid` attach to their "
        "output, whichever activation it was (so `categorical_crossentropy` on a sigmoid output uses the "
        "sigmoid's logits, and `binary_crossentropy` on a softmax output computes a per-class sigmoid "
        "cross-entropy of the pre-softmax logits); else, for a symbolic tensor in a traced graph, the input of "
        "the producing op when its type is `Softmax` (categorical losses) or `Sigmoid` (binary). "
        "`categorical_crossentropy` / `sparse_categorical_crossentropy` then call "
        "`tf.nn.softmax_cross_entropy_with_logits` / `sparse_softmax_cross_entropy_with_logits`, "
        "`binary_crossentropy` calls `tf.nn.sigmoid_cross_entropy_with_logits`. With `from_logits=True` on such "
        "an output it warns and does the same; the warning names the op type the loss looks for, so "
        "`binary_crossentropy` on a softmax output says it was 'produced by a Sigmoid activation'. "
        f"`BinaryFocalCrossentropy` ({_LOSSES} `binary_focal_crossentropy`) reaches it through "
        "`ops.binary_crossentropy`; its focal factor still uses the probabilities it was given.",
    ("keras/tensorflow", "clipped"):
        f"{_K3_TF} `categorical_crossentropy` divides the output by its row sum and clips it to "
        "[1e-7, 1 - 1e-7] (`tf.clip_by_value`) before the log; `sparse_categorical_crossentropy` clips, takes "
        "the log and passes it to `sparse_softmax_cross_entropy_with_logits` (a renormalisation); "
        "`binary_crossentropy` clips. That happens when `_get_logits` finds neither `_keras_logits` nor (in a "
        "graph) a Softmax/Sigmoid op: a bare `tf.nn.softmax` output eagerly, raw logits with "
        "`from_logits=False`, a softmax output given to `binary_crossentropy` in a graph (the op is not a "
        f"Sigmoid). {_LOSSES} `categorical_focal_crossentropy` never asks for the logits: it applies "
        "`ops.softmax` itself when `from_logits=True`, then normalises and clips, on every engine; "
        "`kl_divergence` clips targets and predictions to [1e-7, 1].",
    ("keras/tensorflow", "double_softmax"):
        "`from_logits=True` on a probability tensor that carries no `_keras_logits` and is eager (the bare "
        f"`tf.nn.softmax`): {_K3_TF} `categorical_crossentropy` hands the probabilities to "
        f"`tf.nn.softmax_cross_entropy_with_logits`. {_LOSSES} `categorical_focal_crossentropy` with "
        "`from_logits=True` on probabilities applies `ops.softmax` to them (then clips, which a second softmax's "
        "outputs never reach).",
    ("keras/tensorflow", "double_sigmoid"):
        f"`binary_crossentropy(from_logits=True)` on a bare softmax output ({_K3_TF} `_get_logits` looks for a "
        f"Sigmoid op, finds a Softmax one, and uses the probabilities as logits). {_LOSSES} "
        "`binary_focal_crossentropy(from_logits=True)` applies `ops.sigmoid` to its input, and this backend's "
        "`sigmoid` attaches that input, the probabilities, as `_keras_logits`: the recovered 'logits' are the "
        "probabilities.",
    ("keras/tensorflow", "logits"):
        f"`from_logits=True` on the logits: {_K3_TF} `tf.nn.softmax_cross_entropy_with_logits`, "
        "`sparse_softmax_cross_entropy_with_logits`, `sigmoid_cross_entropy_with_logits`; "
        f"{_LOSSES} `binary_focal_crossentropy` applies `ops.sigmoid`, which attaches the logits, so its "
        "cross-entropy term is exact.",
    ("keras/tf_keras", "recovered_logits"):
        f"{_TFK} `_get_logits` is the same lookup as Keras 3's (the `_keras_logits` attribute that "
        "`backend.softmax` / `backend.sigmoid` attach, used by `tf_keras.activations.softmax` / `sigmoid`; "
        "else a `Softmax`/`Sigmoid` op behind a symbolic tensor), with the same warning for "
        "`from_logits=True`. `binary_focal_crossentropy` passes its input to `binary_crossentropy`, which "
        "recovers the logits; its focal factor uses the probabilities (or their sigmoid with "
        "`from_logits=True`).",
    ("keras/tf_keras", "clipped"):
        f"{_TFK} `categorical_crossentropy` normalises and clips to [1e-7, 1 - 1e-7]; "
        "`sparse_categorical_crossentropy` clips, logs and renormalises through the sparse softmax "
        "cross-entropy. `categorical_focal_crossentropy` calls `_get_logits` but then applies `tf.nn.softmax` "
        "to the logits it found and clips the result: clipped even when it found them (and it warns for "
        "`from_logits=True`), also behind a sigmoid output, whose logits it softmaxes. "
        "`tf_keras/src/losses.py` `kl_divergence` clips targets and predictions to [1e-7, 1].",
    ("keras/tf_keras", "clipped_eps"):
        f"{_TFK} `binary_crossentropy` clips to [1e-7, 1 - 1e-7] and then still adds 1e-7 inside each log: "
        "`log(p + eps)`, `log(1 - p + eps)` (Keras 3 dropped the second epsilon). In a traced graph the loss is "
        "smaller: TensorFlow's grappler constant folding (`ConstantPushDown`, "
        "`tensorflow/core/grappler/optimizers/constant_folding.h`) rewrites `(1 - p) + eps` as `(1 + eps) - p`, "
        "and 1 + 1e-7 rounds to 1.00000012 in float32 (switching the `constant_folding` optimizer off "
        "restores the eager value).",
    ("keras/tf_keras", "double_softmax"):
        f"`from_logits=True` on an eager bare `tf.nn.softmax` output: {_TFK} `categorical_crossentropy` and "
        "`categorical_focal_crossentropy` find no `_keras_logits` and no op, and softmax the probabilities.",
    ("keras/tf_keras", "double_sigmoid"):
        f"`binary_crossentropy(from_logits=True)` on a bare softmax output: {_TFK} `_get_logits` looks for a "
        "Sigmoid op and uses the probabilities as logits; `binary_focal_crossentropy` the same.",
    ("keras/tf_keras", "logits"): f"`from_logits=True` on the logits ({_TFK}, the `tf.nn` fused kernels).",
    ("keras/jax", "clipped"):
        "`keras/src/backend/jax/nn.py` `categorical_crossentropy` and `sparse_categorical_crossentropy` divide "
        "by the row sum and `jnp.clip` to [1e-7, 1 - 1e-7]; `binary_crossentropy` clips. This backend's "
        "`softmax` / `sigmoid` attach no logits and nothing here looks for `_keras_logits` (which "
        "`keras.activations.softmax` still tries to set), so every probability output is clipped, the post's "
        f"activation included. {_LOSSES} `binary_focal_crossentropy(from_logits=True)` applies `ops.sigmoid` and "
        "then the clipping `binary_crossentropy`, so even logits are clipped.",
    ("keras/jax", "double_softmax"):
        "`from_logits=True` on probabilities: `keras/src/backend/jax/nn.py` `categorical_crossentropy` takes "
        "`jax.nn.log_softmax` of them, with no check and no warning.",
    ("keras/jax", "double_sigmoid"):
        "`binary_crossentropy(from_logits=True)` on probabilities: `jax.nn.log_sigmoid` of them "
        "(`keras/src/backend/jax/nn.py` `binary_crossentropy`).",
    ("keras/jax", "logits"): "`from_logits=True` on logits: `jax.nn.log_softmax` / `log_sigmoid`.",
    ("keras/torch", "clipped"):
        "`keras/src/backend/torch/nn.py` `categorical_crossentropy` normalises and `torch.clip`s to "
        "[1e-7, 1 - 1e-7]; `sparse_categorical_crossentropy` the same, then `F.nll_loss`; `binary_crossentropy` "
        "clips, then calls `F.binary_cross_entropy` (whose -100 clamp never binds after the clip). No "
        "`_keras_logits` lookup, as on JAX.",
    ("keras/torch", "double_softmax"):
        "`from_logits=True` on probabilities: `keras/src/backend/torch/nn.py` `categorical_crossentropy` "
        "takes `log_softmax` of them (`sparse_categorical_crossentropy`: `F.cross_entropy`); no warning.",
    ("keras/torch", "double_sigmoid"):
        "`binary_crossentropy(from_logits=True)` on probabilities: `F.binary_cross_entropy_with_logits` of them.",
    ("keras/torch", "logits"): "`from_logits=True` on logits: `log_softmax`, `F.cross_entropy`, "
                               "`F.binary_cross_entropy_with_logits`.",
    ("torch", "logits"):
        "`torch/nn/functional.py` `cross_entropy` calls the C++ `torch._C._nn.cross_entropy_loss`: log-softmax "
        "and NLL for index targets, -sum(target * log_softmax) for probability targets, the target mixed with "
        "the uniform distribution under label smoothing (documented in `torch/nn/modules/loss.py` "
        "`CrossEntropyLoss`; the measured losses match that formula). `nll_loss` and `kl_div` on `log_softmax` "
        "outputs, and `binary_cross_entropy_with_logits` (log-sigmoid form), are exact on logits too.",
    ("torch", "double_softmax"):
        "`F.cross_entropy` / `nn.CrossEntropyLoss` take any float tensor as logits: given softmax (or sigmoid) "
        "outputs they softmax them again, with no check or warning in `torch/nn/functional.py` "
        "`cross_entropy`.",
    ("torch", "double_sigmoid"):
        "`F.binary_cross_entropy_with_logits` / `nn.BCEWithLogitsLoss` on probabilities: a sigmoid of them.",
    ("torch", "clamped"):
        "`F.binary_cross_entropy` / `nn.BCELoss` (`torch._C._nn.binary_cross_entropy`; the same formula in "
        "`torch/_decomp/decompositions.py` `binary_cross_entropy`) clamp each log at -100: "
        "(y - 1) max(log(1 - x), -100) - y max(log x, -100). `torch/nn/modules/loss.py` `BCELoss` documents the "
        "clamp. Its backward (`binary_cross_entropy_backward` in the same decompositions file) divides by "
        "max(x (1 - x), 1e-12).",
    ("torch", "no_log"):
        "`F.nll_loss` returns -input[t]: given the softmax itself (the log forgotten) it returns -p_t, in "
        "[-1, 0]. `F.kl_div(input, target)` computes target * (log target - input) and expects `input` to be "
        "log-probabilities: given probabilities it returns -sum(y p) as well.",
    ("torch", "raw_log"):
        "`torch.log` of a softmax output that underflowed to 0 is -inf: `F.nll_loss(torch.log(p))` returns inf, "
        "a hand-written -(y * log p).sum() and `F.kl_div(torch.log(p), y)` give NaN (0 * -inf).",
    ("torch", "error"):
        "`F.binary_cross_entropy` checks its input range and raises (`RuntimeError: all elements of input "
        "should be between 0 and 1`) on logits.",
    ("jax", "logits"):
        "`optax/losses/_classification.py`: `softmax_cross_entropy` (-sum(labels * log_softmax(logits))), "
        "`softmax_cross_entropy_with_integer_labels` (logsumexp - logit[label]), `safe_softmax_cross_entropy` "
        "(`weighted_logsoftmax`), `sigmoid_binary_cross_entropy` (log-sigmoid form), `sigmoid_focal_loss`, and "
        "`kl_divergence(log_predictions, targets)` on `log_softmax`: exact on logits.",
    ("jax", "double_softmax"):
        "optax's softmax cross-entropies take their first argument as logits: given probabilities they apply "
        "`jax.nn.log_softmax` to them. optax has no cross-entropy of probabilities.",
    ("jax", "double_sigmoid"):
        "`optax.sigmoid_binary_cross_entropy` / `sigmoid_focal_loss` on probabilities: log-sigmoid of them.",
    ("jax", "raw_log"):
        "`jnp.log` of an underflowed softmax is -inf. `optax.softmax_cross_entropy` then computes "
        "log_softmax of a row holding -inf and multiplies 0 * -inf: NaN, on correctly classified rows too; "
        "`softmax_cross_entropy_with_integer_labels` and `safe_softmax_cross_entropy` (whose "
        "`weighted_logsoftmax` sets 0 * log 0 = 0) return inf; `kl_divergence(jnp.log(p), y)` and the "
        "hand-written -sum(y * log p) give NaN, -log(p)[t] inf. XLA (jax.jit) rewrites none of them.",
    ("jax", "eps_added"): "The hand-written `jnp.log(p + 1e-7)`.",
    ("jax", "clipped"): "The hand-written `jnp.log(jnp.clip(p, 1e-7, 1.0))`.",
    ("jax", "no_log"):
        "`optax.kl_divergence(log_predictions, targets)` computes targets * (log targets - log_predictions): "
        "given probabilities instead of log-probabilities it returns -sum(y p).",
    ("jax", "other"):
        "-sum(y * out) is the cross-entropy only when the model ends in `log_softmax` (Flax's old MNIST "
        "example); on logits it is -z_t, not a cross-entropy at all.",
    ("tensorflow", "logits"):
        "`tensorflow/python/ops/nn_ops.py` `softmax_cross_entropy_with_logits_v2` / "
        "`sparse_softmax_cross_entropy_with_logits` (fused kernels), `nn_impl.py` "
        "`sigmoid_cross_entropy_with_logits` (max(x, 0) - x z + log1p(exp(-|x|))), and "
        "`tensorflow/python/ops/losses/losses_impl.py` `softmax_cross_entropy` (which calls the first): exact on "
        "logits, and on log-softmax outputs.",
    ("tensorflow", "double_softmax"):
        "The `tf.nn` softmax cross-entropies (and `tf.compat.v1.losses.softmax_cross_entropy`) take any tensor "
        "as logits: probabilities are softmaxed again, with no warning.",
    ("tensorflow", "double_sigmoid"): "`tf.nn.sigmoid_cross_entropy_with_logits` on probabilities.",
    ("tensorflow", "eps_added"):
        "`tensorflow/python/ops/losses/losses_impl.py` `log_loss`: -y log(p + eps) - (1 - y) log(1 - p + eps), "
        "eps = 1e-7, no clip, averaged over every element (`SUM_BY_NONZERO_WEIGHTS`). In a graph the value "
        "differs: grappler's constant folding (`ConstantPushDown`) turns (1 - p) + eps into (1 + eps) - p with "
        "1 + eps = 1.00000012 in float32.",
    ("tensorflow", "raw_log"): "The hand-written -sum(y * tf.math.log(p)): NaN once p underflows (0 * -inf).",
    ("tensorflow", "clipped"): "The hand-written `tf.math.log(tf.clip_by_value(p, 1e-7, 1.0))`.",
}


def group_of(record: dict[str, Any]) -> str:
    return f"{record['framework']}/{record['engine']}" if record["engine"] else record["framework"]


def column_of(record: dict[str, Any]) -> str:
    return f"{group_of(record)} {record['exec']}" if record["framework"] == "keras" else record["exec"]


def column_label(column: str) -> str:
    group, _, exec_ = column.rpartition(" ")
    return f"{GROUP_LABELS[group]} {exec_}" if group else exec_


def row_of(record: dict[str, Any]) -> tuple[str, str, Any]:
    return record["api"], record["head"], record["from_logits"]


def read(out_dir: Path) -> list[dict[str, Any]]:
    with open(out_dir / ATLAS_FILE, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def cells_of(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{cell id: {input: record}}`` in record order."""
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        cells.setdefault(record["cell"], {})[record["input"]] = record
    return cells


def warned(cell: dict[str, dict[str, Any]]) -> bool:
    return any(record["warnings"] for record in cell.values())


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    value = float(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def table_text(text: str) -> str:
    """``text`` inside a Markdown table cell: a cell id's ``|`` separators escaped."""
    return text.replace("|", "\\|")


def gradient_mark(record: dict[str, Any]) -> str:
    if record["error"] or record["grad_finite"] is None:
        return ""
    if not record["grad_finite"]:
        return "∇NaN"
    signal = record["grad_signal"]
    if signal is None:
        return ""
    if signal == 0 or record["grad_zero_share"] >= 0.5:
        return "∇0"
    if abs(signal) < 1e-3:
        return "∇≈0"
    return "" if 0.5 <= signal <= 2 else f"∇×{signal:.2g}"


def cell_text(cell: dict[str, dict[str, Any]], trained: Trained | None = None) -> str:
    record = cell[SATURATED]
    marks = " ".join(mark for mark in ("⚠" if warned(cell) else "", gradient_mark(record)) if mark)
    loss = "raised" if record["error"] else fmt(record["loss"])
    text = f"`{record['loss_path']}`{' ' + marks if marks else ''} · {loss}"
    return text + (f"<br>{trained.text(record)}" if trained else "")


# --- training outcomes ------------------------------------------------------------------------------------

OUTCOME_MARKS = {"trains": "✓", "stuck": "⚠", "diverged": "✗", "failed": "✗failed"}


@dataclasses.dataclass(frozen=True)
class Trained:
    """The training stage's records by cell: the quick stage's runs per input, and the others (the full stage's,
    and those of any other spec run in the directory)."""

    quick: dict[str, dict[str, list[dict[str, Any]]]]
    full: list[dict[str, Any]]

    @classmethod
    def of(cls, run_records: list[dict[str, Any]]) -> Trained | None:
        """From the records of DIR/runs.jsonl; None where the training stage has not run."""
        records = training.cell_records(run_records)
        if not records:
            return None
        quick: dict[str, dict[str, list[dict[str, Any]]]] = {}
        quick_runs = training.quick_records(records)
        for record in quick_runs:
            quick.setdefault(record["spec"]["loss_cell"], {}).setdefault(record["input_scale"], []).append(record)
        in_quick = {record_key(r) for r in quick_runs}
        return cls(quick, [r for r in records if record_key(r) not in in_quick])

    @property
    def quick_runs(self) -> list[dict[str, Any]]:
        """Every quick-stage record, cell by cell."""
        return [r for by_input in self.quick.values() for runs in by_input.values() for r in runs]

    def text(self, probe_record: dict[str, Any]) -> str:
        """``raw ✓ 0.912 · unit ⚠ 0.101``; why a cell did not train."""
        runs = self.quick.get(probe_record["cell"])
        if runs is None:
            return "cannot train" if probe_record["loss_path"] in training.UNTRAINABLE else "not trained"
        return " · ".join(f"{name} {outcome_text(runs[name])}" for name in inputs.INPUT_NAMES if name in runs)

    def outcome(self, cell: str, input_name: str) -> str | None:
        """The cell's quick outcome on an input: its seeds' most common (the worse one on a tie)."""
        runs = self.quick.get(cell, {}).get(input_name)
        if not runs:
            return None
        counts = Counter(classify(r) for r in runs)
        return max(OUTCOMES, key=lambda outcome: (counts[outcome], -OUTCOMES.index(outcome)))


def outcome_text(runs: list[dict[str, Any]]) -> str:
    """✓ / ⚠ / ✗ with the mean test accuracy over the runs (diverged and failed runs have none to show)."""
    counts = Counter(classify(r) for r in runs)
    accuracies = [r["test_accuracy"] for r in runs if classify(r) in ("trains", "stuck")]
    accuracy = f" {np.mean(accuracies):.3f}" if accuracies else ""
    if len(counts) == 1:
        return OUTCOME_MARKS[next(iter(counts))] + accuracy
    return " ".join(f"{OUTCOME_MARKS[o]}{counts[o]}" for o in reversed(OUTCOMES) if counts[o]) + accuracy


def training_overview(probe_records: list[dict[str, Any]], trained: Trained | None) -> str:
    """Per group: cells, cells trained, and per input how many cells' quick outcome is each outcome."""
    if trained is None:
        return "No training records."
    cells = cells_of(probe_records)
    lines = ["| framework | cells | trained | " + " | ".join(
                 f"{name}: {' / '.join(reversed(OUTCOMES))}" for name in inputs.INPUT_NAMES) + " |",
             "|---|---|---|" + "---|" * len(inputs.INPUT_NAMES)]
    for group, label in GROUP_LABELS.items():
        ids = [c for c, cell in cells.items() if group_of(next(iter(cell.values()))) == group]
        if not ids:
            continue
        per_input = []
        for name in inputs.INPUT_NAMES:
            counts = Counter(trained.outcome(c, name) for c in ids)
            per_input.append(" / ".join(str(counts[o]) for o in reversed(OUTCOMES)))
        lines.append(f"| {label} | {len(ids)} | {sum(c in trained.quick for c in ids)} | "
                     + " | ".join(per_input) + " |")
    return "\n".join(lines)

# --- grids ------------------------------------------------------------------------------------------------

def grid(records: list[dict[str, Any]], framework: str) -> tuple[list[tuple], list[str], dict]:
    """Rows, columns and ``{(row, column): cell}`` of one framework's grid."""
    chosen = [r for r in records if r["framework"] == framework]
    cells = cells_of(chosen)
    rows = list(dict.fromkeys(row_of(r) for r in chosen))
    present = set(column_of(r) for r in chosen)
    order = KERAS_COLUMNS if framework == "keras" else ("eager", "graph")
    columns = [c for c in order if c in present]
    table = {(row_of(cell[SATURATED]), column_of(cell[SATURATED])): cell for cell in cells.values()
             if SATURATED in cell}
    return rows, columns, table


def grid_markdown(records: list[dict[str, Any]], framework: str, trained: Trained | None = None) -> str:
    rows, columns, table = grid(records, framework)
    exact = {row_of(r): r["reference_loss"] for r in records if r["framework"] == framework and r["input"] == SATURATED}
    flagged = framework == "keras"  # only Keras calls have a from_logits flag
    keys = ["call", "head", *(["from_logits"] if flagged else []), "exact loss"]
    lines = ["| " + " | ".join(keys + [column_label(c) for c in columns]) + " |",
             "|" + "---|" * (len(keys) + len(columns))]
    for row in rows:
        api, head, from_logits = row
        values = [f"`{api}`", head, *([str(from_logits)] if flagged else []), fmt(exact[row])]
        values += [cell_text(table[row, c], trained) if (row, c) in table else "" for c in columns]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def records_markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| cell | input | path | loss | exact | grad finite | zero share | signal | warnings |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        said = "; ".join(r["warnings"])
        said = (said[:117] + "…") if len(said) > 120 else said
        if r["error"]:
            said = f"raised {r['error'][:100]}"
        lines.append(f"| {table_text(r['cell'])} | {r['input']} | {r['loss_path']} | {fmt(r['loss'])} | "
                     f"{fmt(r['reference_loss'])} | {r['grad_finite']} | {fmt(r['grad_zero_share'])} | "
                     f"{fmt(r['grad_signal'])} | {said.replace('|', '/')} |")
    return "\n".join(lines)


def input_description(out_dir: Path) -> str:
    """What the two inputs are, with the saturation figures of DIR/probe_inputs.npz."""
    logits, labels = inputs.load(out_dir / INPUTS_FILE)
    parts = []
    for name in inputs.INPUT_NAMES:
        p_true = paths.softmax32(logits[name])[np.arange(len(labels)), labels]
        parts.append(f"`{name}`: max |z| {np.abs(logits[name]).max():.1f}, true-class p below 1e-7 on "
                     f"{np.mean(p_true < 1e-7):.0%} of the rows, exactly 0 in float32 on {np.mean(p_true == 0):.0%}")
    return (f"{len(labels)} MNIST test images, the post's model at the canonical initial weights (eval mode), "
            "logits in float32: " + "; ".join(parts) + ".")


def atlas_markdown(records: list[dict[str, Any]], out_dir: Path, trained: Trained | None = None) -> str:
    versions = {}
    for r in records:
        versions.update(r["versions"])
    sections = [
        "# Cross-entropy atlas" + (": the probe and training stages" if trained else ": the probe stage"),
        "",
        f"Every cross-entropy call in the grid below was run on the same logits: {input_description(out_dir)}",
        "A cell is the loss path decided from the losses measured on both inputs (see findings.md), ⚠ when "
        "the call emitted a warning, a gradient mark on the saturated `raw` input (∇NaN: not finite; ∇0: the "
        "true-class gradient of the wrong-class rows is exactly 0 on at least half of them; ∇≈0: below 1e-3 "
        "of the exact loss' gradient; ∇×s: s times it) and the loss on `raw`; `exact loss` is the call's own "
        "formula on the logits in float64. `out` is the head's output, `y` one-hot targets, `t` labels.",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())) + ". "
        + provenance(records, trained),
        "",
        "![the grids](atlas.png)",
    ]
    if trained:
        sections += ["", "## Training", "", training_description(trained), "",
                     training_overview(records, trained), "", *training_findings(records, trained),
                     *full_findings(records, trained)]
    for framework, title in FRAMEWORK_TITLES.items():
        if any(r["framework"] == framework for r in records):
            sections += ["", f"## {title}", "", grid_markdown(records, framework, trained)]
    if trained and trained.full:
        sections += ["", "## The full stage", "", "Each run beside its group's logits cell (the first categorical "
                     "cell whose path is `logits`, same execution, input, seed and spec) where that ran too. One "
                     "seed per cell: a gap is one pair of runs, not an estimate with an interval (the quick stage's "
                     "three seeds show how far seeds spread).", "",
                     full_markdown(records, trained)]
    sections += ["", "## Every record", "", "<details><summary>one line per cell and input</summary>", "",
                 records_markdown(records), "", "</details>", ""]
    return "\n".join(sections)



def provenance(records: list[dict[str, Any]], trained: Trained | None) -> str:
    """Where the figures were made: the machine classes and commits the probe's (and training's) records name."""
    made = [r["env"] for r in records + (trained.quick_runs + trained.full if trained else [])]
    classes = sorted({env.get("machine_class") or "unrecorded" for env in made})
    commits = sorted({(env.get("git_commit") or "unrecorded")[:7] for env in made})
    return (f"Made on machine class {', '.join(f'`{c}`' for c in classes)} (`env.machine_class`), at commit "
            f"{', '.join(f'`{c}`' for c in commits)}.")


# --- training and headline --------------------------------------------------------------------------------------

def spec_text(spec: dict[str, Any]) -> str:
    return (f"{spec['epochs']} epoch{'s' if spec['epochs'] > 1 else ''} of the first {spec['train_size'] or 60000:,} "
            f"training and {spec['test_size'] or 10000:,} test images")


def training_description(trained: Trained) -> str:
    runs = trained.quick_runs
    seeds = sorted({r["seed"] for r in runs})
    return (f"The post's MLP trained with each cell (`experiments/atlas/training.py`): {spec_text(runs[0]['spec'])}, "
            f"seeds {', '.join(map(str, seeds))}, {len(runs)} runs. A grid cell's second line is its outcome per "
            "input: ✓ trains (test accuracy ≥ 0.3), ⚠ stuck (below it), ✗ diverged (the loss became NaN or "
            "inf), ✗failed (the run raised), with the mean test accuracy of the seeds that finished (counts when "
            "the seeds disagree). The counts below are cells by their seeds' most common outcome, best first; "
            "`cannot train`: the call raises.")


def full_runs(records: list[dict[str, Any]], trained: Trained) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The probe's cells by id, and the non-quick runs of those cells by input, atlas order and seed."""
    probed = {r["cell"]: r for r in records if r["input"] == SATURATED}
    order = {cell: i for i, cell in enumerate(probed)}
    runs = sorted((r for r in trained.full if r["spec"]["loss_cell"] in probed),
                  key=lambda r: (r["input_scale"], order[r["spec"]["loss_cell"]], r["seed"]))
    return probed, runs


def full_markdown(records: list[dict[str, Any]], trained: Trained) -> str:
    """The full spec's runs in atlas order, each beside its group's logits cell on the same input and execution."""
    probed, runs = full_runs(records, trained)
    header = ["cell", "spec", "input", "seed", "path", "outcome", "test accuracy", "last cost", "logits baseline",
              "behind it"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    crossed = 0
    for run in runs:
        cell = probed[run["spec"]["loss_cell"]]
        baseline = baseline_run(run, runs, probed)
        accuracy = run["test_accuracy"]
        behind = "—"
        if baseline is run:
            behind = "(the baseline)"
        elif baseline is not None and accuracy is not None and baseline["test_accuracy"] is not None:
            behind = f"{baseline['test_accuracy'] - accuracy:+.4f}"
            if machine_class_of(baseline) != machine_class_of(run):
                behind, crossed = f"{behind} ‡", crossed + 1
        costs = run["epoch_costs"] or [None]
        lines.append(f"| {table_text(cell['cell'])} | {spec_text(run['spec'])} | {run['input_scale']} | "
                     f"{run['seed']} | {cell['loss_path']} | "
                     f"{classify(run)} | {fmt(accuracy)} | {fmt(costs[-1])} | "
                     f"{fmt(baseline['test_accuracy']) if baseline else '—'} | {behind} |")
    if crossed:  # the same run on two machine classes can differ by more than rounding (experiments.reproduce)
        lines += ["", f"‡ the run and its baseline were made on different machine classes ({runs_text(crossed)}; "
                  f"the runs by class: {made_on(runs)}): such a gap also holds the machines' rounding "
                  "differences, which `python -m experiments.reproduce` measures run by run."]
    return "\n".join(lines)


def made_on(runs: list[dict[str, Any]]) -> str:
    """The machine classes of ``runs`` with their run counts, most runs first."""
    counts = Counter(machine_class_of(r) for r in runs).most_common()
    return ", ".join(f"`{name}` ({runs_text(n)})" for name, n in counts)


def runs_text(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def baseline_run(run: dict[str, Any], runs: list[dict[str, Any]], probed: dict[str, dict[str, Any]]
                 ) -> dict[str, Any] | None:
    """The run of ``run``'s logits baseline among ``runs`` (same input, seed and spec family): the first such cell
    in atlas order when ``runs`` are, as the full stage picks it (``training.full_selection``)."""
    cell = probed[run["spec"]["loss_cell"]]
    return next((b for b in runs if b["input_scale"] == run["input_scale"] and b["seed"] == run["seed"]
                 and training.family(b) == training.family(run)
                 and _is_baseline_of(probed[b["spec"]["loss_cell"]], cell)), None)


def _is_baseline_of(candidate: dict[str, Any], cell: dict[str, Any]) -> bool:
    """The logits baseline of a cell: a categorical cell of its group and execution whose path is ``logits``."""
    return (group_of(candidate) == group_of(cell) and candidate["exec"] == cell["exec"]
            and candidate["loss_path"] == "logits" and candidate["family"] == "categorical")


PATH_KINDS = {
    "exact (logits, recovered logits)": ("logits", "recovered_logits"),
    "softmax / sigmoid applied twice": ("double_softmax", "double_sigmoid"),
    "clipped, eps added or clamped": ("clipped", "clipped_eps", "eps_added", "clamped"),
    "raw log, no log, other": ("raw_log", "no_log", "other"),
    "raises": ("error",),
}


EXACT = PATH_KINDS["exact (logits, recovered logits)"]


def every_seed(trained: Trained, cell: str, name: str) -> str | None:
    """``all``, ``some`` or ``none``: of the cell's quick runs on input ``name``, how many train; None: no runs."""
    runs = trained.quick.get(cell, {}).get(name)
    if not runs:
        return None
    trains = sum(classify(r) == "trains" for r in runs)
    return "all" if trains == len(runs) else "some" if trains else "none"


def training_findings(records: list[dict[str, Any]], trained: Trained) -> list[str]:
    """Two measured sentences of the quick stage: on raw pixels, which kinds of path train; on unit pixels, how far
    a softmax applied twice trails its group's logits cell (seed-paired test accuracy, ``common.stats``)."""
    cells = {r["cell"]: r for r in records if r["input"] == SATURATED}
    raw = {cell: every_seed(trained, cell, SATURATED) for cell in cells}
    exact = [c for c, r in cells.items() if r["loss_path"] in EXACT and raw[c]]
    other = [c for c, r in cells.items() if r["loss_path"] not in EXACT and raw[c]]
    trains_anyway = sorted({f"`{cells[c]['api']}` on {cells[c]['head']} ({cells[c]['loss_path']})"
                            for c in other if raw[c] == "all"})
    lines = [f"- Raw pixels: {sum(raw[c] == 'all' for c in exact)} of the {len(exact)} trained cells with an exact "
             f"path train in every seed; of the {len(other)} others, {sum(raw[c] == 'all' for c in other)} train in "
             f"every seed ({'; '.join(trains_anyway) or 'none'}), {sum(raw[c] == 'some' for c in other)} in some, "
             f"{sum(raw[c] == 'none' for c in other)} in none."]
    twice, baselines = [], []
    for cell in cells.values():
        if cell["loss_path"] != "double_softmax":
            continue
        base = next((b for b in cells.values() if _is_baseline_of(b, cell)), None)
        mine = trained.quick.get(cell["cell"], {}).get(MODERATE, [])
        theirs = {r["seed"]: r for r in trained.quick.get(base["cell"], {}).get(MODERATE, [])} if base else {}
        for run in mine:
            paired = theirs.get(run["seed"])
            if paired and run["test_accuracy"] is not None and paired["test_accuracy"] is not None:
                twice.append(run["test_accuracy"])
                baselines.append(paired["test_accuracy"])
    gap = stats.paired_difference(baselines, twice)
    if gap is not None and gap.ci95 is not None:
        count = sum(every_seed(trained, c["cell"], MODERATE) == "all" for c in cells.values()
                    if c["loss_path"] == "double_softmax")
        total = sum(c["loss_path"] == "double_softmax" for c in cells.values())
        lines.append(f"- Unit pixels: {count} of the {total} softmax-applied-twice cells train in every seed, "
                     f"{gap.estimate:.3f} behind their group's logits cell in test accuracy (paired t 95% CI "
                     f"[{gap.ci95[0]:.3f}, {gap.ci95[1]:.3f}] over {gap.n_a} cell-and-seed pairs; "
                     f"{stats.summarize(twice).mean:.3f} against {stats.summarize(baselines).mean:.3f}).")
    return lines


def full_findings(records: list[dict[str, Any]], trained: Trained) -> list[str]:
    """Two measured sentences of the full stage: which raw-pixel cells that trained in the quick stage still train,
    and how far each softmax-applied-twice cell on unit pixels ends behind its group's logits cell."""
    probed, runs = full_runs(records, trained)
    runs = [r for r in runs if training.is_full(r)]
    if not runs:
        return []
    selection = training.full_selection(records, trained.quick_runs)
    planned = sum(map(len, selection.values()))
    seeds = ", ".join(map(str, sorted({r["seed"] for r in runs})))
    several = len({machine_class_of(r) for r in runs}) > 1
    lines = [f"- Full stage ({spec_text(runs[0]['spec'])}, seed {seeds}, one run per cell, {len(runs)} of the "
             f"{planned} planned runs{', made on ' + made_on(runs) if several else ''}):"]
    raw = [r for r in runs if r["input_scale"] == SATURATED]
    if raw:
        trains = [r for r in raw if classify(r) == "trains"]
        others = [f"{cell_name(probed[r['spec']['loss_cell']])}: {classify(r)} {fmt(r['test_accuracy'])}"
                  for r in raw if classify(r) != "trains"]
        span = (f" (test accuracy {min(r['test_accuracy'] for r in trains):.3f}-"
                f"{max(r['test_accuracy'] for r in trains):.3f})" if trains else "")
        lines.append(f"  - raw pixels: {len(trains)} of the {len(raw)} cells run train{span}; "
                     f"the others: {'; '.join(others) or 'none'}.")
    twice, baselines = [], []
    for run in runs:
        if run["input_scale"] == MODERATE and probed[run["spec"]["loss_cell"]]["loss_path"] == "double_softmax":
            base = baseline_run(run, runs, probed)
            if base and run["test_accuracy"] is not None and base["test_accuracy"] is not None:
                twice.append(run)
                baselines.append(base["test_accuracy"])
    gap = stats.paired_difference(baselines, [r["test_accuracy"] for r in twice])
    if gap is not None and gap.ci95 is not None:
        lines.append(f"  - unit pixels: {sum(classify(r) == 'trains' for r in twice)} of the {len(twice)} "
                     f"softmax-applied-twice cells run beside their logits cell train, ending {gap.estimate:.3f} "
                     f"behind it in test accuracy (t 95% CI [{gap.ci95[0]:.3f}, {gap.ci95[1]:.3f}] over the "
                     f"{gap.n_a} cells: one seed each, and a group's cells share its one baseline run, so the "
                     "interval is the spread between cells, not between seeds; "
                     f"{np.mean([r['test_accuracy'] for r in twice]):.3f} against {np.mean(baselines):.3f}).")
    return lines


def cell_name(record: dict[str, Any]) -> str:
    """``Keras 3 on JAX `keras.losses.X()` on sigmoid (from_logits=True), eager``."""
    flag = "" if record["from_logits"] is None else f" (from_logits={record['from_logits']})"
    run = f", {record['exec']}" if record["exec"] else ""
    return f"{GROUP_LABELS[group_of(record)]} `{record['api']}` on {record['head']}{flag}{run}"


def headline_markdown(records: list[dict[str, Any]], trained: Trained | None = None) -> str:
    """The README-facing summary: cells per framework by kind of path (and how many train), then the Keras rows
    whose engines disagree, those whose training outcome differs most first."""
    cells = {r["cell"]: r for r in records if r["input"] == SATURATED}
    header = ["framework", "cells", *PATH_KINDS]
    if trained:
        header += [f"train on {name} pixels (quick)" for name in inputs.INPUT_NAMES]
    lines = ["# The cross-entropy atlas in brief", "",
             f"{len(cells)} cells (a call, the head it is given, from_logits, eager or traced), each probed on the "
             "post's saturated logits and on moderate ones (atlas.md, findings.md)"
             + (", and trained (quick stage)." if trained else "."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group, label in GROUP_LABELS.items():
        mine = [c for c in cells.values() if group_of(c) == group]
        if not mine:
            continue
        counts = [sum(c["loss_path"] in kinds for c in mine) for kinds in PATH_KINDS.values()]
        row = [label, str(len(mine)), *map(str, counts)]
        if trained:
            for name in inputs.INPUT_NAMES:
                outcomes = [trained.outcome(c["cell"], name) for c in mine]
                row.append(f"{outcomes.count('trains')} of {sum(o is not None for o in outcomes)}")
        lines.append("| " + " | ".join(row) + " |")
    if trained:
        lines += ["", *training_findings(records, trained), *full_findings(records, trained)]
    lines += ["", "## Where one Keras call differs by engine", ""] + surprises(records, trained) + [""]
    return "\n".join(lines)


def surprises(records: list[dict[str, Any]], trained: Trained | None, count: int = 5) -> list[str]:
    """The Keras rows whose path differs between engines: with training, the widest spread of quick raw-pixel
    accuracy first; per path, the engines that take it (with their quick raw-pixel outcome) and its source."""
    rows, columns, table = grid(records, "keras")
    found = []
    for row in rows:
        present = [(c, table[row, c]) for c in columns if (row, c) in table]
        if len({cell[SATURATED]["loss_path"] for _, cell in present}) < 2:
            continue
        accuracies = [_mean_accuracy(trained, cell[SATURATED]["cell"]) for _, cell in present] if trained else []
        known = [a for a in accuracies if a is not None]
        found.append((-(max(known) - min(known)) if len(known) > 1 else 0.0, row, present))
    found.sort(key=lambda item: item[0])
    lines = []
    for _, (api, head, from_logits), present in found[:count]:
        by_path: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for column, cell in present:
            by_path.setdefault(cell[SATURATED]["loss_path"], []).append((column, cell[SATURATED]))
        parts = []
        for path, where in by_path.items():
            source = _source(group_of(where[0][1]), path)
            engines = ", ".join(column_label(column) + (f" {_raw_outcome(trained, record)}" if trained else "")
                                for column, record in where)
            parts.append(f"`{path}` on {engines}" + (f" ({source})" if source else ""))
        lines.append(f"- `{api}` on {head} (from_logits={from_logits}): " + "; ".join(parts))
    return lines or ["Every Keras row takes one path on every engine."]


def _raw_outcome(trained: Trained, record: dict[str, Any]) -> str:
    runs = trained.quick.get(record["cell"], {}).get(SATURATED)
    return outcome_text(runs) if runs else "(not trained)"


def _mean_accuracy(trained: Trained, cell: str) -> float | None:
    runs = trained.quick.get(cell, {}).get(SATURATED, [])
    accuracies = [r["test_accuracy"] for r in runs if r["test_accuracy"] is not None]
    return float(np.mean(accuracies)) if accuracies else None


def _source(group: str, path: str) -> str | None:
    """The first library file an explanation names."""
    names = [part for part in EXPLANATIONS.get((group, path), "").split("`")[1::2] if part.endswith(".py")]
    return names[0] if names else None

# --- image --------------------------------------------------------------------------------------------------

def write_image(records: list[dict[str, Any]], path: Path, trained: Trained | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    frameworks = [f for f in FRAMEWORK_TITLES if any(r["framework"] == f for r in records)]
    grids = {f: grid(records, f) for f in frameworks}
    heights = [len(grids[f][0]) + 2 for f in frameworks]
    row_inches = 0.36 if trained else 0.24  # a second line of text per square when the cells were trained
    figure, axes = plt.subplots(len(frameworks), 1, figsize=(15, row_inches * sum(heights) + 1.5),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for axis, framework in zip(axes[:, 0], frameworks):
        rows, columns, table = grids[framework]
        axis.set_xlim(0, len(columns))
        axis.set_ylim(len(rows), 0)
        for i, row in enumerate(rows):
            for j, column in enumerate(columns):
                cell = table.get((row, column))
                if cell is None:
                    continue
                record = cell[SATURATED]
                axis.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=PATH_COLOURS[record["loss_path"]],
                                             edgecolor="white"))
                marks = " ".join(m for m in ("⚠" if warned(cell) else "", gradient_mark(record)) if m)
                text = f"{record['loss_path']} {marks}".strip()
                if trained:  # the quick outcomes, without accuracies: the square has room for marks only
                    text += "\n" + " ".join(f"{name} {OUTCOME_MARKS.get(trained.outcome(record['cell'], name), '·')}"
                                            for name in inputs.INPUT_NAMES)
                axis.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=6.5)
        axis.set_xticks([j + 0.5 for j in range(len(columns))], [column_label(c) for c in columns], fontsize=7)
        axis.xaxis.tick_top()
        labels = [f"{api} · {head}" + ("" if fl is None else f" · from_logits={fl}") for api, head, fl in rows]
        axis.set_yticks([i + 0.5 for i in range(len(rows))], labels, fontsize=6.5)
        axis.set_title(FRAMEWORK_TITLES[framework], fontsize=10, loc="left")
        axis.tick_params(length=0)
    used = sorted({r["loss_path"] for r in records}, key=list(PATH_COLOURS).index)
    figure.legend(handles=[Patch(facecolor=PATH_COLOURS[p], label=p) for p in used], loc="lower center",
                  ncol=len(used), fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- findings ---------------------------------------------------------------------------------------------

def findings_markdown(records: list[dict[str, Any]], out_dir: Path, trained: Trained | None = None) -> str:
    cells = cells_of(records)
    by_path: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for cell in cells.values():
        record = cell[SATURATED]
        by_path[record["loss_path"]][group_of(record)].append(cell)
    lines = ["# Cross-entropy atlas: findings", "",
             f"Inputs: {input_description(out_dir)} The path of a call is decided by comparing the loss it "
             "returned on both inputs with float64 references of every path computed from the same logits "
             "(`experiments/atlas/paths.py`); on the moderate input most paths coincide, so the saturated one "
             "decides. Every explanation names the library file and function that make the call take its path.",
             ""]
    unexplained = []
    for path in (*paths.PREFERENCE, "other", "error"):
        if path not in by_path:
            continue
        count = sum(len(v) for v in by_path[path].values())
        lines += [f"## `{path}` ({cells_count(count)})", "", f"{paths.LOSS_PATHS[path]}.", ""]
        for group, group_cells in by_path[path].items():
            explanation = EXPLANATIONS.get((group, path))
            if explanation is None:
                unexplained.append((group, path))
                explanation = "**no explanation written for this pair yet**"
            lines += [f"- **{GROUP_LABELS[group]}** ({cells_count(len(group_cells))}): {explanation}",
                      "  " + example(group_cells)]
        lines.append("")
    lines += disagreement_section(records, trained) + warning_section(cells)
    if unexplained:
        lines += ["## Unexplained", ""] + [f"- {GROUP_LABELS[g]}: `{p}`" for g, p in unexplained] + [""]
    return "\n".join(lines)


def cells_count(count: int) -> str:
    return f"{count} cell{'' if count == 1 else 's'}"


def example(group_cells: list[dict[str, dict[str, Any]]]) -> str:
    """The cells of one framework on one path, compactly, with the loss range on both inputs."""
    names = [f"`{c[SATURATED]['api']}` on {c[SATURATED]['head']}"
             + ("" if c[SATURATED]["from_logits"] is None else f" (from_logits={c[SATURATED]['from_logits']})")
             + f" {c[SATURATED]['exec']}" for c in group_cells]
    shown = "; ".join(names[:6]) + (f"; and {len(names) - 6} more" if len(names) > 6 else "")
    losses = {name: sorted({float(c[name]["loss"]) for c in group_cells if name in c and not c[name]["error"]},
                           key=lambda v: (math.isnan(v), v))
              for name in inputs.INPUT_NAMES}
    shown_losses = {name: list(dict.fromkeys(fmt(v) for v in values)) for name, values in losses.items()}
    figures = "; ".join(f"{name}: loss {', '.join(values[:4])}" + (" …" if len(values) > 4 else "")
                        for name, values in shown_losses.items() if values)
    return f"Cells: {shown}. {figures + '.' if figures else ''}"


def disagreement_section(records: list[dict[str, Any]], trained: Trained | None = None) -> list[str]:
    """Keras rows whose path differs between engine columns."""
    rows, columns, table = grid(records, "keras")
    lines = ["## Where the Keras engines disagree", "",
             "| call | head | from_logits | " + " | ".join(column_label(c) for c in columns) + " |",
             "|" + "---|" * (3 + len(columns))]
    found = 0
    for row in rows:
        found_paths = {table[row, c][SATURATED]["loss_path"] for c in columns if (row, c) in table}
        if len(found_paths) > 1:
            found += 1
            api, head, fl = row
            lines.append(f"| `{api}` | {head} | {fl} | " + " | ".join(
                cell_text(table[row, c], trained) if (row, c) in table else "" for c in columns) + " |")
    return (lines if found else lines[:2] + ["Every Keras row takes one path on every engine."]) + [""]


def warning_section(cells: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    said: Counter = Counter()
    where: dict[str, str] = {}
    for cell_name, cell in cells.items():
        for text in {text for record in cell.values() for text in record["warnings"]}:
            said[text] += 1
            where.setdefault(text, cell_name)
    lines = ["## Warnings", ""]
    if not said:
        return lines + ["No call emitted a warning or a log line.", ""]
    for text, count in said.most_common():
        lines.append(f"- {cells_count(count)}, e.g. {where[text]}: {text}")
    return lines + [""]


def write_reports(out_dir: str | Path) -> list[dict[str, Any]]:
    """Write atlas.md, atlas.png, findings.md and headline.md from DIR/atlas.jsonl (and the training stage's
    DIR/runs.jsonl where it has run); return the probe records."""
    out_dir = Path(out_dir)
    records = read(out_dir)
    trained = Trained.of(read_records(out_dir / RUNS_FILE))
    (out_dir / "atlas.md").write_text(atlas_markdown(records, out_dir, trained), encoding="utf-8")
    write_image(records, out_dir / "atlas.png", trained)
    (out_dir / "findings.md").write_text(findings_markdown(records, out_dir, trained), encoding="utf-8")
    (out_dir / "headline.md").write_text(headline_markdown(records, trained), encoding="utf-8")
    return records

"""The mechanism report: which softmax form, under which execution, lets Keras' probability loss find logits.

Rows are a Keras engine and the form of the output softmax; columns are the three ways the same step runs
(``fit``, the post's eager ``GradientTape`` loop, the same loop step under ``tf.function``). A cell is the
test accuracy with its outcome and last epoch cost; ``findings.md`` states, cell by cell, which computation
the loss ran (measured on a saturated probe, ``loss_path``) and why, and does the stuck-state arithmetic of
``common.stuck`` for every stuck run and for the post's own printed figures.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from common import stuck
from common.diagnostics import LOSS_PATHS
from experiments.harness.report import MARKS, STUCK_ACCURACY, Cell, Table, build_table, environment_lines, spec_summary
from common.results import RUNS_FILE, read_records
from common.variants import VARIANTS

COLUMNS = ("fit", "loop eager", "loop compiled")
ENGINE_LABELS = {"tensorflow": "Keras 3 on TF", "tf_keras": "tf_keras (Keras 2)", "jax": "Keras 3 on JAX",
                 "torch": "Keras 3 on torch"}
SOFTMAX_LABELS = {"activation": "Dense(10, activation='softmax') — the post",
                  "layer": "Dense(10) + keras.layers.Softmax()",
                  "op": "Dense(10) + bare softmax op (tf.nn.softmax)"}
POST_LOOP = VARIANTS["loop_probs"].post

# Why each measured loss path happened: (loss path, does the output carry `_keras_logits`, traced graph?).
# Keras 3 `keras/src/backend/tensorflow/nn.py` and tf_keras `tf_keras/src/backend.py`, `_get_logits`: first
# the `_keras_logits` attribute, which Keras' softmax (the activation, `keras.layers.Softmax`, `ops.softmax` on
# TF) attaches to its output; else, for a symbolic (non-eager) tensor whose op is `Softmax`, that op's input;
# else the probabilities, normalised and clipped to [eps, 1 - eps].
WHY = {
    ("recovered_logits", True): "the output carries its logits (`_keras_logits`, attached by Keras' softmax), "
                                "and `_get_logits` takes them first, eagerly or in a graph",
    ("recovered_logits", False): "a bare `tf.nn.softmax` output carries no `_keras_logits`, but in a traced graph "
                                 "`_get_logits` sees that it came from a `Softmax` op and takes that op's input",
    ("clipped_probs", False): "the output carries no `_keras_logits` and, eagerly, has no op to look into, so "
                              "Keras clips p to [1e-7, 1 - 1e-7]: a saturated row costs -ln(1e-7) = 16.118 with "
                              "an exactly zero gradient",
    ("clipped_probs", True): "this engine's loss clips p to [1e-7, 1 - 1e-7] whatever the softmax carries: a "
                             "saturated row costs -ln(1e-7) = 16.118 with an exactly zero gradient",
}


def column_of(record: dict[str, Any]) -> str:
    return "fit" if record["mode"] == "fit" else f"loop {record['loop_exec']}"


def row_of(record: dict[str, Any]) -> str:
    return f"{ENGINE_LABELS.get(record['engine'], record['engine'])} · {SOFTMAX_LABELS[record['softmax']]}"


def build(records: list[dict[str, Any]]) -> Table:
    """The mechanism table of the newest spec family among the probs-head records."""
    probs = [r for r in records if r["head"] == "probs" and r["prob_loss"] == "native" and r["softmax"]]
    return build_table(probs, row_of=row_of, column_of=column_of, columns=COLUMNS, row_order=row_order)


def row_order(label: str) -> tuple[int, int]:
    """Engines as listed, and within one the post's softmax first."""
    engine, softmax = label.split(" · ", 1)
    return list(ENGINE_LABELS.values()).index(engine), list(SOFTMAX_LABELS.values()).index(softmax)


def cell_text(cell: Cell) -> str:
    accs = cell.accuracies
    if not accs:
        return f"—{MARKS[cell.outcome]}"
    last_costs = [r["epoch_costs"][-1] for r in cell.records if r["epoch_costs"] and r["epoch_costs"][-1] is not None]
    cost = f", cost {statistics.mean(last_costs):.3f}" if last_costs else ""
    n = f", n={len(cell.records)}" if len(cell.records) > 1 else ""
    return f"{statistics.mean(accs):.4f}{MARKS[cell.outcome]}{cost}{n}"


def table_markdown(table: Table) -> str:
    lines = ["| engine · output softmax | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    for label, cells in table.rows.items():
        lines.append(f"| {label} | " + " | ".join(cell_text(cells[c]) if c in cells else "—" for c in table.columns)
                     + " |")
    post = VARIANTS["fit_probs"].post.test_accuracy
    lines.append(f"| post (TF ≤ 2.3, Keras 2, 2020) · Dense(10, activation='softmax') | {post:.4f} | "
                 f"{POST_LOOP.test_accuracy:.4f}{MARKS['stuck']}, cost {POST_LOOP.epoch_costs[-1]:.3f} | — |")
    return "\n".join(lines)


def findings_markdown(table: Table) -> str:
    lines = [f"# Mechanism findings\n\nSpec: {spec_summary(table.spec)}; probs head, Keras' native "
             "`categorical_crossentropy`. Loss paths are measured, not read from sources: each run evaluates its "
             "loss on a saturated probe (softmax([0, 200]) for true class 0) the way the run computes it.\n"]
    for label, cells in table.rows.items():
        lines.append(f"## {label}\n")
        for column in table.columns:
            if column in cells:
                lines.append(_cell_finding(column, cells[column]))
        lines.append("")
    lines += post_decomposition(table.records)
    lines.append("## Environment\n")
    lines.extend(environment_lines(table))
    return "\n".join(lines) + "\n"


def _cell_finding(column: str, cell: Cell) -> str:
    first = cell.records[0]
    accs = cell.accuracies
    accuracy = f"{statistics.mean(accs):.4f}" if accs else "n/a"
    text = f"- **{column}**: {cell.outcome}, test accuracy {accuracy} (n={len(cell.records)})."
    path = first["loss_path"]
    if path:
        text += f" Loss path: {LOSS_PATHS[path]}"
        why = WHY.get((path, first["softmax"] != "op"))
        text += f": {why}." if why else "."
    if first["status"] == "failed":
        text += f" Error: {first['error']}."
    arithmetic = stuck.describe(cell.records, STUCK_ACCURACY)
    return text + (f" {arithmetic}" if arithmetic else "")


def post_decomposition(records: list[dict[str, Any]]) -> list[str]:
    """The post's printed loop costs and accuracy, each fitted by the classes a stuck model would lock in."""
    full = next((r for r in records if r["label_shares"] and r["spec"]["train_size"] is None
                 and r["spec"]["test_size"] is None), None)
    lines = ["## The post's stuck loop, decomposed\n"]
    if full is None:
        return lines + ["Needs the full split's class shares: run the full spec (no --train-size/--test-size).\n"]
    shares, eps = full["label_shares"], full["spec"]["clip_epsilon"]
    lines.append(f"Class shares of the full MNIST split (from the data file): train "
                 f"{_shares(shares['train'])}; test {_shares(shares['test'])}. A stuck model that gets classes S "
                 f"right costs -ln(eps) x (1 - train share of S) = {stuck.clip_cost(eps):.3f} x (1 - share) in "
                 "training and scores the test share of S.\n")
    lines.append("| epoch | post's cost | best class set (≤ 2 classes) | its cost | residual |")
    lines.append("|---|---|---|---|---|")
    for epoch, (cost, fit) in enumerate(zip(POST_LOOP.epoch_costs,
                                            stuck.decompose_costs(POST_LOOP.epoch_costs, shares["train"], eps)), 1):
        lines.append(f"| {epoch} | {cost:.5f} | {_digits(fit.classes)} | {fit.value:.3f} | {fit.residual:.3f} |")
    accuracy_fits = stuck.decompose_accuracy(POST_LOOP.test_accuracy, shares["test"])
    best = accuracy_fits[0]
    cost_of_best = stuck.predicted_cost(shares["train"], best.classes, eps)
    lines.append(f"\nThe post's test accuracy {POST_LOOP.test_accuracy:.4f}: closest class sets "
                 + "; ".join(f"{_digits(f.classes)} ({f.value:.4f}, residual {f.residual:.4f})" for f in accuracy_fits)
                 + f". Locking in {_digits(best.classes)} would cost {cost_of_best:.3f} against the post's final "
                 f"{POST_LOOP.epoch_costs[-1]:.3f} (its training cost runs with dropout on, its accuracy without).\n")
    return lines


def _shares(values: list[float]) -> str:
    return ", ".join(f"{k}: {v:.4f}" for k, v in enumerate(values))


def _digits(classes: tuple[int, ...]) -> str:
    return "digit " + " + ".join(map(str, classes)) if len(classes) == 1 else "digits " + " + ".join(map(str, classes))


def plot(table: Table, path: Path) -> None:
    """A grid of the cells coloured by test accuracy, each annotated with accuracy and last cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(table.rows)
    grid = np.full((len(labels), len(table.columns)), math.nan)
    for i, label in enumerate(labels):
        for j, column in enumerate(table.columns):
            cell = table.rows[label].get(column)
            if cell and cell.accuracies:
                grid[i, j] = statistics.mean(cell.accuracies)
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(labels) + 1.8))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i, label in enumerate(labels):
        for j, column in enumerate(table.columns):
            cell = table.rows[label].get(column)
            if cell:
                ax.text(j, i, cell_text(cell).replace(", ", "\n", 1), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(table.columns)), table.columns)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.colorbar(image, ax=ax, label="test accuracy")
    ax.set_title(f"Where Keras' probability loss finds the logits\n{spec_summary(table.spec)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out_dir: str | Path) -> Table:
    """Write mechanism.md, mechanism.png and findings.md into ``out_dir`` from its runs.jsonl."""
    out_dir = Path(out_dir)
    table = build(read_records(out_dir / RUNS_FILE))
    intro = f"Test accuracy (last epoch cost), {spec_summary(table.spec)}.\n\n"
    (out_dir / "mechanism.md").write_text(intro + table_markdown(table) + "\n\n"
                                          + "\n".join(environment_lines(table)) + "\n")
    (out_dir / "findings.md").write_text(findings_markdown(table))
    plot(table, out_dir / "mechanism.png")
    return table

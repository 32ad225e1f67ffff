"""The cross-framework report, built from ``runs.jsonl`` alone: table (Markdown, CSV), plots, findings.

Rows are backend[/engine][/probability-loss flavour]; columns are the four variants; a cell is the test
accuracy over seeds (mean ± std, n) with the run outcome. Outcomes (``classify``):
  trains   — finished with test accuracy >= 0.3
  stuck    — finished, but test accuracy < 0.3 (chance is 0.1; the post's stuck loop had 0.2092)
  diverged — the loss became NaN/inf (status ``diverged``)
  failed   — the run raised (status ``failed``)
The post's four figures form the reference row.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from common.diagnostics import LOSS_PATHS
from common.results import read_records
from common.spec import Spec
from common.variants import VARIANT_NAMES, VARIANTS

STUCK_ACCURACY = 0.3
MARKS = {"trains": "", "stuck": " ⚠ stuck", "diverged": " ✗ diverged", "failed": " ✗ failed"}
POST_OUTCOME = {"fit_probs": "trains", "loop_probs": "stuck", "loop_logits": "trains", "fit_logits": "trains"}
POST_ROW = "post (TF 2.x / Keras 2, 2020)"


def classify(record: dict[str, Any]) -> str:
    """trains / stuck / diverged / failed (see module docstring)."""
    if record["status"] in ("diverged", "failed"):
        return record["status"]
    return "stuck" if (record["test_accuracy"] or 0.0) < STUCK_ACCURACY else "trains"


def row_label(record: dict[str, Any], flavours: set[str]) -> str:
    label = record["backend"] + (f"/{record['engine']}" if record["engine"] else "")
    return label + (f"/{record['prob_loss']}" if len(flavours) > 1 and record["prob_loss"] else "")


@dataclasses.dataclass
class Cell:
    records: list[dict[str, Any]]

    @property
    def accuracies(self) -> list[float]:
        return [r["test_accuracy"] for r in self.records if r["test_accuracy"] is not None]

    @property
    def outcome(self) -> str:
        """The worst outcome among the seeds (failed > diverged > stuck > trains)."""
        order = ["failed", "diverged", "stuck", "trains"]
        return min((classify(r) for r in self.records), key=order.index)

    def text(self) -> str:
        accs = self.accuracies
        if not accs:
            return f"—{MARKS[self.outcome]}"
        spread = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
        return f"{statistics.mean(accs):.4f}{spread} (n={len(self.records)}){MARKS[self.outcome]}"


@dataclasses.dataclass
class Table:
    """Cells by row label and variant, for one spec family."""

    spec: Spec
    rows: dict[str, dict[str, Cell]]
    records: list[dict[str, Any]]


def spec_family(spec: Spec) -> str:
    return spec.replace(seed=0, prob_loss="native").hash()


def family(record: dict[str, Any]) -> str:
    """Records comparable in one table share a spec up to seed and probability-loss flavour."""
    return spec_family(Spec.from_dict(record["spec"]))


def build_table(records: list[dict[str, Any]], spec: Spec | None = None) -> Table:
    """The table of ``spec``'s family, by default the newest family in ``records`` (others are left out)."""
    if not records:
        raise ValueError("no runs to report: the results file has no complete record")
    wanted = spec_family(spec) if spec is not None else family(records[-1])
    chosen = [r for r in records if family(r) == wanted]
    if not chosen:
        raise ValueError(f"no runs of spec family {wanted[:8]} in the results file")
    latest = {}
    for r in chosen:  # a re-run of the same run (e.g. after a failure) replaces the earlier record
        latest[(r["backend"], r["engine"], r["variant"], r["prob_loss"], r["seed"])] = r
    chosen = list(latest.values())
    flavours = {r["prob_loss"] for r in chosen if r["prob_loss"]}
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in chosen:
        if r["prob_loss"] is None:  # a logits run belongs to every flavour row of its backend
            for flavour in sorted(flavours) or [None]:
                rows[row_label({**r, "prob_loss": flavour}, flavours)][r["variant"]].append(r)
        else:
            rows[row_label(r, flavours)][r["variant"]].append(r)
    cells = {label: {v: Cell(rs) for v, rs in by_variant.items()} for label, by_variant in rows.items()}
    spec = Spec.from_dict(chosen[-1]["spec"]).replace(seed=Spec().seed)
    return Table(spec, dict(sorted(cells.items())), chosen)


def spec_summary(spec: Spec) -> str:
    changed = {k: v for k, v in spec.to_dict().items() if getattr(Spec(), k) != v and k not in ("prob_loss",)}
    described = ", ".join(f"{k}={v}" for k, v in changed.items())
    return f"the post's spec{' except ' + described if described else ''} (spec family {spec.hash()[:8]})"


def table_markdown(table: Table) -> str:
    header = "| backend | " + " | ".join(VARIANT_NAMES) + " |"
    lines = [header, "|---" * (len(VARIANT_NAMES) + 1) + "|"]
    for label, cells in table.rows.items():
        lines.append(f"| {label} | " + " | ".join(cells[v].text() if v in cells else "—" for v in VARIANT_NAMES) + " |")
    post = " | ".join(f"{VARIANTS[v].post.test_accuracy:.4f}{MARKS[POST_OUTCOME[v]]}" for v in VARIANT_NAMES)
    lines.append(f"| {POST_ROW} | {post} |")
    return "\n".join(lines)


def table_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "variant", "outcome", "n", "accuracy_mean", "accuracy_std", "loss_path"])
    for label, cells in table.rows.items():
        for variant in VARIANT_NAMES:
            if variant in cells:
                cell = cells[variant]
                accs = cell.accuracies
                writer.writerow([label, variant, cell.outcome, len(cell.records),
                                 f"{statistics.mean(accs):.6f}" if accs else "",
                                 f"{statistics.stdev(accs):.6f}" if len(accs) > 1 else "",
                                 cell.records[0]["loss_path"] or ""])
    for variant in VARIANT_NAMES:
        writer.writerow([POST_ROW, variant, POST_OUTCOME[variant], 1, VARIANTS[variant].post.test_accuracy, "", ""])
    return out.getvalue()


def environment_lines(table: Table) -> list[str]:
    """Machines, versions and dates of the runs in the table, one line per distinct environment."""
    seen = {}
    for r in table.records:
        env = r["env"]
        frameworks = ", ".join(f"{k} {v}" for k, v in sorted(env.get("frameworks", {}).items()))
        row = r["backend"] + (f"/{r['engine']}" if r["engine"] else "")
        key = f"{row}: {frameworks}; device {r['device']} ({env.get('device_name')}); CPU {env.get('cpu')} " \
              f"x{env.get('cpu_count')}; Python {env.get('python')}, numpy {env.get('numpy')}; " \
              f"commit {env.get('git_commit')}"
        seen.setdefault(key, []).append(r["finished_at"])
    return [f"- {key}; finished {min(dates)[:10]}" for key, dates in seen.items()]


def findings_markdown(table: Table) -> str:
    lines = [f"# Findings\n\nSpec: {spec_summary(table.spec)}.\n",
             "For every cell: the outcome, which computation the loss took, diagnostics on a fixed probe (the "
             "first 1000 training rows, dropout off) before training and after the last epoch (NaN: the model "
             "diverged), and the post's figure.\n"]
    for label, cells in table.rows.items():
        lines.append(f"## {label}\n")
        for variant in VARIANT_NAMES:
            if variant in cells:
                lines.append(_finding(variant, cells[variant]))
        lines.append("")
    lines.append("## Environment\n")
    lines.extend(environment_lines(table))
    return "\n".join(lines) + "\n"


def _finding(variant: str, cell: Cell) -> str:
    first = cell.records[0]
    path = first["loss_path"]
    accs = cell.accuracies
    accuracy = f"{statistics.mean(accs):.4f}" if accs else "n/a"
    post = VARIANTS[variant].post.test_accuracy
    text = f"- **{variant}**: {cell.outcome}, test accuracy {accuracy} (post {post:.4f}, {POST_OUTCOME[variant]})."
    if path:
        text += f" Loss path: {LOSS_PATHS[path]}."
    if first["diagnostics"]:
        start, last = first["diagnostics"][0], first["diagnostics"][-1]
        text += (f" Probe, at the start → after epoch {last['epoch']}: rows at p_true ≤ 1e-7 "
                 f"{_percent(start['saturated_share'])} → {_percent(last['saturated_share'])}, gradient norm "
                 f"{_figure(start['grad_norm'])} → {_figure(last['grad_norm'])}, max |logit| "
                 f"{_figure(start['max_abs_logit'])} → {_figure(last['max_abs_logit'])}.")
    if first["status"] == "diverged":
        text += f" First non-finite loss at step {first['first_nonfinite_step']}."
    if first["status"] == "failed":
        text += f" Error: {first['error']}."
    return text + " " + _explanation(variant, cell.outcome, path)


def _explanation(variant: str, outcome: str, path: str | None) -> str:
    same = outcome == POST_OUTCOME[variant]
    verdict = "As in the post" if same else "Unlike the post"
    if outcome == "failed":
        return "The run did not complete; see the error."
    if path == "logits":
        return f"{verdict}: a logit cross-entropy is stable on raw pixels."
    if path == "recovered_logits":
        return (f"{verdict}: Keras finds the logits kept on the softmax output (`_keras_logits`) and computes the "
                "cross-entropy from them, so the probability loss is as stable as the logit one.")
    if path == "clipped_probs":
        return (f"{verdict}: the probabilities are clipped to [1e-7, 1-1e-7] before the log; saturated rows "
                "contribute -ln(1e-7) = 16.1 each with an exactly zero gradient, so training stalls"
                + (" (the post's own mechanism)." if outcome == "stuck" else "; here few rows stay saturated."))
    if path == "log_probs":
        return (f"{verdict}: the raw log of a softmax probability that underflowed to 0 is -inf, and its gradient "
                "NaN; nothing rewrites it" + (", so training diverges." if outcome == "diverged" else "."))
    return f"{verdict}."


def _percent(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.0%}"


def _figure(value: float | None) -> str:
    return "NaN" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def plot_curves(table: Table, path: Path) -> None:
    """Per-epoch cost of each variant, one panel per row, log scale, the post's printed costs overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    labels = list(table.rows)
    columns = min(3, len(labels))
    rows = math.ceil(len(labels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False, sharey=True)
    colours = dict(zip(VARIANT_NAMES, ("tab:red", "tab:orange", "tab:blue", "tab:green")))
    for ax, label in zip(axes.flat, labels):
        diverged = []  # (epoch, colour): drawn at the panel's top once its scale is known
        for variant, cell in table.rows[label].items():
            for r in cell.records:
                costs = [c if c is not None else math.nan for c in r["epoch_costs"]]
                epochs = range(1, len(costs) + 1)
                ax.plot(epochs, costs, marker="o", ms=3, color=colours[variant], alpha=0.8)
                if r["status"] == "diverged":
                    diverged.append((len(costs), colours[variant]))
        for variant in ("loop_probs", "loop_logits"):
            post = VARIANTS[variant].post.epoch_costs
            ax.plot(range(1, len(post) + 1), post, ls="--", color=colours[variant], alpha=0.5)
        ax.set_yscale("log")
        for epoch, colour in diverged:
            ax.plot([epoch], [ax.get_ylim()[1]], marker="x", ms=10, mew=2, color=colour, clip_on=False)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    axes[0][0].set_ylabel("mean training cost per epoch")
    handles = [Line2D([], [], color=c, marker="o", ms=3, label=v) for v, c in colours.items()]
    handles += [Line2D([], [], color=colours[v], ls="--", alpha=0.5, label=f"post's {v}") for v in ("loop_probs", "loop_logits")]
    handles.append(Line2D([], [], color="k", marker="x", ls="", mew=2, label="diverged (NaN) at this epoch"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"Training cost, {spec_summary(table.spec)}", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(table: Table, path: Path) -> None:
    """Test accuracy per row and variant (mean, std over seeds), the post's figures as a reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(table.rows)
    width = 0.8 / len(VARIANT_NAMES)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels) + 2), 4))
    colours = ("tab:red", "tab:orange", "tab:blue", "tab:green")
    for j, (variant, colour) in enumerate(zip(VARIANT_NAMES, colours)):
        xs, means, errs = [], [], []
        for i, label in enumerate(labels):
            cell = table.rows[label].get(variant)
            accs = cell.accuracies if cell else []
            xs.append(i + (j - 1.5) * width)
            means.append(statistics.mean(accs) if accs else 0.0)
            errs.append(statistics.stdev(accs) if len(accs) > 1 else 0.0)
        ax.bar(xs, means, width, yerr=errs, color=colour, label=variant)
        for x, label in zip(xs, labels):
            cell = table.rows[label].get(variant)
            if cell and cell.outcome in ("diverged", "failed"):
                ax.text(x, 0.02, "✗", color=colour, ha="center", fontsize=12, fontweight="bold")
        ax.axhline(VARIANTS[variant].post.test_accuracy, color=colour, ls=":", lw=1)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Test accuracy (mean ± std over seeds; ✗ diverged or failed); dotted: the post's figures\n"
                 f"{spec_summary(table.spec)}", fontsize=8)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out_dir: str | Path, spec: Spec | None = None) -> Table:
    """Write table.md, table.csv, curves.png, accuracy.png and findings.md into ``out_dir``."""
    out_dir = Path(out_dir)
    table = build_table(read_records(out_dir / "runs.jsonl"), spec)
    intro = f"Test accuracy, {spec_summary(table.spec)}.\n\n"
    (out_dir / "table.md").write_text(intro + table_markdown(table) + "\n\n" + "\n".join(environment_lines(table)) + "\n")
    (out_dir / "table.csv").write_text(table_csv(table))
    (out_dir / "findings.md").write_text(findings_markdown(table))
    plot_curves(table, out_dir / "curves.png")
    plot_accuracy(table, out_dir / "accuracy.png")
    return table

"""The cross-framework report, built from ``runs.jsonl`` alone: table (Markdown, CSV), plots, findings.

Rows are backend[/engine][/probability-loss flavour]; columns are the four variants; a cell is the test
accuracy over seeds (mean, and from n = 2 its 95% CI; common/stats.py) with the run outcome, and from n = 2
how many seeds had which outcome. Outcomes (``classify``):
  trains   — finished with test accuracy >= 0.3
  stuck    — finished, but test accuracy < 0.3 (chance is 0.1; the post's stuck loop had 0.2092)
  diverged — the loss became NaN/inf (status ``diverged``)
  failed   — the run raised (status ``failed``)
The post's four figures form the reference row.

Figures reproduce bit for bit only on a machine that computes the same way (``common.machine``), so the report
never mixes machines silently: a cell whose runs come from more than one machine class says so, with the count
per class, and a difference paired by seed pairs only runs of the same machine class.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from common.diagnostics import LOSS_PATHS
from backends import loop_execs
from common.results import RUNS_FILE, backend_label, read_records, record_key
from common import stuck
from common.stats import CI_NAME, PAIRED_NAME, Summary, paired_difference, summarize, welch_difference
from common.spec import Spec
from common.variants import VARIANT_NAMES, VARIANTS

STUCK_ACCURACY = 0.3
OUTCOMES = ("failed", "diverged", "stuck", "trains")  # worst first
MARKS = {"trains": "", "stuck": " ⚠ stuck", "diverged": " ✗ diverged", "failed": " ✗ failed"}
POST_OUTCOME = {"fit_probs": "trains", "loop_probs": "stuck", "loop_logits": "trains", "fit_logits": "trains"}
POST_ROW = "post (TF 2.x / Keras 2, 2020)"
#: Each variant's colour in every plot.
VARIANT_COLOURS = dict(zip(VARIANT_NAMES, ("tab:red", "tab:orange", "tab:blue", "tab:green")))
# The controls (experiments.compare --controls): what the post's failure needs, by row qualifier.
CONTROLS = {
    "unit inputs": "Control: pixels divided by 255, so the logits start small and no softmax probability "
                   "underflows at the start; if the probability loss trains here, the failure at the start needs "
                   "the saturated logits of raw pixels. The logits grow as the model grows confident, so an "
                   "unprotected log of a probability can still fail later in a long run.",
    "clipped loss": "Control: the Keras-2 eager formula spelled out, -sum(y log(clip(p, 1e-7, 1 - 1e-7))), in "
                    "every framework; clipped rows cost -ln(1e-7) = 16.118 with zero gradient.",
}


def classify(record: dict[str, Any]) -> str:
    """trains / stuck / diverged / failed (see module docstring)."""
    if record["status"] in ("diverged", "failed"):
        return record["status"]
    return "stuck" if (record["test_accuracy"] or 0.0) < STUCK_ACCURACY else "trains"


def machine_class_of(record: dict[str, Any]) -> str:
    """The record's machine-class key; a record made before the key existed names the CPU it recorded."""
    env = record.get("env") or {}
    return env.get("machine_class") or f"unrecorded ({env.get('cpu') or 'unknown CPU'})"


def row_label(record: dict[str, Any]) -> str:
    """backend[/engine], then what sets the run apart from the post's cell: a control (unit inputs, the
    clipped loss), a softmax form other than the activation, a loop execution other than the row's default."""
    label = backend_label(record["backend"], record["engine"])
    qualifiers = []
    if record["input_scale"] != "raw":
        qualifiers.append(f"{record['input_scale']} inputs")
    if record["prob_loss"] == "clipped":
        qualifiers.append("clipped loss")
    if record["softmax"] not in (None, "activation"):
        qualifiers.append(f"softmax {record['softmax']}")
    if record["loop_exec"] not in (None, loop_execs(record["backend"], record["engine"])[0]):
        qualifiers.append(f"{record['loop_exec']} loop")
    return " · ".join([label, *qualifiers])


@dataclasses.dataclass
class Cell:
    records: list[dict[str, Any]]

    @property
    def accuracies(self) -> list[float]:
        return [r["test_accuracy"] for r in self.records if r["test_accuracy"] is not None]

    @property
    def accuracy_by_seed(self) -> dict[int, tuple[float, str]]:
        """seed -> (test accuracy, machine class of the run)."""
        return {r["seed"]: (r["test_accuracy"], machine_class_of(r)) for r in self.records
                if r["test_accuracy"] is not None}

    @property
    def machine_counts(self) -> dict[str, int]:
        """Runs per machine class, most first."""
        return dict(Counter(machine_class_of(r) for r in self.records).most_common())

    def machines_text(self) -> str:
        """Empty when every run shares one machine class, else ``mixed machines: 3 on A, 2 on B``."""
        counts = self.machine_counts
        if len(counts) < 2:
            return ""
        return "mixed machines: " + ", ".join(f"{n} on {name}" for name, n in counts.items())

    @property
    def outcome(self) -> str:
        """The worst outcome among the seeds (failed > diverged > stuck > trains)."""
        return min((classify(r) for r in self.records), key=OUTCOMES.index)

    @property
    def stats(self) -> Summary | None:
        """Test accuracy over the seeds that have one: n, mean, std, 95% CI, min, max (None: no accuracy)."""
        return summarize(self.accuracies)

    @property
    def outcome_counts(self) -> dict[str, int]:
        """Seeds per outcome, worst outcome first, outcomes no seed had left out."""
        outcomes = [classify(r) for r in self.records]
        return {o: outcomes.count(o) for o in OUTCOMES if o in outcomes}

    def counts_text(self) -> str:
        """How many seeds did what, the cell's outcome first: ``3 of 5 seeds stuck, 2 diverged``."""
        counts = self.outcome_counts
        first, *others = sorted(counts, key=lambda o: (o != self.outcome, OUTCOMES.index(o)))
        verb = {"trains": "trained"}.get
        parts = [f"{counts[first]} of {len(self.records)} seeds {verb(first, first)}"]
        return ", ".join(parts + [f"{counts[o]} {verb(o, o)}" for o in others])

    def text(self) -> str:
        """``mean [95% CI] (n=N)`` and the outcome mark, with the seeds' outcomes when they are not all trains."""
        stats, n = self.stats, len(self.records)
        mark = MARKS[self.outcome] + (f" ({self.counts_text()})" if n > 1 and self.outcome != "trains" else "")
        if stats is None:
            return f"— (n={n}){mark}" if n > 1 else f"—{mark}"
        interval = f" [{stats.ci95[0]:.4f}, {stats.ci95[1]:.4f}]" if stats.ci95 else ""
        machines = f" ({self.machines_text()})" if self.machines_text() else ""
        return f"{stats.mean:.4f}{interval} (n={n}){mark}{machines}"


@dataclasses.dataclass
class Table:
    """Cells by row label and column (a variant, or a mechanism cell), for one spec family."""

    spec: Spec
    rows: dict[str, dict[str, Cell]]
    records: list[dict[str, Any]]
    columns: tuple[str, ...] = VARIANT_NAMES


# What a table's rows may differ in; everything else of the spec is shared by its records.
TABLE_AXES = {"seed": 0, "prob_loss": "native", "input_scale": "raw", "softmax": "activation", "loop_exec": None}


def spec_family(spec: Spec) -> str:
    return spec.replace(**TABLE_AXES).hash()


def family(record: dict[str, Any]) -> str:
    """Records comparable in one table share a spec up to seed, controls, softmax form and loop execution."""
    return spec_family(Spec.from_dict(record["spec"]))


def build_table(records: list[dict[str, Any]], spec: Spec | None = None, row_of=row_label,
                column_of=lambda record: record["variant"], columns: tuple[str, ...] = VARIANT_NAMES,
                row_order=None) -> Table:
    """The table of ``spec``'s family, by default the newest family in ``records`` (others are left out):
    rows by ``row_of(record)`` sorted by ``row_order(label)``, columns by ``column_of(record)`` in the order
    of ``columns``."""
    if not records:
        raise ValueError("no runs to report: the results file has no complete record")
    wanted = spec_family(spec) if spec is not None else family(records[-1])
    chosen = [r for r in records if family(r) == wanted]
    if not chosen:
        raise ValueError(f"no runs of spec family {wanted[:8]} in the results file")
    # A re-run of the same run (e.g. after a failure) replaces the earlier record.
    chosen = list({record_key(r): r for r in chosen}.values())
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in chosen:
        rows[row_of(r)][column_of(r)].append(r)
    cells = {label: {column: Cell(rs) for column, rs in by_column.items()} for label, by_column in rows.items()}
    spec = Spec.from_dict(chosen[-1]["spec"]).replace(**TABLE_AXES).replace(seed=Spec().seed)
    order = row_order or _row_order
    return Table(spec, dict(sorted(cells.items(), key=lambda item: order(item[0]))), chosen, columns)


def _row_order(label: str) -> tuple:
    """The post's cells first within a backend, then its variations."""
    base, *qualifiers = label.split(" · ")
    return base, len(qualifiers), qualifiers


def spec_summary(spec: Spec) -> str:
    changed = {k: v for k, v in spec.to_dict().items() if getattr(Spec(), k) != v and k not in TABLE_AXES}
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


def statistics_markdown(table: Table) -> str:
    """Every cell with n >= 2: n, mean, std, 95% CI, min–max of the test accuracy, and the seeds' outcomes."""
    lines = [f"| row | variant | n | mean | std | {CI_NAME} | min–max | seeds |", "|---" * 8 + "|"]
    for label, cells in table.rows.items():
        for variant in table.columns:
            cell = cells.get(variant)
            stats = cell.stats if cell else None
            if cell is None or len(cell.records) < 2:
                continue
            figures = (f"{stats.mean:.4f} | {stats.std:.4f} | [{stats.ci95[0]:.4f}, {stats.ci95[1]:.4f}] | "
                       f"{stats.min:.4f}–{stats.max:.4f}" if stats and stats.ci95 else "— | — | — | —")
            machines = f"; {cell.machines_text()}" if cell.machines_text() else ""
            lines.append(f"| {label} | {variant} | {len(cell.records)} | {figures} | {cell.counts_text()}{machines} |")
    return "\n".join(lines) if len(lines) > 2 else ""


# (column, column) pairs compared within a row, and the columns compared between rows.
FIT_VS_LOOP = (("fit_probs", "loop_probs"), ("fit_logits", "loop_logits"))
BETWEEN_ROWS = ("loop_logits", "fit_logits")


def differences_markdown(table: Table) -> str:
    """Differences of mean test accuracy with 95% CIs (paired by seed where both cells ran the same seeds,
    else Welch), where both cells have n >= 2: fit − loop within each row, and between the post's rows (no
    control or variation) on the logits variants."""
    lines = []
    for label, cells in table.rows.items():
        for fit, loop in FIT_VS_LOOP:
            if fit in cells and loop in cells:
                lines.append(_difference(label, fit, loop, cells[fit], cells[loop]))
    plain = [label for label in table.rows if " · " not in label]
    for variant in BETWEEN_ROWS:
        for i, a in enumerate(plain):
            for b in plain[i + 1:]:
                if variant in table.rows[a] and variant in table.rows[b]:
                    lines.append(_difference(variant, a, b, table.rows[a][variant], table.rows[b][variant]))
    return "\n".join(line for line in lines if line)


def _difference(context: str, name_a: str, name_b: str, a: Cell, b: Cell) -> str:
    """One finding line on mean(a) − mean(b); empty without an interval (n < 2 on a side).

    The same seed gives both cells the same initial weights and batch order, so cells over the same seeds are
    compared seed by seed (paired t) — but only where both runs of a seed share a machine class, since two
    machines that compute differently are not the same experiment twice. Cells over different seeds, or whose
    seeds ran on different machine classes, fall back to Welch's comparison of means, and the line says why."""
    by_seed_a, by_seed_b = a.accuracy_by_seed, b.accuracy_by_seed
    note = ""
    if by_seed_a.keys() == by_seed_b.keys():
        seeds = sorted(by_seed_a)
        if all(by_seed_a[s][1] == by_seed_b[s][1] for s in seeds):
            diff = paired_difference([by_seed_a[s][0] for s in seeds], [by_seed_b[s][0] for s in seeds])
        else:
            note = "; cannot pair by seed: some seeds ran on different machine classes"
            diff = welch_difference(a.accuracies, b.accuracies)
    else:
        diff = welch_difference(a.accuracies, b.accuracies)
    if diff is None or diff.ci95 is None:
        return ""
    low, high = diff.ci95
    n = f"n={diff.n_a}" if diff.n_a == diff.n_b else f"n={diff.n_a} and {diff.n_b}"
    if diff.distinguishable:
        verdict = f"{name_a if diff.estimate > 0 else name_b} is higher (the interval excludes 0)"
    elif low == high:
        verdict = "identical on every seed"
    else:
        verdict = f"indistinguishable at {n}"
    if math.isinf(diff.df):
        df = "the same on every seed" if diff.method == PAIRED_NAME else "no spread on either side"
    else:
        df = f"df {diff.df:.1f}"
    return (f"- {context}: {name_a} − {name_b} = {diff.estimate:+.4f}, {diff.method} [{low:+.4f}, {high:+.4f}] "
            f"({df}; {n}{note}): {verdict}.")


def table_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    # ci95_*: the 95% CI of the mean accuracy (Student t, n - 1 df); n_<outcome>: seeds with that outcome.
    writer.writerow(["row", "variant", "outcome", "n", "accuracy_mean", "accuracy_std", "ci95_low", "ci95_high",
                     "accuracy_min", "accuracy_max", *(f"n_{o}" for o in OUTCOMES), "loss_path"])
    for label, cells in table.rows.items():
        for variant in VARIANT_NAMES:
            if variant in cells:
                cell = cells[variant]
                stats, counts = cell.stats, cell.outcome_counts
                figures = ([stats.mean, stats.std, *(stats.ci95 or (None, None)), stats.min, stats.max]
                           if stats else [None] * 6)
                writer.writerow([label, variant, cell.outcome, len(cell.records),
                                 *("" if x is None else f"{x:.6f}" for x in figures),
                                 *(counts.get(o, 0) for o in OUTCOMES), cell.records[0]["loss_path"] or ""])
    for variant in VARIANT_NAMES:
        post = VARIANTS[variant].post.test_accuracy
        writer.writerow([POST_ROW, variant, POST_OUTCOME[variant], 1, post, "", "", "", post, post,
                         *(int(o == POST_OUTCOME[variant]) for o in OUTCOMES), ""])
    return out.getvalue()


def environment_lines(table: Table) -> list[str]:
    """Machines, versions and dates of the runs in the table, one line per distinct environment."""
    seen = {}
    for r in table.records:
        env = r["env"]
        frameworks = ", ".join(f"{k} {v}" for k, v in sorted(env.get("frameworks", {}).items()))
        row = backend_label(r["backend"], r["engine"])
        key = f"{row}: {frameworks}; device {r['device']} ({env.get('device_name')}); machine class " \
              f"{machine_class_of(r)}; CPU {env.get('cpu')} x{env.get('cpu_count')}; Python {env.get('python')}, numpy {env.get('numpy')}; " \
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
        lines += [f"{CONTROLS[name]}\n" for name in CONTROLS if name in label]
        if "softmax " in label and not label.startswith("keras"):
            lines.append("PyTorch and JAX have one softmax (`torch.softmax`, `jax.nn.softmax`) whatever the form it "
                         "is written in: this row runs the same computation as the post's row above it.\n")
        for variant in VARIANT_NAMES:
            if variant in cells:
                lines.append(_finding(variant, cells[variant]))
        lines.append("")
    differences = differences_markdown(table)
    if differences:
        lines += ["## Differences over seeds\n",
                  "Differences of mean test accuracy, fit − loop within a row and between backends on the logits "
                  "variants, with a 95% confidence interval: paired t over the per-seed differences where both "
                  "cells ran the same seeds (a seed gives both the same initial weights and batches), else Welch t; "
                  "an interval that contains 0 means the two cells cannot be told apart with these seeds.\n",
                  differences, ""]
    lines.append("## Environment\n")
    lines.extend(environment_lines(table))
    return "\n".join(lines) + "\n"


def _finding(variant: str, cell: Cell) -> str:
    first = cell.records[0]
    path = first["loss_path"]
    stats = cell.stats
    accuracy = f"{stats.mean:.4f}" if stats else "n/a"
    if stats and stats.ci95:
        accuracy += (f" (mean of {stats.n} seeds, std {stats.std:.4f}, {CI_NAME} [{stats.ci95[0]:.4f}, "
                     f"{stats.ci95[1]:.4f}], range {stats.min:.4f}–{stats.max:.4f})")
    post = VARIANTS[variant].post.test_accuracy
    text = f"- **{variant}**: {cell.outcome}, test accuracy {accuracy} (post {post:.4f}, {POST_OUTCOME[variant]})."
    if len(cell.records) > 1:
        text += f" Seeds: {cell.counts_text()}; figures below are of seed {first['seed']}."
    if path:
        text += f" Loss path: {LOSS_PATHS[path]}."
    if first["diagnostics"]:
        start, last = first["diagnostics"][0], first["diagnostics"][-1]
        text += (f" Probe, at the start → after epoch {last['epoch']}: rows at p_true ≤ 1e-7 "
                 f"{_percent(start['saturated_share'])} → {_percent(last['saturated_share'])}, gradient norm "
                 f"{_figure(start['grad_norm'])} → {_figure(last['grad_norm'])}, max |logit| "
                 f"{_figure(start['max_abs_logit'])} → {_figure(last['max_abs_logit'])}.")
    if first["status"] == "diverged":
        text += f" First non-finite loss at step {first['first_nonfinite_step']}." + _late_divergence(first)
    if first["status"] == "failed":
        text += f" Error: {first['error']}."
    arithmetic = stuck.describe(cell.records, STUCK_ACCURACY)
    return text + " " + _explanation(variant, cell.outcome, path) + (f" {arithmetic}" if arithmetic else "")


def _late_divergence(record: dict[str, Any]) -> str:
    """For a run that trained for whole epochs before its loss became non-finite: how far it got, and how
    large its logits had grown (the probe after its last finite epoch)."""
    costs = [c for c in record["epoch_costs"] if c is not None]
    grown = [d["max_abs_logit"] for d in record["diagnostics"] if d["max_abs_logit"] is not None]
    if not costs or len(grown) < 2:
        return ""
    return (f" It trained first (epoch costs {', '.join(f'{c:.3f}' for c in costs)}) while the probe's max |logit| "
            f"grew from {_figure(grown[0])} to {_figure(grown[-1])}: the same failure, late, once a confident "
            "model's probability of some row underflows.")


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


def panel_grid(count: int, panel_height: float):
    """(figure, axes) of ``count`` panels, three to a row, 5 wide and ``panel_height`` high, sharing the y axis;
    the grid's panels beyond ``count`` are hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, panel_height * rows), squeeze=False, sharey=True)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, axes


def plot_curves(table: Table, path: Path) -> None:
    """Per-epoch cost of each variant, one panel per row, log scale, the post's printed costs overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    labels = list(table.rows)
    fig, axes = panel_grid(len(labels), panel_height=3.6)
    colours = VARIANT_COLOURS
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
    """Test accuracy per row and variant (mean over seeds, 95% CI error bars), the post's figures as a reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(table.rows)
    width = 0.8 / len(VARIANT_NAMES)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels) + 2), 4))
    for j, (variant, colour) in enumerate(VARIANT_COLOURS.items()):
        xs, means, errs = [], [], []
        for i, label in enumerate(labels):
            cell = table.rows[label].get(variant)
            stats = cell.stats if cell else None
            xs.append(i + (j - 1.5) * width)
            means.append(stats.mean if stats else 0.0)
            errs.append(stats.ci95[1] - stats.mean if stats and stats.ci95 else 0.0)
        ax.bar(xs, means, width, yerr=errs, color=colour, label=variant)
        for x, label in zip(xs, labels):
            cell = table.rows[label].get(variant)
            if cell and cell.outcome in ("diverged", "failed"):
                ax.text(x, 0.02, "✗", color=colour, ha="center", fontsize=12, fontweight="bold")
        ax.axhline(VARIANTS[variant].post.test_accuracy, color=colour, ls=":", lw=1)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Test accuracy (mean over seeds, bars: {CI_NAME}; ✗ diverged or failed); dotted: the post's "
                 "figures\n"
                 f"{spec_summary(table.spec)}", fontsize=8)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out_dir: str | Path, spec: Spec | None = None) -> Table:
    """Write table.md, table.csv, curves.png, accuracy.png and findings.md into ``out_dir``."""
    out_dir = Path(out_dir)
    table = build_table(read_records(out_dir / RUNS_FILE), spec)
    intro = f"Test accuracy, {spec_summary(table.spec)}.\n\n"
    parts = [intro + table_markdown(table)]
    if statistics_markdown(table):  # some cell has n >= 2
        parts += [f"[low, high]: the {CI_NAME} of the mean test accuracy over seeds. Cell by cell:",
                  statistics_markdown(table), differences_markdown(table)]
    parts.append("\n".join(environment_lines(table)))
    (out_dir / "table.md").write_text("\n\n".join(part for part in parts if part) + "\n")
    (out_dir / "table.csv").write_text(table_csv(table))
    (out_dir / "findings.md").write_text(findings_markdown(table))
    plot_curves(table, out_dir / "curves.png")
    plot_accuracy(table, out_dir / "accuracy.png")
    return table

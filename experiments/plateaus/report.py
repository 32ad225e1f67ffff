"""The plateaus report, from ``runs.jsonl`` alone: how many classes stuck runs end on, how often they hop, what
moves them, and where the post's 0.2092 falls among seeds.

A run's trajectory is in its diagnostics (``common.diagnostics``): per epoch the locked class set (eval-mode
predictions on the class probe of training rows), the training rows whose true-class probability lay inside
the clip bounds in that epoch's train steps (``unclipped_rows``), and the steps with a non-zero gradient. From it:

  classes at the end = the locked set after the last epoch (its size: 1 or 2 for a stuck run, 10 for one that trains)
  hops               = changes of the locked set between consecutive epoch ends of a stuck run
                       (``common.diagnostics.class_hops``); a run that trains changes its predicted classes as
                       it learns, which is no plateau hop, so it counts none

Cells are a backend and training path, an optimiser, and a data order (``cell_label``). Per cell the tables give
counts with Wilson 95% intervals for the proportions; differences between two cells' proportions get Newcombe's
hybrid score interval (``common.stats``), the runs of the two cells taken as independent samples. (A seed gives
two cells the same initial weights; with different data orders or optimisers their trajectories part at once, and
where pair members still agree more often than chance, ignoring the pairing only widens the interval.)
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from common.diagnostics import Hop, class_hops
from common.results import FINISHED, RUNS_FILE, backend_label, read_records, record_key
from common.spec import Spec
from common.stats import NEWCOMBE_NAME, WILSON_NAME, proportion_difference, wilson_interval
from common.variants import VARIANTS
from experiments.harness.report import (STUCK_ACCURACY, Table, classify, environment_lines, panel_grid,
                                        spec_summary)
from experiments.mechanism.report import post_decomposition

POST = VARIANTS["loop_probs"].post
DEFAULTS = Spec()
# What the study varies between its cells; the rest of the spec (epochs, sizes) makes a family, reported alone.
CELL_AXES = {"seed": DEFAULTS.seed, "data_order": DEFAULTS.data_order, "optimizer": DEFAULTS.optimizer,
             "epsilon": DEFAULTS.epsilon, "prob_loss": DEFAULTS.prob_loss, "softmax": DEFAULTS.softmax,
             "loop_exec": None}
BACKEND_ORDER = ("jax", "torch", "keras")
MAX_HOP_COLUMN = 4  # hops per run: 0, 1, 2, 3 and "4+"


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished record and what the report reads off its trajectory."""

    record: dict[str, Any]
    final_classes: tuple[int, ...] | None  # None: no locked set after the last epoch (diverged, not measured)
    hops: tuple[Hop, ...]

    @classmethod
    def of(cls, record: dict[str, Any]) -> Run:
        last = record["diagnostics"][-1] if record["diagnostics"] else {}
        final = last.get("locked_classes")
        hops = tuple(class_hops(record["diagnostics"])) if classify(record) == "stuck" else ()
        return cls(record, None if final is None else tuple(final), hops)

    @property
    def stuck(self) -> bool:
        return classify(self.record) == "stuck"

    @property
    def seed(self) -> int:
        return self.record["seed"]

    @property
    def accuracy(self) -> float | None:
        return self.record["test_accuracy"]

    def unclipped(self, epoch: int) -> int | None:
        """The unclipped rows of ``epoch`` (1-based), None outside the run or where not counted."""
        return self._measured(epoch, "unclipped_rows")

    def nonzero_steps(self, epoch: int) -> int | None:
        return self._measured(epoch, "nonzero_grad_steps")

    def _measured(self, epoch: int, name: str) -> int | None:
        return next((d.get(name) for d in self.record["diagnostics"] if d["epoch"] == epoch), None)


def optimizer_label(spec: dict[str, Any]) -> str:
    if spec["optimizer"] == "sgd":
        return f"SGD lr {spec['learning_rate']:g}"
    return "Adam" if spec["epsilon"] == DEFAULTS.epsilon else f"Adam eps {spec['epsilon']:g}"


def cell_label(record: dict[str, Any]) -> str:
    """``jax fit · Adam · sequential``: backend and path (with a softmax form other than the post's), optimiser,
    data order."""
    path = "fit" if record["mode"] == "fit" else f"{record['loop_exec']} loop"
    if record["softmax"] not in (None, "activation"):
        path += f", softmax {record['softmax']}"
    spec = record["spec"]
    return " · ".join([f"{backend_label(record['backend'], record['engine'])} {path}", optimizer_label(spec),
                       spec["data_order"]])


def cell_order(runs: list[Run]) -> tuple:
    """JAX first, the post's Adam before the ablations, the post's sequential order before shuffled."""
    r = runs[0].record
    spec = r["spec"]
    ablation = (spec["optimizer"] != DEFAULTS.optimizer, spec["epsilon"] != DEFAULTS.epsilon)
    return BACKEND_ORDER.index(r["backend"]), ablation, spec["data_order"] != "sequential"


def family(record: dict[str, Any]) -> str:
    return Spec.from_dict(record["spec"]).replace(**CELL_AXES).hash()


@dataclasses.dataclass
class Study:
    spec: Spec  # the family's spec, cell axes at their defaults
    cells: dict[str, list[Run]]  # by cell label, in cell order
    records: list[dict[str, Any]]


def build(records: list[dict[str, Any]]) -> Study:
    """The newest family's finished runs whose diagnostics carry the trajectory, by cell."""
    traced = [r for r in records if r["status"] in FINISHED and r["diagnostics"]
              and "locked_classes" in r["diagnostics"][-1]]
    if not traced:
        raise ValueError("no finished run with a per-epoch trajectory (locked classes) in the results file")
    wanted = family(traced[-1])
    chosen = list({record_key(r): r for r in traced if family(r) == wanted}.values())  # a re-run replaces
    by_cell: dict[str, list[Run]] = defaultdict(list)
    for record in chosen:
        by_cell[cell_label(record)].append(Run.of(record))
    cells = {label: sorted(runs, key=lambda run: run.seed)
             for label, runs in sorted(by_cell.items(), key=lambda item: cell_order(item[1]))}
    return Study(Spec.from_dict(chosen[-1]["spec"]).replace(**CELL_AXES), cells, chosen)


# --- proportions ------------------------------------------------------------------------------------------------
def share_text(successes: int, n: int) -> str:
    """``k/n = share [low, high]`` with the Wilson 95% interval."""
    p = wilson_interval(successes, n)
    return f"{successes}/{n} = {p.estimate:.2f} [{p.ci95[0]:.2f}, {p.ci95[1]:.2f}]"


def class_count(run: Run) -> int | None:
    return None if run.final_classes is None else len(run.final_classes)


def class_count_column(run: Run) -> str:
    return "none" if run.final_classes is None else str(len(run.final_classes))


def hop_bucket(run: Run) -> str:
    return str(len(run.hops)) if len(run.hops) < MAX_HOP_COLUMN else f"{MAX_HOP_COLUMN}+"


def distribution_table(study: Study, key, columns: list[str], title: str) -> str:
    """Rows: cells; columns: the values of ``key(run)``; entries: count/n with the Wilson 95% interval."""
    lines = [f"| cell | n | {' | '.join(columns)} |", "|---" * (len(columns) + 2) + "|"]
    for label, runs in study.cells.items():
        counts = Counter(key(run) for run in runs)
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(share_text(counts[c], len(runs)) if counts[c] else "0"
                                                              for c in columns) + " |")
    return f"{title}\n\n" + "\n".join(lines)


def class_count_table(study: Study) -> str:
    columns = sorted({class_count_column(run) for runs in study.cells.values() for run in runs},
                     key=lambda column: (column == "none", int(column) if column != "none" else 0))
    return distribution_table(study, class_count_column, columns,
                              f"Classes locked in at the end (count/n = share [{WILSON_NAME}]):")


def hop_table(study: Study) -> str:
    most = max(len(run.hops) for runs in study.cells.values() for run in runs)
    columns = [str(h) for h in range(min(most, MAX_HOP_COLUMN - 1) + 1)]
    columns += [f"{MAX_HOP_COLUMN}+"] if most >= MAX_HOP_COLUMN else []
    return distribution_table(study, hop_bucket, columns,
                              f"Hops per run, changes of the locked class set from epoch 2 on (count/n = share "
                              f"[{WILSON_NAME}]):")


def summary_table(study: Study) -> str:
    """Per cell: runs stuck (``experiments.harness.report.classify``), runs that hopped at least once, runs ending on
    two classes, runs at or above the post's accuracy, and the accuracy range."""
    lines = [f"| cell | n | stuck (accuracy < {STUCK_ACCURACY}) | ≥ 1 hop | ends on 2 classes | accuracy ≥ the "
             f"post's {POST.test_accuracy} | accuracy min–max |", "|---" * 7 + "|"]
    for label, runs in study.cells.items():
        n, accuracies = len(runs), [run.accuracy for run in runs if run.accuracy is not None]
        stuck = sum(classify(run.record) == "stuck" for run in runs)
        hopped = sum(bool(run.hops) for run in runs)
        two = sum(class_count(run) == 2 for run in runs)
        at_post = sum(a >= POST.test_accuracy for a in accuracies)
        span = f"{min(accuracies):.4f}–{max(accuracies):.4f}" if accuracies else "—"
        lines.append(f"| {label} | {n} | {share_text(stuck, n)} | {share_text(hopped, n)} | {share_text(two, n)} | "
                     f"{share_text(at_post, n)} | {span} |")
    return "\n".join(lines)


def difference_line(name: str, label_a: str, label_b: str, study: Study, test, among=lambda run: True) -> str | None:
    """``p_a − p_b`` of the runs (those for which ``among(run)`` holds) for which ``test(run)`` holds, with
    Newcombe's interval and a verdict; None where a cell has no such run."""
    if label_a not in study.cells or label_b not in study.cells:
        return None
    a, b = ([run for run in study.cells[label] if among(run)] for label in (label_a, label_b))
    if not a or not b:
        return None
    k_a, k_b = sum(map(test, a)), sum(map(test, b))
    diff = proportion_difference(k_a, len(a), k_b, len(b))
    low, high = diff.ci95
    verdict = ("the interval excludes 0: the two differ" if diff.distinguishable
               else f"the interval contains 0: no difference shown at n = {len(a)} and {len(b)}")
    return (f"- {name}: {label_a} {k_a}/{len(a)} − {label_b} {k_b}/{len(b)} = {diff.estimate:+.3f}, "
            f"{NEWCOMBE_NAME} [{low:+.3f}, {high:+.3f}]: {verdict}.")


def baseline_label(study: Study, data_order: str) -> str | None:
    """The JAX Adam cell of a data order (the study's baseline)."""
    return next((label for label, runs in study.cells.items()
                 if runs[0].record["backend"] == "jax" and optimizer_label(runs[0].record["spec"]) == "Adam"
                 and runs[0].record["spec"]["data_order"] == data_order), None)


def differences(study: Study) -> list[str]:
    """Sequential − shuffled (JAX Adam) in ending on two classes and in hopping; each ablation − its baseline."""
    sequential, shuffled = baseline_label(study, "sequential"), baseline_label(study, "shuffled")
    lines = [difference_line("ends on two classes", sequential, shuffled, study, lambda run: class_count(run) == 2),
             difference_line("hops at least once", sequential, shuffled, study, lambda run: bool(run.hops))]
    for label, runs in study.cells.items():
        spec = runs[0].record["spec"]
        if runs[0].record["backend"] == "jax" and optimizer_label(spec) != "Adam":
            baseline = baseline_label(study, spec["data_order"])
            lines.append(difference_line("stuck runs that hop at least once", label, baseline, study,
                                         lambda run: bool(run.hops), among=lambda run: run.stuck))
    return [line for line in lines if line]


# --- what moves a stuck model -------------------------------------------------------------------------------------
def hop_listing(study: Study) -> str:
    """Every hop: cell, seed, epoch, the sets, and the unclipped rows in the epochs around it."""
    lines = ["| cell | seed | epoch | from → to | unclipped rows, epoch before / of / after the hop | "
             "steps with a non-zero gradient, epoch of the hop |", "|---" * 6 + "|"]
    for label, runs in study.cells.items():
        for run in runs:
            for hop in run.hops:
                around = " / ".join(_count(run.unclipped(e)) for e in (hop.epoch - 1, hop.epoch, hop.epoch + 1))
                lines.append(f"| {label} | {run.seed} | {hop.epoch} | {_set(hop.before)} → {_set(hop.after)} | "
                             f"{around} | {_count(run.nonzero_steps(hop.epoch))} |")
    return "\n".join(lines) if len(lines) > 2 else "No run hopped."


def movement_lines(study: Study) -> list[str]:
    """Per cell, over the epochs from 2 on (where a hop can happen): how many had no unclipped row at all, and the
    unclipped rows and non-zero-gradient steps of epochs with a hop against epochs without one."""
    lines = []
    for label, runs in study.cells.items():
        hop_rows, hop_steps, still_rows = [], [], []
        for run in runs:
            hopped = {hop.epoch for hop in run.hops}
            for entry in run.record["diagnostics"]:
                if entry["epoch"] < 2 or entry.get("unclipped_rows") is None:
                    continue
                if entry["epoch"] in hopped:
                    hop_rows.append(entry["unclipped_rows"])
                    hop_steps.append(entry["nonzero_grad_steps"])
                else:
                    still_rows.append(entry["unclipped_rows"])
        counted = hop_rows + still_rows
        if not counted:
            continue
        frozen = sum(rows == 0 for rows in counted)
        text = (f"- {label}: {frozen} of {len(counted)} epochs from 2 on had no unclipped row (a zero gradient in "
                "every step)")
        if hop_rows:
            moved = sum(steps > 0 for steps in hop_steps)
            text += (f"; the {len(hop_rows)} with a hop had {_spread(hop_rows)} unclipped rows, {moved} of them a "
                     "step with a non-zero gradient")
        if still_rows:
            text += f"; the {len(still_rows)} without a hop had {_spread(still_rows)}"
        lines.append(text + ".")
    return lines


def _spread(values: list[int]) -> str:
    return f"median {statistics.median(values):g} (range {min(values)}–{max(values)})"


def _count(value: int | None) -> str:
    return "—" if value is None else str(value)


def _set(classes: tuple[int, ...]) -> str:
    return "{" + ", ".join(map(str, classes)) + "}"


def answer_lines(study: Study) -> list[str]:
    """The findings' opening: what moves a stuck model, and the post's data order, from the measured figures."""
    all_runs = [run for runs in study.cells.values() for run in runs]
    hops = [(run, hop) for run in all_runs for hop in run.hops]
    lines = ["## What moves a stuck model\n"]
    if not hops:
        lines.append(f"No run of these {len(all_runs)} hopped: each kept the class set it locked in after epoch 1.")
    else:
        moved = [(run, hop) for run, hop in hops if (run.nonzero_steps(hop.epoch) or 0) > 0]
        counted = [(run, hop) for run, hop in hops if run.nonzero_steps(hop.epoch) is not None]
        lines.append(f"{len(hops)} hop(s) in {len({id(run) for run, _ in hops})} of {len(all_runs)} runs. With the "
                     "clipped loss a clipped row has an exactly zero gradient, so only the rows whose true-class "
                     "probability lies inside the clip bounds move the weights. "
                     f"In {len(moved)} of the {len(counted)} hop epochs that were counted, some step had a non-zero "
                     "gradient, coming from those unclipped rows. Per cell:")
    lines.append("")
    lines += movement_lines(study)
    if hops:
        lines += ["", "Every hop, with the unclipped rows (training rows whose true-class probability lay inside "
                      "the clip bounds in that epoch's train steps, dropout on) around it:", "", hop_listing(study)]
    ablations = [label for label, runs in study.cells.items()
                 if runs[0].record["backend"] == "jax" and optimizer_label(runs[0].record["spec"]) != "Adam"]
    if ablations:
        lines += ["", "The optimiser ablations ask whether Adam's per-parameter normalisation is what turns those "
                      "few rows' tiny gradients into steps of about the learning rate: plain SGD moves each weight by "
                      "the learning rate times its gradient, and a larger Adam epsilon damps the normalisation of "
                      "tiny gradients. Only a stuck run can hop, so each ablation is compared on its stuck runs.", ""]
        lines += [f"- {label}: {sum(run.stuck for run in study.cells[label])} of {len(study.cells[label])} runs got "
                  "stuck." + ("" if all(run.stuck for run in study.cells[label]) else
                              " A run that does not get stuck never reaches the plateau, so it cannot show whether a "
                              "stuck model hops without the optimiser's normalisation.")
                  for label in ablations]
        lines += [line for line in differences(study) if any(label in line for label in ablations)]
    sequential, shuffled = baseline_label(study, "sequential"), baseline_label(study, "shuffled")
    lines += ["", "## The post's data order\n"]
    if sequential and shuffled:
        lines.append("The post's loop read its batches in file order every epoch (`sequential`); the runs here "
                     "otherwise shuffle. Does that order change the odds of ending on two classes, as the post did?\n")
        lines += [line for line in differences(study) if sequential in line and shuffled in line]
    else:
        lines.append("Needs both data orders' JAX Adam cells.")
    return lines


def findings_markdown(study: Study) -> str:
    lines = [f"# Plateau hops: findings\n\nSpec: {spec_summary(study.spec)}; probs head, a loss that clips at "
             f"[{study.spec.clip_epsilon:g}, 1 − {study.spec.clip_epsilon:g}]. A run's locked class set is read "
             "after every epoch on the class probe (the first training rows, eval mode); a hop is a change of it "
             "from one epoch end to the next (epoch 2 on).\n"]
    lines += answer_lines(study)
    stuck = [run for runs in study.cells.values() for run in runs if classify(run.record) == "stuck"]
    at_post = [run for run in stuck if run.accuracy >= POST.test_accuracy]
    lines += ["", "## Where the post's 0.2092 falls\n",
              f"Of the runs that stuck (test accuracy < {STUCK_ACCURACY}), {share_text(len(at_post), len(stuck))} "
              f"({WILSON_NAME}) end at or above the post's {POST.test_accuracy}; by cell in plateaus.md and "
              "accuracy.png." if stuck else "No run stuck.", ""]
    lines += post_decomposition(study.records)
    lines += ["## Environment\n", *environment_lines(Table(study.spec, {}, study.records))]
    return "\n".join(lines) + "\n"


def plateaus_markdown(study: Study) -> str:
    between = differences(study)
    parts = [f"# Plateau hops\n\nSpec: {spec_summary(study.spec)}.",
             summary_table(study), class_count_table(study), hop_table(study),
             "Differences between cells:\n\n" + "\n".join(between) if between else "",
             "Every hop (unclipped rows: training rows whose true-class probability lay inside the clip bounds in "
             "that epoch's train steps, dropout on; — outside the run):\n\n" + hop_listing(study)]
    return "\n\n".join(part for part in parts if part) + "\n"


# --- plots --------------------------------------------------------------------------------------------------------
def plot_accuracy(study: Study, path: Path) -> None:
    """Histogram of the final test accuracy, one panel per cell, the post's 0.2092 marked and each cell's share at
    or above it in its title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracies = [run.accuracy for runs in study.cells.values() for run in runs if run.accuracy is not None]
    bins = [i / 100 for i in range(0, int(max(accuracies + [POST.test_accuracy]) * 100) + 3)]
    fig, axes = plt.subplots(len(study.cells), 1, figsize=(8, 1.4 * len(study.cells) + 1), sharex=True,
                             squeeze=False)
    for ax, (label, runs) in zip(axes[:, 0], study.cells.items()):
        values = [run.accuracy for run in runs if run.accuracy is not None]
        at_post = sum(a >= POST.test_accuracy for a in values)
        ax.hist(values, bins=bins, color="tab:blue")
        ax.axvline(POST.test_accuracy, color="k", ls="--", lw=1)
        ax.set_title(f"{label}: {share_text(at_post, len(values))} at or above the post's {POST.test_accuracy}",
                     fontsize=8)
        ax.set_ylabel("runs", fontsize=8)
    axes[-1, 0].set_xlabel(f"final test accuracy (dashed: the post's {POST.test_accuracy}; shares with their "
                           f"{WILSON_NAME})", fontsize=8)
    fig.suptitle(f"Final test accuracy of each run, {spec_summary(study.spec)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_costs(study: Study, path: Path) -> None:
    """Each run's epoch costs, one panel per cell, with the post's stuck loop overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(study.cells)
    fig, axes = panel_grid(len(labels), panel_height=3.4)
    for ax, label in zip(axes.flat, labels):
        for run in study.cells[label]:
            costs = [c if c is not None else math.nan for c in run.record["epoch_costs"]]
            ax.plot(range(1, len(costs) + 1), costs, lw=0.8, alpha=0.5, color="tab:blue")
        ax.plot(range(1, len(POST.epoch_costs) + 1), POST.epoch_costs, "k--", marker="o", ms=3, label="post's loop")
        ax.set_title(f"{label} (n={len(study.cells[label])})", fontsize=8)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean training cost per epoch")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Epoch costs (blue: one line per run), {spec_summary(study.spec)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out_dir: str | Path) -> str:
    """Write plateaus.md, findings.md, accuracy.png and costs.png into ``out_dir``; plateaus.md's text."""
    out_dir = Path(out_dir)
    study = build(read_records(out_dir / RUNS_FILE))
    text = plateaus_markdown(study)
    (out_dir / "plateaus.md").write_text(text)
    (out_dir / "findings.md").write_text(findings_markdown(study))
    plot_accuracy(study, out_dir / "accuracy.png")
    plot_costs(study, out_dir / "costs.png")
    return text

"""A record set beside its re-run: bit-identical, the same outcome with other figures, or another outcome.

Verdicts (``Pair.verdict``), from the strictest:

  identical          every figure equal to the last bit: the epoch costs, test loss, test accuracy and the
                     share of test rows predicted per class (as written in the records, which keep each float
                     exactly: JSON round-trips a double);
  same_outcome       the outcome of ``experiments.harness.report.classify`` (trains / stuck / diverged / failed)
                     equal, with |accuracy difference| and |last epoch cost difference| to say by how much;
  different_outcome  anything else, a re-run that failed included.

Each pair carries the machine class of both runs (``env.machine_class``, ``common.machine``): bit-identity is
expected only within a class, so the report counts pairs per (record's class, re-run's class). A re-run replaces
the pairs an earlier re-run made on its own machine class and keeps the others (``earlier_reruns``), each with the
command that made it: re-running a directory on a second machine never erases what the first one showed.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.results import backend_label, run_key
from experiments.harness.report import classify, machine_class_of, row_label

VERDICTS = ("identical", "same_outcome", "different_outcome")
#: The figures that must be equal, bit for bit, for ``identical``.
FIGURES = ("epoch_costs", "test_loss", "test_accuracy", "test_predicted_shares")
REPORT_FILE = "reproduction.md"
PAIRS_FILE = "reproduction.jsonl"


@dataclasses.dataclass(frozen=True)
class Pair:
    """A published record and the record of its re-run here."""

    original: dict[str, Any]
    rerun: dict[str, Any]
    command: str = ""  # the experiments.reproduce command line that made the re-run

    @property
    def verdict(self) -> str:
        if all(self.original[f] == self.rerun[f] for f in FIGURES):
            return "identical"
        return "same_outcome" if self.outcomes[0] == self.outcomes[1] else "different_outcome"

    @property
    def outcomes(self) -> tuple[str, str]:
        return classify(self.original), classify(self.rerun)

    @property
    def accuracy_difference(self) -> float | None:
        """|accuracy here - recorded accuracy|; None where either run has none."""
        return _difference(self.original["test_accuracy"], self.rerun["test_accuracy"])

    @property
    def last_cost_difference(self) -> float | None:
        """|last epoch cost here - recorded last epoch cost|; None where either has none (or a non-finite one)."""
        last = [r["epoch_costs"][-1] if r["epoch_costs"] else None for r in (self.original, self.rerun)]
        return _difference(*last)

    @property
    def label(self) -> str:
        release = self.original["spec"].get("tf_version")  # a cell of the versions study names its release
        cell = self.original["spec"].get("loss_cell")  # an atlas run names its cross-entropy call
        what = cell.replace("|", "\\|") if cell else self.original["variant"]
        return f"{row_label(self.original)}{f' · TF {release}' if release else ''} {what}"

    def to_dict(self) -> dict[str, Any]:
        """One line of ``reproduction.jsonl``: the run's key, the verdict and its figures, the re-run record."""
        o = self.original
        return {
            "run": {"backend": o["backend"], "engine": o["engine"], "variant": o["variant"], "seed": o["seed"],
                    "spec_hash": o["spec_hash"], "device": o["device"]},
            "verdict": self.verdict,
            "outcome": dict(zip(("record", "rerun"), self.outcomes)),
            "test_accuracy": {"record": o["test_accuracy"], "rerun": self.rerun["test_accuracy"]},
            "accuracy_difference": self.accuracy_difference,
            "last_cost_difference": self.last_cost_difference,
            "machine_class": {"record": machine_class_of(o), "rerun": machine_class_of(self.rerun)},
            "command": self.command,
            "rerun": self.rerun,
        }

    @staticmethod
    def key_of(line: dict[str, Any]) -> tuple:
        """The run key of a ``reproduction.jsonl`` line (``common.results.record_key`` of its record)."""
        run = line["run"]
        return run_key(run["spec_hash"], run["backend"], run["engine"], run["variant"], run["seed"], run["device"])


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else abs(b - a)


def verdict_counts(pairs: list[Pair]) -> dict[str, int]:
    counts = collections.Counter(p.verdict for p in pairs)
    return {v: counts[v] for v in VERDICTS}


def by_class(pairs: list) -> dict[tuple[str, str], list]:
    """The pairs (training or probe) per (record's machine class, re-run's machine class), in class order."""
    groups: dict[tuple[str, str], list] = collections.defaultdict(list)
    for pair in pairs:
        groups[(machine_class_of(pair.original), machine_class_of(pair.rerun or {}))].append(pair)
    return dict(sorted(groups.items()))


def table_markdown(pairs: list[Pair]) -> str:
    lines = ["| run | seed | verdict | outcome (record → re-run) | accuracy (record → re-run) | Δ accuracy | "
             "Δ last cost | machine class (record) | machine class (re-run) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        record, here = p.outcomes
        lines.append(f"| {p.label} | {p.original['seed']} | {p.verdict} | {record} → {here} | "
                     f"{_figure(p.original['test_accuracy'], '.4f')} → {_figure(p.rerun['test_accuracy'], '.4f')} | "
                     f"{_figure(p.accuracy_difference, '.2g')} | {_figure(p.last_cost_difference, '.2g')} | "
                     f"{machine_class_of(p.original)} | {machine_class_of(p.rerun)} |")
    return "\n".join(lines)


def _figure(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def summary_lines(pairs: list[Pair]) -> list[str]:
    """The verdict counts, overall and per pair of machine classes, in words, each with its command."""
    counts = verdict_counts(pairs)
    lines = [f"{len(pairs)} records re-run: {counts['identical']} identical, {counts['same_outcome']} with the "
             f"same outcome and other figures, {counts['different_outcome']} with a different outcome."]
    for (recorded, here), group in by_class(pairs).items():
        where = ("the same machine class" if recorded == here else "a class the record does not name"
                 if recorded.startswith("unrecorded") else "another machine class")
        lines.append(f"- made on {recorded}, re-run on {here} ({where}): "
                     + ", ".join(f"{n} {verdict.replace('_', ' ')}" for verdict, n in verdict_counts(group).items()
                                 if n)
                     + f" ({commands_of(group)})")
    return lines


def commands_of(pairs) -> str:
    """The commands that made ``pairs``' re-runs, as the report names them."""
    return "; ".join(f"`{c}`" if c else "command not recorded" for c in sorted({p.command for p in pairs}))


def earlier_reruns(path: Path, originals: dict[tuple, dict[str, Any]], key_of: Callable[[dict[str, Any]], tuple],
                   here: set[str], make: Callable[[dict[str, Any], dict[str, Any], str], Any]) -> list:
    """The pairs of ``path`` (a reproduction file, a pair a line) whose re-run was made on a machine class not in
    ``here``, rebuilt by ``make(original, rerun, command)`` beside the directory's current record: a re-run on
    one class replaces its own class's pairs and keeps the others'. A line whose record is no longer in the
    directory (``originals``, by ``key_of(line)``) or that holds no re-run is dropped."""
    if not path.is_file():
        return []
    kept = []
    for text in path.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        original, rerun = originals.get(key_of(line)), line.get("rerun")
        if original is not None and rerun is not None and machine_class_of(rerun) not in here:
            kept.append(make(original, rerun, line.get("command", "")))
    return kept


def report_markdown(pairs: list[Pair], source: str, skipped: list[str]) -> str:
    rows = sorted({backend_label(p.original["backend"], p.original["engine"]) for p in pairs})
    parts = [f"# Reproduction of `{source}`", "",
             "Each record below re-run, by the command its pair of machine classes names, in its own "
             "`experiments.run` process (a cell of the versions study: by `experiments.versions`, in its "
             "release's environment; an atlas cell: by "
             "`experiments.atlas.train_child`) from its recorded spec, "
             f"backend, variant and seed (rows: {', '.join(rows)}), and compared with what the record says. "
             "identical: every figure (epoch costs, test loss, test accuracy, predicted-class shares) equal to the "
             "last bit; same_outcome: the same trains / stuck / diverged outcome with other figures (Δ: absolute "
             "differences); different_outcome: another outcome. Bits are expected to agree only within a machine "
             "class (CPU vendor, family.model, widest vector instruction set: `common/machine.py`).", "",
             *summary_lines(pairs), "", table_markdown(pairs)]
    if skipped:
        parts += ["", f"Not re-run ({len(skipped)}):", *(f"- {reason}" for reason in skipped)]
    return "\n".join(parts) + "\n"


def write_report(out_dir: str | os.PathLike, pairs: list[Pair], skipped: list[str]) -> list[Path]:
    """``DIR/reproduction.md`` and ``DIR/reproduction.jsonl`` (one pair a line), each replaced whole."""
    return write_beside(out_dir, report_markdown(pairs, str(out_dir), skipped), pairs)


def write_beside(out_dir: str | os.PathLike, markdown: str, pairs,
                 names: tuple[str, str] = (REPORT_FILE, PAIRS_FILE)) -> list[Path]:
    """``DIR/reproduction.md`` (``markdown``) and ``DIR/reproduction.jsonl`` (each pair's ``to_dict``, a line
    each), or the two ``names``, each replaced whole: a reader never sees half a report."""
    out_dir = Path(out_dir)
    files = {out_dir / names[0]: markdown,
             out_dir / names[1]: "".join(json.dumps(p.to_dict(), allow_nan=False) + "\n" for p in pairs)}
    for path, text in files.items():
        scratch = path.with_name(path.name + ".tmp")
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, path)
    return list(files)

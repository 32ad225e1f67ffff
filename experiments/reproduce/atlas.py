"""An atlas directory's probe stage re-run here and set beside its records, cell by cell and input by input.

The atlas' probe (``python -m experiments.atlas --out DIR``) measures every cross-entropy call on fixed logits
(``probe_inputs.npz``), with no training and no randomness, so on the machine class that made it every figure
should come back bit for bit. Verdicts (``ProbePair.verdict``), from the strictest:

  identical       every field of ``FIGURES`` equal: the loss and the float64 reference's, the gradient's
                  figures, the loss path, the warnings and the error;
  same_path       the behaviour (``BEHAVIOUR``: loss path, warnings, error) equal, some figure not
                  (|loss difference| says by how much);
  different_path  anything else, a cell missing from the re-run included.

As for the training records (``experiments.reproduce.report``), a re-run replaces the pairs of its own machine
class and keeps those another class made, each with its command.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Any

from experiments.atlas import report as atlas_report
from experiments.atlas.report import ATLAS_FILE
from experiments.harness import sweep
from experiments.harness.report import machine_class_of
from experiments.reproduce.report import by_class, commands_of, write_beside

VERDICTS = ("identical", "same_path", "different_path")
BEHAVIOUR = ("loss_path", "warnings", "error")
FIGURES = ("loss", "reference_loss", "grad_finite", "grad_zero_share", "grad_signal", "wrong_rows", *BEHAVIOUR)
PROBE_TIMEOUT_S = 3600
PROBE_FILES = ("probe_reproduction.md", "probe_reproduction.jsonl")  # the probe's report, beside a training one
SHOWN = 40  # rows of the report's table of cells that did not come back identical


class ProbeFailed(RuntimeError):
    """The re-run probe exited non-zero or measured other inputs; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class ProbePair:
    """A published probe record and the re-run's record of the same cell and input (None: not measured)."""

    original: dict[str, Any]
    rerun: dict[str, Any] | None
    command: str = ""  # the experiments.reproduce command line that made the re-run

    @property
    def verdict(self) -> str:
        if self.rerun is None:
            return "different_path"
        if all(self.original.get(f) == self.rerun.get(f) for f in FIGURES):
            return "identical"
        return "same_path" if all(self.original.get(f) == self.rerun.get(f) for f in BEHAVIOUR) else "different_path"

    @property
    def loss_difference(self) -> float | None:
        losses = (self.original.get("loss"), (self.rerun or {}).get("loss"))
        return abs(losses[0] - losses[1]) if all(isinstance(x, (int, float)) for x in losses) else None

    def to_dict(self) -> dict[str, Any]:
        """The verdict and the re-run's record; the published one is the (cell, input) line of atlas.jsonl."""
        return {"cell": self.original["cell"], "input": self.original["input"], "verdict": self.verdict,
                "loss_difference": self.loss_difference, "command": self.command, "rerun": self.rerun}


def key(record: dict[str, Any]) -> tuple[str, str]:
    return record["cell"], record["input"]


def rerun_probe(data: Path, scratch: Path) -> list[dict[str, Any]]:
    """Run the probe stage, as its command does (a process per framework), into ``scratch``; its records."""
    failure = sweep.run_module("experiments.atlas", ["--out", str(scratch), "--data", str(data)], PROBE_TIMEOUT_S)
    if failure:
        raise ProbeFailed(failure)
    return atlas_report.read(scratch)


def pair(originals: list[dict[str, Any]], reruns: list[dict[str, Any]], command: str = "") -> list[ProbePair]:
    """Each published record with its re-run, in the published order; the probe inputs must be the same ones."""
    recorded = {r["inputs_sha256"] for r in originals}
    measured = {r["inputs_sha256"] for r in reruns}
    if reruns and recorded != measured:
        raise ProbeFailed("the re-run probed other inputs (probe_inputs hash "
                          f"{sorted(measured)[0][:16]}, the records {sorted(recorded)[0][:16]}): give the MNIST file "
                          "the records were made from with --data")
    by_key = {key(r): r for r in reruns}
    return [ProbePair(record, by_key.get(key(record)), command) for record in originals]


def summary_lines(pairs: list[ProbePair]) -> list[str]:
    counts = collections.Counter(p.verdict for p in pairs)
    lines = [f"{len(pairs)} probe records re-run: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + "."]
    for (made, here), group in by_class(pairs).items():
        same = "the same machine class" if made == here else "another machine class"
        verdicts = collections.Counter(p.verdict for p in group)
        lines.append(f"- made on {made}, re-run on {here} ({same}): "
                     + ", ".join(f"{n} {v}" for v, n in verdicts.items()) + f" ({commands_of(group)})")
    return lines


def report_markdown(pairs: list[ProbePair], source: str) -> str:
    differing = [p for p in pairs if p.verdict != "identical"]
    parts = [f"# Reproduction of `{source}`", "",
             "The atlas' probe stage re-run whole, by the command its pair of machine classes names (`python -m "
             "experiments.atlas`, a process per framework), and every cell and input set beside its record. "
             "identical: the loss, the reference loss, the gradient's figures, the loss path, the warnings and the "
             "error all equal to the last bit; same_path: the same loss path, warnings and error with other figures; "
             "different_path: anything else. "
             "Bits are expected to agree only within a machine class (`common/machine.py`).", "",
             *summary_lines(pairs)]
    if differing:
        shown = f", the first {SHOWN}" if len(differing) > SHOWN else ""
        parts += ["", f"Not identical ({len(differing)}{shown}):", "",
                  "| cell | input | re-run on | verdict | loss path (record → re-run) | loss difference |",
                  "|---|---|---|---|---|---|"]
        for p in differing[:SHOWN]:
            here = p.rerun["loss_path"] if p.rerun else "not measured"
            difference = "—" if p.loss_difference is None else f"{p.loss_difference:.3g}"
            parts.append(f"| {p.original['cell']} | {p.original['input']} | {machine_class_of(p.rerun or {})} | "
                         f"{p.verdict} | {p.original['loss_path']} → {here} | {difference} |")
    return "\n".join(parts) + "\n"


def write_report(out_dir: str | os.PathLike, pairs: list[ProbePair]) -> list[Path]:
    """``DIR/probe_reproduction.md`` and ``DIR/probe_reproduction.jsonl`` (one pair a line), each replaced whole:
    beside them, ``reproduction.md`` is the training records' (``experiments.reproduce DIR`` on runs.jsonl)."""
    return write_beside(out_dir, report_markdown(pairs, str(out_dir)), pairs, PROBE_FILES)

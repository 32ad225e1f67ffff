"""What moves a stuck model: the plateau hops of the clipped loss, and where the post's 0.2092 falls among seeds.

    python -m experiments.plateaus --out docs/results/cpu-plateaus               # full spec (hours on 2 cores)
    python -m experiments.plateaus --quick --seeds 3 --out /tmp/plateaus         # 3 epochs, 6,000 images: minutes

Cells (probs head, raw pixels, the post's spec otherwise), each run recording per epoch its locked class set, its
unclipped rows and its steps with a non-zero gradient (``common.diagnostics``):

- JAX, clipped loss, ``fit`` (its loop runs the same compiled step and gives the same numbers), Adam, in the post's
  file order (``sequential``) and ``shuffled``: ``--seeds N`` each (default 50);
- the optimiser ablations, JAX as above in sequential order: plain SGD at the post's learning rate, and Adam with
  epsilon 1e-3: ``--ablation-seeds M`` each (default 10);
- the same dynamics in the post's kind of loop, sequential order: PyTorch's clipped eager loop, and Keras on
  TensorFlow's eager ``GradientTape`` loop with a bare softmax op (its native loss clips there):
  ``--framework-seeds K`` each (default 3).

Seeds count from 777 in every cell, so a seed's ablation runs share its baseline's initial weights and batches.
Each cell on each seed is one ``experiments.run`` process, here or as a Ray task (``--executor ray``); records go
to DIR/runs.jsonl as runs end, and the same command resumes an interrupted sweep. Then DIR gets plateaus.md,
findings.md, accuracy.png and costs.png (experiments/plateaus/report.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from common.spec import Spec
from experiments.compare import command as compare
from experiments.harness import cli, sweep
from experiments.plateaus import report as plateaus

#: --quick: enough epochs for a hop to show, on the subset compare's quick mode uses; explicit flags still win.
QUICK = {"epochs": 3, "train_size": 6000, "test_size": 2000, "seeds": 3, "ablation_seeds": 3, "framework_seeds": 1}
SEED_COUNTS = {"seeds": 50, "ablation_seeds": 10, "framework_seeds": 3}
# The flags each cell sets for its experiments.run children (the rest come from the command line).
FIXED = ("variants", "seed", "seeds", "prob_loss", "softmax", "loop_exec", "controls", "input_scale", "data_order")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One kind of run: a backend (and Keras engine), the flags of its ``experiments.run`` children, and which
    seed count it runs on (a key of ``SEED_COUNTS``)."""

    backend: str
    engine: str | None
    flags: dict
    seed_count: str


JAX_CLIPPED = {"variants": "fit_probs", "prob_loss": "clipped"}
CELLS = (
    Cell("jax", None, {**JAX_CLIPPED, "data_order": "sequential"}, "seeds"),
    Cell("jax", None, {**JAX_CLIPPED, "data_order": "shuffled"}, "seeds"),
    Cell("jax", None, {**JAX_CLIPPED, "data_order": "sequential", "optimizer": "sgd"}, "ablation_seeds"),
    Cell("jax", None, {**JAX_CLIPPED, "data_order": "sequential", "epsilon": 1e-3}, "ablation_seeds"),
    Cell("torch", None, {"variants": "loop_probs", "prob_loss": "clipped", "loop_exec": "eager",
                         "data_order": "sequential"}, "framework_seeds"),
    Cell("keras", "tensorflow", {"variants": "loop_probs", "prob_loss": "native", "softmax": "op",
                                 "loop_exec": "eager", "data_order": "sequential"}, "framework_seeds"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="python -m experiments.plateaus", description=__doc__.splitlines()[0])
    cli.add_run_flags(parser, fixed=FIXED)
    parser.add_argument("--seeds", type=int, metavar="N",
                        help=f"seeds of each JAX Adam cell, from 777 (default {SEED_COUNTS['seeds']})")
    parser.add_argument("--ablation-seeds", type=int, metavar="M",
                        help=f"seeds of each optimiser ablation (default {SEED_COUNTS['ablation_seeds']})")
    parser.add_argument("--framework-seeds", type=int, metavar="K",
                        help=f"seeds of the PyTorch and Keras cells (default {SEED_COUNTS['framework_seeds']})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run that still shows the trajectory: {QUICK} unless given explicitly")
    parser.set_defaults(**SEED_COUNTS)
    sweep.add_flags(parser)
    return parser


def parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    for name in SEED_COUNTS:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give a positive number of seeds")
    return parser, args


def cell_args(args: argparse.Namespace, cell: Cell) -> argparse.Namespace:
    """The command line's namespace as ``experiments.run`` would parse it for ``cell``'s children."""
    defaults = Spec()
    values = {**vars(args), "seed": None, "seeds": getattr(args, cell.seed_count), "controls": False,
              "input_scale": "raw", "softmax": defaults.softmax, "loop_exec": None,
              "optimizer": defaults.optimizer, "epsilon": defaults.epsilon, **cell.flags}
    return argparse.Namespace(**values)


def child_args(args: argparse.Namespace, seed: int, backend: str, engine: str | None, data: Path) -> list[str]:
    """compare's child arguments, plus the optimiser flags only this study varies."""
    return [*compare.child_args(args, seed, backend, engine, data), *cli.optimizer_args(args.optimizer, args.epsilon)]


def make_units(parser: argparse.ArgumentParser, args: argparse.Namespace, data: Path) -> list[sweep.Unit]:
    """Every cell on each of its seeds, one unit each, seed by seed (an interrupted sweep has every cell's first
    seeds), planned exactly as the child plans them (``cli.plan`` on the child's flags)."""
    units = []
    for order, cell in enumerate(CELLS):
        namespace = cell_args(args, cell)
        plan = cli.plan(parser, namespace, cell.backend, cell.engine)
        for unit in sweep.make_units({(cell.backend, cell.engine): plan}, args.device,
                                     lambda b, e, seed, ns=namespace: child_args(ns, seed, b, e, data)):
            units.append((unit.seed, order, unit))
    return [unit for _, _, unit in sorted(units, key=lambda item: item[:2])]


def report(out_dir: str, spec: Spec) -> str:
    text = plateaus.write_reports(out_dir)
    return text + "\n\nwrote plateaus.md, findings.md, accuracy.png, costs.png"


def main(argv: list[str] | None = None) -> None:
    parser, args = parse(argv)
    executor = sweep.make_executor(parser, args)
    compare.sweep_and_report(parser, args, argv, executor, lambda data: make_units(parser, args, data), report)

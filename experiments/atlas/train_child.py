"""One child of the atlas' training stage: some cells of one atlas group, on one input and seed, each trained by
the group's backend through ``experiments.harness.runner.run_sweep`` with the cell as its given loss.

    python -m experiments.atlas.train_child --group torch --input-scale raw --seed 777 --epochs 1 \\
        --train-size 6000 --test-size 2000 --cell 'torch | nn.CrossEntropyLoss()(out, t) | softmax | \\
        from_logits=None | eager' --out DIR

The sweep (``experiments.atlas.training.units``) starts it with ``--out`` a scratch directory it tails; run by
hand it resumes in DIR like ``experiments.run``. The cells are built here, in the framework of the group
(``keras_cells``, ``torch_cells``, ``jax_cells``, ``tf_cells``: the probe's own cells), after the backend has
loaded its framework.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from backends import BackendError, get_backend
from common import dirlock
from common.data import find_mnist
from common.spec import INPUT_SCALES, Spec, SpecError
from experiments.atlas import keras_cells, training
from experiments.atlas.probe import Cell, cell_id
from experiments.harness import cli
from experiments.harness.report import classify
from experiments.harness.runner import run_sweep

PROG = "python -m experiments.atlas.train_child"
CELL_MODULES = {"torch": "torch_cells", "jax": "jax_cells", "tensorflow": "tf_cells"}  # the groups without Keras


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--group", required=True, choices=tuple(training.TRAINED_BY))
    parser.add_argument("--cell", required=True, action="append", help="an atlas cell id of the group; repeat")
    parser.add_argument("--input-scale", required=True, choices=INPUT_SCALES)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--train-size", type=int, help="first N training images (default: all 60000)")
    parser.add_argument("--test-size", type=int, help="first N test images (default: all 10000)")
    parser.add_argument("--data", metavar="PATH", help="MNIST .npz (default: $MNIST_PATH, caches, download)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--out", metavar="DIR", type=cli.output_dir, required=True, help="records in DIR/runs.jsonl")
    return parser


def group_cells(group: str, backend: Any) -> tuple[dict[str, Cell], Callable[[Any], Any]]:
    """``({cell id: cell}, index_targets)`` of an atlas group, built on the backend's loaded framework."""
    if group.startswith("keras/"):
        engine = backend.keras_engine
        made, framework, engine_name = keras_cells.cells(engine), "keras", engine.name
        module = keras_cells.framework_cells(engine.name)
    else:
        module = importlib.import_module(f"experiments.atlas.{CELL_MODULES[group]}")
        made, framework, engine_name = module.cells(), group, None
    cells = {cell_id(framework, engine_name, c.api, c.head, c.from_logits, c.exec): c for c in made}
    return cells, module.index_targets


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        base = Spec(epochs=args.epochs, train_size=args.train_size, test_size=args.test_size)
    except SpecError as exc:
        parser.error(str(exc))
    backend_name, engine = training.TRAINED_BY[args.group]
    with cli.friendly_errors(PROG), dirlock.locked(args.out):
        data_path = find_mnist(args.data)  # before the (slow) framework import, so a bad path fails fast
        try:
            backend = get_backend(backend_name, device=args.device, engine=engine)
        except BackendError as exc:
            cli.fail(PROG, str(exc))
        cells, index_targets = group_cells(args.group, backend)
        unknown = [cell for cell in args.cell if cell not in cells]
        if unknown:
            cli.fail(PROG, f"--cell {unknown[0]!r} is not a cell of the {args.group} group; the atlas' records "
                           "(DIR/atlas.jsonl, key 'cell') name them")
        runs = training.plan(base, [(cell, cells[cell].exec) for cell in args.cell], args.input_scale, args.seed)
        records = run_sweep(backend, runs, args.out, data_path=data_path,
                            given_loss=training.given_loss(cells, index_targets))
    for record in records:
        accuracy = "nan" if record["test_accuracy"] is None else f"{record['test_accuracy']:.4f}"
        print(f"{classify(record):<8} {accuracy:>6}  {record['input_scale']:<4}  {record['spec']['loss_cell']}")
    return records


if __name__ == "__main__":
    main()

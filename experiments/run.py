"""Run the seed post's variants on one backend: ``python -m experiments.run --backend keras|torch|jax``.

Example (one epoch of every variant on full MNIST, results in /tmp/r/runs.jsonl):

    python -m experiments.run --backend torch --variants all --epochs 1 --out /tmp/r
"""

from __future__ import annotations

import argparse

from backends import BACKEND_NAMES, KERAS_ENGINES, BackendError, get_backend
from common import dirlock
from experiments.harness import cli
from common.data import find_mnist
from experiments.harness.runner import format_summary, run_sweep


def build_parser(backend: str | None = None) -> argparse.ArgumentParser:
    prog = f"python -m experiments.{backend}_mnist" if backend else "python -m experiments.run"
    parser = cli.Parser(prog=prog, description=__doc__.splitlines()[0])
    if backend is None:
        parser.add_argument("--backend", required=True, choices=BACKEND_NAMES)
    parser.add_argument("--engine", choices=KERAS_ENGINES, help="Keras only: the engine (default tensorflow)")
    cli.add_run_flags(parser)
    cli.add_optimizer_flags(parser)
    return parser


def main(argv: list[str] | None = None, backend: str | None = None) -> list[dict]:
    parser = build_parser(backend)
    args = parser.parse_args(argv)
    backend = backend or args.backend
    if args.engine and backend != "keras":
        parser.error(f"--engine is for the keras backend only; the {backend} backend has one engine")
    plan = cli.plan(parser, args, backend, args.engine)
    # One sweep per results directory (common.dirlock); under experiments.compare --out is a scratch directory.
    with cli.friendly_errors(parser.prog), dirlock.locked(args.out):
        data_path = find_mnist(args.data)  # before the (slow) framework import, so a bad path fails fast
        try:
            runner = get_backend(backend, device=args.device, engine=args.engine)
        except BackendError as exc:
            cli.fail(parser.prog, str(exc))
        records = run_sweep(runner, plan, args.out, data_path=data_path, verbose=args.verbose)
    print(format_summary(records))
    return records


if __name__ == "__main__":
    main()

"""The command-line front end shared by every experiment module (same flags everywhere).

Bad input (unknown backend, variant, engine or flag value; a nonsensical spec value; a bad data file) ends
with one line ``<prog>: error: <what> ...`` naming what is accepted, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import NoReturn

from common.data import DataError
from common.spec import DATA_ORDERS, INPUT_SCALES, Spec, SpecError
from common.variants import VARIANT_NAMES, VariantError, parse_variants

DEFAULT_OUT = "results"


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = message.replace("(choose from ", "(choose from: ").replace("'", "")
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of DESIGN.md "Results and reports", common to every experiment module."""
    defaults = Spec()
    parser.add_argument("--variants", default="all", help=f"all, or names from: {', '.join(VARIANT_NAMES)}")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs per run (default %(default)s)")
    parser.add_argument("--seed", type=int, action="append", help="a seed; repeat for several")
    parser.add_argument("--seeds", type=int, help=f"N seeds: {defaults.seed}, {defaults.seed + 1}, ...")
    parser.add_argument("--prob-loss", choices=("native", "clipped", "both"), default="native",
                        help="probability cross-entropy of the probs head (default %(default)s)")
    parser.add_argument("--input-scale", choices=INPUT_SCALES, default=defaults.input_scale)
    parser.add_argument("--data-order", choices=DATA_ORDERS, default=defaults.data_order)
    parser.add_argument("--train-size", type=int, help="first N training images (default: all 60000)")
    parser.add_argument("--test-size", type=int, help="first N test images (default: all 10000)")
    parser.add_argument("--data", metavar="PATH", help="MNIST .npz (default: $MNIST_PATH, caches, download)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help="results go to DIR/runs.jsonl")
    parser.add_argument("--keep-going", action="store_true",
                        help="keep training after the loss turns NaN/inf (default: stop at that epoch)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the post's per-epoch cost lines")


def base_spec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Spec:
    try:
        return Spec(epochs=args.epochs, input_scale=args.input_scale, data_order=args.data_order,
                    train_size=args.train_size, test_size=args.test_size, stop_on_nonfinite=not args.keep_going)
    except SpecError as exc:
        parser.error(str(exc))


def seeds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    if args.seed and args.seeds:
        parser.error("give --seed (repeatable) or --seeds N, not both")
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error(f"--seeds {args.seeds}: give a positive number of seeds")
        return [Spec().seed + i for i in range(args.seeds)]
    return args.seed or [Spec().seed]


def prob_losses(args: argparse.Namespace) -> tuple[str, ...]:
    return ("native", "clipped") if args.prob_loss == "both" else (args.prob_loss,)


def variants(parser: argparse.ArgumentParser, args: argparse.Namespace):
    try:
        return parse_variants(args.variants)
    except VariantError as exc:
        parser.error(str(exc))


def fail(prog: str, message: str) -> NoReturn:
    """One error line and exit 2, for problems found after parsing (data file, backend, spec)."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def friendly_errors(prog: str):
    """Context manager turning DataError/SpecError into one line, and showing warnings as one line too."""
    return _FriendlyErrors(prog)


class _FriendlyErrors:
    def __init__(self, prog: str):
        self.prog = prog

    def __enter__(self):
        warnings.showwarning = lambda message, category, *_: sys.stderr.write(f"{self.prog}: warning: {message}\n")
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, (DataError, SpecError, VariantError)):
            fail(self.prog, str(exc))
        return False

"""The command-line front end shared by every experiment module (same flags everywhere).

Bad input (unknown backend, variant, engine or flag value; a nonsensical spec value; a bad data file) ends
with one line ``<prog>: error: <what> ...`` naming what is accepted, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from backends import loop_execs as supported_loop_execs
from backends.base import DEVICES
from backends.keras_backend.engine import STARTUP_LOGS_ENV
from common.data import DataError
from common.dirlock import DirectoryInUse
from common.results import backend_label
from experiments.harness.published import DirtyTree
from experiments.harness.runner import PlannedRun, plan_runs
from common.spec import DATA_ORDERS, INPUT_SCALES, LOOP_EXECS, OPTIMIZERS, SOFTMAXES, Spec, SpecError
from common.variants import VARIANT_NAMES, VariantError, parse_variants

DEFAULT_OUT = "results"


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = message.replace("(choose from ", "(choose from: ").replace("'", "")
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_run_flags(parser: argparse.ArgumentParser, fixed: tuple[str, ...] = ()) -> None:
    """The flags common to every experiment module (README, "Running experiments"), less the ``fixed`` ones
    (destinations a study sets itself, e.g. experiments.mechanism's variants)."""
    defaults = Spec()

    def add(flag: str, *more, **options) -> None:
        if flag.lstrip("-").replace("-", "_") not in fixed:
            parser.add_argument(flag, *more, **options)

    add("--variants", default="all", help=f"all, or names from: {', '.join(VARIANT_NAMES)}")
    add("--epochs", type=int, default=defaults.epochs, help="epochs per run (default %(default)s)")
    add("--seed", type=int, action="append", help="a seed; repeat for several")
    add("--seeds", type=int, help=f"N seeds: {defaults.seed}, {defaults.seed + 1}, ...")
    add("--prob-loss", choices=("native", "clipped", "both"), default="native",
        help="probability cross-entropy of the probs head (default %(default)s)")
    add("--softmax", choices=(*SOFTMAXES, "all"), default=defaults.softmax,
        help="how the probs head's softmax is written: Dense(activation='softmax'), "
             "a Softmax() layer, or the bare op (default %(default)s)")
    add("--loop-exec", choices=(*LOOP_EXECS, "both"),
        help="loop variants: eager or compiled step (default: what the backend's users write)")
    add("--controls", action="store_true",
        help="add the controls of the probs variants: unit-scaled inputs and the clipped loss")
    add("--input-scale", choices=INPUT_SCALES, default=defaults.input_scale)
    add("--data-order", choices=DATA_ORDERS, default=defaults.data_order)
    add("--train-size", type=int, help="first N training images (default: all 60000)")
    add("--test-size", type=int, help="first N test images (default: all 10000)")
    add("--data", metavar="PATH", help="MNIST .npz (default: $MNIST_PATH, caches, download)")
    add("--device", choices=DEVICES, default="cpu")
    add("--out", metavar="DIR", type=output_dir, default=DEFAULT_OUT,
        help="results go to DIR/runs.jsonl")
    add("--keep-going", action="store_true",
        help="keep training after the loss turns NaN/inf (default: stop at that epoch)")
    add("-v", "--verbose", action="store_true", help="print the post's per-epoch cost lines")
    add("--startup-logs", action=KeepStartupLogs,
        help="keep TensorFlow's C++ start-up messages (oneDNN, CUDA probing), hidden by default")


def add_optimizer_flags(parser: argparse.ArgumentParser) -> None:
    """``--optimizer`` and ``--epsilon`` (Adam's), for ``experiments.run``: the plateaus study's optimiser
    ablations pass them to its children; the other studies run the post's Adam and do not forward them."""
    defaults = Spec()
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer,
                        help="adam (the post) or sgd (plain SGD, same learning rate) (default %(default)s)")
    parser.add_argument("--epsilon", type=float, default=defaults.epsilon, help="Adam's epsilon (default %(default)s)")


def optimizer_args(optimizer: str, epsilon: float) -> list[str]:
    """The ``add_optimizer_flags`` arguments that give a run this optimiser and epsilon (``repr``: the float's
    every bit, so the child's spec, and its hash, are the parent's)."""
    return ["--optimizer", optimizer, "--epsilon", repr(epsilon)]


class KeepStartupLogs(argparse.Action):
    """``--startup-logs``: sets ``STARTUP_LOGS_ENV`` as it is parsed, so that the framework loaded later in this
    process, and every process this one starts (``experiments.compare``'s children), keeps its messages."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[STARTUP_LOGS_ENV] = "1"
        setattr(namespace, self.dest, True)


def output_dir(value: str) -> str:
    """``--out DIR``: a directory, or a path one can become; an existing file there is refused up front."""
    path = Path(value)
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise argparse.ArgumentTypeError(f"{blocker} is a file, not a directory; give a directory")
    return value


def base_spec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Spec:
    optimizer = {name: getattr(args, name) for name in ("optimizer", "epsilon") if hasattr(args, name)}
    try:
        return Spec(epochs=args.epochs, input_scale=args.input_scale, data_order=args.data_order,
                    train_size=args.train_size, test_size=args.test_size, stop_on_nonfinite=not args.keep_going,
                    **optimizer)
    except SpecError as exc:
        parser.error(str(exc))


def seeds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    if args.seed and args.seeds:
        parser.error("give --seed (repeatable) or --seeds N, not both")
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error(f"--seeds {args.seeds}: give a positive number of seeds")
        return [Spec().seed + i for i in range(args.seeds)]
    negative = [s for s in args.seed or () if s < 0]
    if negative:  # numpy's generators, which draw the weights and the batch order, take no negative seed
        parser.error(f"--seed {negative[0]}: give a seed of 0 or more")
    return args.seed or [Spec().seed]


def prob_losses(args: argparse.Namespace) -> tuple[str, ...]:
    return ("native", "clipped") if args.prob_loss == "both" else (args.prob_loss,)


def softmaxes(args: argparse.Namespace) -> tuple[str, ...]:
    return SOFTMAXES if args.softmax == "all" else (args.softmax,)


def loop_execs(parser: argparse.ArgumentParser, args: argparse.Namespace, backend: str,
               engine: str | None) -> tuple[str, ...]:
    """``--loop-exec`` for one row: its default when not given; a value the row cannot run is an error."""
    supported = supported_loop_execs(backend, engine)
    if args.loop_exec is None:
        return supported[:1]
    wanted = LOOP_EXECS if args.loop_exec == "both" else (args.loop_exec,)
    missing = [e for e in wanted if e not in supported]
    if missing:
        row = backend_label(backend, engine)
        parser.error(f"--loop-exec {args.loop_exec}: {row} has no {' or '.join(missing)} loop; it runs: "
                     f"{', '.join(supported)}")
    if not any(v.mode == "loop" for v in variants(parser, args)):
        parser.error(f"--loop-exec applies to loop variants; --variants {args.variants} names none")
    return wanted


def plan(parser: argparse.ArgumentParser, args: argparse.Namespace, backend: str,
         engine: str | None) -> list[PlannedRun]:
    """Every run the flags ask of one row (backend, engine), controls included, each once."""
    base, chosen, seed_list = base_spec(parser, args), variants(parser, args), seeds(parser, args)
    axes = dict(softmaxes=softmaxes(args), loop_execs=loop_execs(parser, args, backend, engine))
    runs = plan_runs(base, chosen, seed_list, prob_losses(args), **axes)
    if args.controls:  # what the post's failure needs: saturated (raw) inputs, and the clip
        probs = [v for v in chosen if v.uses_prob_loss]
        runs += plan_runs(base.replace(input_scale="unit"), probs, seed_list, ("native",), **axes)
        runs += plan_runs(base, probs, seed_list, ("clipped",), **axes)
    unique = {(p.spec.hash(), p.variant.name): p for p in runs}
    return list(unique.values())


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
    """Context manager turning DataError/SpecError/DirectoryInUse/DirtyTree into one line, and warnings into one
    line too."""
    return _FriendlyErrors(prog)


class _FriendlyErrors:
    def __init__(self, prog: str):
        self.prog = prog

    def __enter__(self):
        warnings.showwarning = lambda message, category, *_: sys.stderr.write(f"{self.prog}: warning: {message}\n")
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, (DataError, DirectoryInUse, DirtyTree, SpecError, VariantError)):
            fail(self.prog, str(exc))
        return False

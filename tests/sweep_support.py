"""Sweep units for the executor tests: PyTorch's logits loop on one batch of the vendored subset (fast)."""

from experiments.harness import cli
from experiments import run
from experiments.harness import sweep
from tests_support import TEST_SUBSET

TINY_SIZES = ["--epochs", "1", "--train-size", "100", "--test-size", "100"]
TINY = ["--variants", "loop_logits", *TINY_SIZES]


def tiny_units(seeds, data=TEST_SUBSET, variants="loop_logits"):
    """One unit per seed, planned exactly as experiments.run plans its own runs."""
    args = ["--backend", "torch", "--variants", variants, *TINY_SIZES, "--data", str(data)]
    parser = run.build_parser()
    plan = cli.plan(parser, parser.parse_args([*args, *(f"--seed={s}" for s in seeds)]), "torch", None)
    return sweep.make_units({("torch", None): plan}, "cpu", lambda backend, engine, seed: [*args, "--seed", str(seed)])

"""The study that answers the post: which softmax, under which execution, gets stuck in Keras.

    python -m experiments.mechanism --out results/mechanism            # full spec (hours on 2 cores)
    python -m experiments.mechanism --quick --out /tmp/mechanism       # 1 epoch, 6000 images: minutes

Keras on TensorFlow and on tf_keras (legacy Keras 2), one process each; probs head, Keras' native
``categorical_crossentropy``; the output softmax as the post wrote it (``activation``), as a
``keras.layers.Softmax()`` layer, and as the bare ``tf.nn.softmax`` op; each under ``fit``, the post's eager
``GradientTape`` loop, and the same loop step under ``tf.function``. Same flags as experiments.compare
(seeds, epochs, sizes, executor), resumable into the same DIR/runs.jsonl. Writes mechanism.md (the table),
mechanism.png and findings.md (the mechanism cell by cell, with the stuck-state arithmetic).
"""

from __future__ import annotations

import argparse

from experiments.harness import cli
from experiments.mechanism import report as mechanism
from common.spec import Spec
from experiments.compare import command as compare
from experiments.harness import sweep

STUDY = {"backends": "keras", "engines": "tf_keras", "variants": "fit_probs,loop_probs", "softmax": "all",
         "loop_exec": "both", "prob_loss": "native", "controls": False}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="python -m experiments.mechanism", description=__doc__.splitlines()[0])
    cli.add_run_flags(parser, fixed=tuple(STUDY))
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run that still shows every cell: {compare.QUICK} unless given explicitly")
    sweep.add_flags(parser)
    return parser


def report(out_dir: str, spec: Spec) -> str:
    table = mechanism.write_reports(out_dir)
    return mechanism.table_markdown(table) + "\n\nwrote mechanism.md, mechanism.png, findings.md"


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**compare.QUICK)
    args = parser.parse_args(argv)
    for name, value in STUDY.items():
        setattr(args, name, value)
    compare.run(parser, args, argv, report)


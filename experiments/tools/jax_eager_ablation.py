"""Does compilation change the numbers? A few loop steps jitted and eager (``jax.disable_jit``), same start.

Both runs start from the canonical weights and take the same batches with the same dropout keys; only
XLA compilation differs. Prints both per-step loss sequences and their largest difference.

    python -m experiments.tools.jax_eager_ablation --steps 5 --data /path/to/mnist.npz
"""

from __future__ import annotations

import argparse

import numpy as np

from backends import get_backend
from common.data import Dataset, epoch_batches, load_mnist, prepare
from common.spec import INPUT_SCALES, PROB_LOSSES, Spec
from common.variants import VARIANTS
from common.weights import initial_weights


def compare(spec: Spec, head: str, data: Dataset, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-step losses of the first ``steps`` loop steps of epoch 0: (jitted, eager)."""
    backend = get_backend("jax")
    variant = VARIANTS[f"loop_{head}"]
    batches = epoch_batches(spec, 0, len(data.x_train))[:steps]
    jitted, eager = (backend.make_trainer(spec.replace(loop_exec=how), variant, data, initial_weights(spec))
                     .run_epoch(batches) for how in ("compiled", "eager"))
    return jitted, eager


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.tools.jax_eager_ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--head", choices=("logits", "probs"), default="logits")
    parser.add_argument("--prob-loss", choices=PROB_LOSSES, default="clipped",
                        help="probs head only (default %(default)s: native is NaN from step 0 on raw pixels)")
    parser.add_argument("--input-scale", choices=INPUT_SCALES, default="raw")
    parser.add_argument("--data", metavar="PATH", help="MNIST .npz (default: $MNIST_PATH, caches, download)")
    args = parser.parse_args(argv)
    spec = Spec(input_scale=args.input_scale, prob_loss=args.prob_loss)
    jitted, eager = compare(spec, args.head, prepare(spec, load_mnist(args.data)), args.steps)
    print(f"{'step':>4} {'jitted':>14} {'eager':>14} {'difference':>11}")
    for step, (a, b) in enumerate(zip(jitted, eager)):
        print(f"{step:>4} {a:>14.7g} {b:>14.7g} {b - a:>11.3g}")
    print(f"max |eager - jitted| = {np.nanmax(np.abs(eager - jitted)):.3g} over {len(jitted)} steps "
          f"({args.head}{'' if args.head == 'logits' else ', ' + args.prob_loss}, {args.input_scale} inputs)")


if __name__ == "__main__":
    main()

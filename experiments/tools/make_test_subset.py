"""Write the small MNIST subset vendored in ``tests/data`` (so tests need no network and no big file).

    python -m experiments.tools.make_test_subset --data /path/to/mnist.npz

It keeps the first 3,000 training and 1,000 test images in file order, in the layout of the full file.
The result is identified by its content hash (``TEST_SUBSET_SHA256``); the file hash varies with zip
timestamps. Re-running it on the canonical MNIST reproduces the same arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.harness import cli
from common.data import content_sha256, load_mnist

TEST_SUBSET = Path(__file__).resolve().parent.parent / "tests" / "data" / "mnist_subset.npz"
TRAIN_IMAGES, TEST_IMAGES = 3000, 1000


def main(argv: list[str] | None = None) -> Path:
    parser = cli.Parser(prog="python -m experiments.tools.make_test_subset", description=__doc__.splitlines()[0])
    parser.add_argument("--data", metavar="PATH", help="full MNIST .npz (default: $MNIST_PATH, caches)")
    parser.add_argument("--out", metavar="PATH", default=str(TEST_SUBSET))
    args = parser.parse_args(argv)
    with cli.friendly_errors(parser.prog):
        mnist = load_mnist(args.data)
    arrays = {"x_train": mnist.x_train[:TRAIN_IMAGES], "y_train": mnist.y_train[:TRAIN_IMAGES],
              "x_test": mnist.x_test[:TEST_IMAGES], "y_test": mnist.y_test[:TEST_IMAGES]}
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {TRAIN_IMAGES} train + {TEST_IMAGES} test images, content SHA-256 {content_sha256(arrays)}")
    return Path(args.out)


if __name__ == "__main__":
    main()

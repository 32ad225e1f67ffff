"""MNIST for every backend: find the file, verify it, load it, subset, scale, one-hot, and the batch order.

Sources, in order: an explicit path (``--data``), ``$MNIST_PATH``, the Keras cache
``~/.keras/datasets/mnist.npz``, this project's cache ``~/.cache/xent-parity/mnist.npz``, then a download of
the canonical Keras file (checked against its SHA-256). A file of the wrong structure stops with one
``DataError`` that names the path and the fix. A well-formed file is identified by its file hash or its
array-content hash; an unknown but well-formed one is used with a warning, and its content hash goes into
every run record.

Batch order: epoch ``e`` of a run with seed ``s`` visits the training set in the order
``default_rng([s, e]).permutation(n)`` (``data_order='shuffled'``) or file order (``'sequential'``), cut into
``n // batch_size`` full batches; every backend and both modes use exactly these batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np

from common.spec import INPUT_DIM, NUM_CLASSES, Spec

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_FILE_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
# Content hashes (x_train, y_train, x_test, y_test as C-contiguous bytes) of files we know by name.
KNOWN_CONTENT = {
    "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16": "MNIST (canonical 60k/10k split)",
    # tests/data/mnist_subset.npz, written by `python -m experiments.tools.make_test_subset`.
    "d2aa5c44cc8d37c49549cef783a7a590f2d48eb5f77c3f8aa4599584f4b9a631": "MNIST test subset (first 3000/1000)",
}
KNOWN_FILES = {KERAS_FILE_SHA256: "MNIST (canonical Keras download)"}
KERAS_CACHE = Path("~/.keras/datasets/mnist.npz")
PROJECT_CACHE = Path("~/.cache/xent-parity/mnist.npz")
# Expected structure: key -> (dtype, shape without the sample axis).
LAYOUT = {
    "x_train": (np.uint8, (28, 28)),
    "y_train": (np.uint8, ()),
    "x_test": (np.uint8, (28, 28)),
    "y_test": (np.uint8, ()),
}
FIX = "point --data or MNIST_PATH at a good copy of Keras' mnist.npz, or delete it to re-download"


class DataError(RuntimeError):
    """The data file is missing or malformed; the message names the path and the fix."""


class UnknownDataWarning(UserWarning):
    """A well-formed MNIST-layout file whose hash matches no known MNIST file."""


@dataclasses.dataclass(frozen=True)
class Mnist:
    """The four uint8 arrays of an MNIST-layout file, with where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    path: Path
    content_sha256: str
    identity: str  # a known name, or "unknown" (a warning was issued)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Model-ready arrays for one spec: flattened, scaled float32 inputs and one-hot float32 targets."""

    x_train: np.ndarray  # (n_train, 784) float32
    y_train: np.ndarray  # (n_train, 10) float32, one-hot
    x_test: np.ndarray
    y_test: np.ndarray
    data_sha256: str

    @property
    def labels_train(self) -> np.ndarray:
        return self.y_train.argmax(axis=1)

    @property
    def labels_test(self) -> np.ndarray:
        return self.y_test.argmax(axis=1)

    def label_shares(self) -> dict[str, list[float]]:
        """Share of each class among the training and the test rows (what a stuck model's numbers follow)."""
        classes = self.y_train.shape[1]
        return {split: [round(float(s), 6) for s in class_shares(labels, classes)]
                for split, labels in (("train", self.labels_train), ("test", self.labels_test))}


def class_shares(labels: np.ndarray, classes: int) -> np.ndarray:
    """Share of rows of each class: ``bincount(labels) / len(labels)`` (labels: true or predicted classes)."""
    labels = np.asarray(labels).ravel()
    return np.bincount(labels, minlength=classes)[:classes] / max(len(labels), 1)


def find_mnist(explicit: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The first existing source in the documented order; an explicit or ``$MNIST_PATH`` path must exist."""
    for origin, given in (("--data", explicit), ("MNIST_PATH", os.environ.get("MNIST_PATH"))):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise DataError(f"MNIST file not found at {path} (from {origin}); {FIX}")
            return path
    for cached in (KERAS_CACHE.expanduser(), PROJECT_CACHE.expanduser()):
        if cached.is_file():
            return cached
    if not download:
        raise DataError(f"no MNIST file found in {KERAS_CACHE} or {PROJECT_CACHE}; {FIX}")
    return _download(PROJECT_CACHE.expanduser())


def _download(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(KERAS_URL, timeout=60) as response, tempfile.NamedTemporaryFile(
            dir=target.parent, delete=False
        ) as tmp:
            shutil.copyfileobj(response, tmp)
    except OSError as exc:
        raise DataError(
            f"no MNIST file found locally and the download from {KERAS_URL} failed ({exc}); "
            "offline, set MNIST_PATH to a copy of Keras' mnist.npz or pass --data PATH"
        ) from None
    if file_sha256(tmp.name) != KERAS_FILE_SHA256:
        os.unlink(tmp.name)
        raise DataError(f"the file downloaded from {KERAS_URL} has the wrong SHA-256; {FIX}")
    os.replace(tmp.name, target)
    return target


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of x_train, y_train, x_test, y_test as C-contiguous bytes, in that order."""
    digest = hashlib.sha256()
    for key in LAYOUT:
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()


def load_mnist(path: str | os.PathLike | None = None) -> Mnist:
    """Find (see ``find_mnist``), verify and load an MNIST-layout ``.npz``."""
    path = find_mnist(path)
    arrays = _read_npz(path)
    _check_layout(path, arrays)
    content = content_sha256(arrays)
    identity = KNOWN_CONTENT.get(content) or KNOWN_FILES.get(file_sha256(path))
    if identity is None:
        identity = "unknown"
        warnings.warn(
            f"{path} is a well-formed MNIST-layout file but not a known MNIST copy (content SHA-256 {content}); "
            "using it, and recording its hash in every run",
            UnknownDataWarning,
            stacklevel=2,
        )
    return Mnist(**arrays, path=path, content_sha256=content, identity=identity)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is a single .npy array, not an .npz archive of MNIST arrays; {FIX}")
        with npz:
            missing = sorted(set(LAYOUT) - set(npz.files))
            if missing:
                raise DataError(
                    f"{path} lacks the array(s) {', '.join(missing)} (has: {', '.join(npz.files) or 'none'}); "
                    f"expected {', '.join(LAYOUT)}; {FIX}"
                )
            return {key: npz[key] for key in LAYOUT}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        kind = "truncated or corrupt" if zipfile.is_zipfile(path) else "not an .npz (zip) file"
        raise DataError(f"{path} is {kind} ({type(exc).__name__}: {exc}); {FIX}") from None


def _check_layout(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for key, (dtype, sample_shape) in LAYOUT.items():
        array = arrays[key]
        if array.dtype != dtype or array.shape[1:] != sample_shape or array.ndim != 1 + len(sample_shape):
            raise DataError(
                f"{path}: {key} is {array.dtype} {array.shape}, expected {np.dtype(dtype)} (N, "
                f"{', '.join(map(str, sample_shape))}{')' if sample_shape else ')'}; {FIX}".replace("(N, )", "(N,)")
            )
    for split in ("train", "test"):
        n_x, n_y = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if n_x != n_y or n_x == 0:
            raise DataError(f"{path}: x_{split} has {n_x} images but y_{split} has {n_y} labels; {FIX}")
        labels = arrays[f"y_{split}"]
        if labels.max() >= NUM_CLASSES:
            raise DataError(f"{path}: y_{split} has labels up to {labels.max()}, expected 0..9; {FIX}")


def prepare(spec: Spec, mnist: Mnist) -> Dataset:
    """Subset (the first ``train_size``/``test_size`` images in file order), flatten, scale, one-hot."""
    x_train, y_train = _subset(mnist.x_train, mnist.y_train, spec.train_size, "train_size")
    x_test, y_test = _subset(mnist.x_test, mnist.y_test, spec.test_size, "test_size")
    return Dataset(
        x_train=scale(x_train, spec.input_scale),
        y_train=one_hot(y_train),
        x_test=scale(x_test, spec.input_scale),
        y_test=one_hot(y_test),
        data_sha256=mnist.content_sha256,
    )


def _subset(x: np.ndarray, y: np.ndarray, size: int | None, field: str) -> tuple[np.ndarray, np.ndarray]:
    if size is None:
        return x, y
    if size > len(x):
        raise DataError(f"{field}={size} but the file has only {len(x)} images; use --{field.replace('_', '-')} <= {len(x)}")
    return x[:size], y[:size]


def scale(images: np.ndarray, input_scale: str) -> np.ndarray:
    """Flatten to (N, 784) float32; ``raw`` keeps 0..255 (the post), ``unit`` divides by 255."""
    flat = images.reshape(len(images), INPUT_DIM).astype(np.float32)
    return flat / np.float32(255.0) if input_scale == "unit" else flat


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def steps_per_epoch(spec: Spec, n_train: int) -> int:
    """Full batches per epoch; a remainder smaller than one batch is dropped (MNIST: 60000/100, none)."""
    return n_train // spec.batch_size


def epoch_batches(spec: Spec, epoch: int, n_train: int) -> np.ndarray:
    """Row ``i`` holds the training indices of step ``i`` of ``epoch`` (0-based): shape (steps, batch)."""
    if spec.data_order == "sequential":
        order = np.arange(n_train)
    else:
        order = np.random.default_rng([spec.seed, epoch]).permutation(n_train)
    steps = steps_per_epoch(spec, n_train)
    return order[: steps * spec.batch_size].reshape(steps, spec.batch_size).astype(np.int32)

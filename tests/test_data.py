"""MNIST loading: every malformed file gets one clear message; identification; subsets; the batch order."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

from common.data import (DataError, UnknownDataWarning, content_sha256, epoch_batches, find_mnist, load_mnist,
                         prepare)
from common.spec import Spec
from tests_support import TEST_SUBSET, full_mnist, write_npz

FULL_MNIST = full_mnist()


def good_arrays(n_train=200, n_test=50):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def assert_clear(error: pytest.ExceptionInfo, path, *words):
    message = str(error.value)
    assert str(path) in message and "MNIST_PATH" in message or "--" in message
    for word in words:
        assert word in message, message
    assert "\n" not in message


def test_missing_explicit_file(tmp_path):
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "nope.npz")
    assert_clear(error, tmp_path / "nope.npz", "not found", "--data")


def test_missing_file_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_PATH", str(tmp_path / "gone.npz"))
    with pytest.raises(DataError) as error:
        find_mnist()
    assert_clear(error, tmp_path / "gone.npz", "MNIST_PATH")


def test_not_a_zip(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello, not numpy")
    with pytest.raises(DataError) as error:
        load_mnist(path)
    assert_clear(error, path, "not an .npz")


def test_truncated(tmp_path):
    path = write_npz(tmp_path / "full.npz", good_arrays())
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as error:
        load_mnist(cut)
    assert_clear(error, cut)
    assert "truncated" in str(error.value) or "not an .npz" in str(error.value)


def test_wrong_keys(tmp_path):
    arrays = good_arrays()
    arrays["images"] = arrays.pop("x_train")
    path = write_npz(tmp_path / "keys.npz", arrays)
    with pytest.raises(DataError) as error:
        load_mnist(path)
    assert_clear(error, path, "x_train", "images")


@pytest.mark.parametrize(
    "key, bad, words",
    [
        ("x_train", lambda a: a.astype(np.float32), ["x_train", "float32", "uint8"]),
        ("x_test", lambda a: a.reshape(len(a), 784), ["x_test", "(50, 784)"]),
        ("y_train", lambda a: a[:-1], ["199 labels"]),
        ("y_test", lambda a: np.where(a == 0, 10, a).astype(np.uint8), ["y_test", "labels up to 10", "0..9"]),
    ],
)
def test_wrong_dtype_shape_or_labels(tmp_path, key, bad, words):
    arrays = good_arrays()
    arrays[key] = bad(arrays[key])
    path = write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(DataError) as error:
        load_mnist(path)
    assert_clear(error, path, *words)


def test_single_npy_array_is_rejected(tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(DataError) as error:
        load_mnist(path)
    assert_clear(error, path)


def test_unknown_well_formed_file_is_used_with_a_warning(tmp_path):
    arrays = good_arrays()
    path = write_npz(tmp_path / "other.npz", arrays)
    with pytest.warns(UnknownDataWarning, match="not a known MNIST copy"):
        mnist = load_mnist(path)
    assert mnist.identity == "unknown" and mnist.content_sha256 == content_sha256(arrays)


def test_vendored_subset_is_identified_by_content():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mnist = load_mnist(TEST_SUBSET)
    assert mnist.identity.startswith("MNIST test subset")
    assert (len(mnist.x_train), len(mnist.x_test)) == (3000, 1000)
    assert list(mnist.y_train[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's first labels


@pytest.mark.skipif(FULL_MNIST is None, reason="no full MNIST here: set MNIST_PATH to a copy of Keras' mnist.npz")
def test_full_mnist_is_identified_by_content_hash():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mnist = load_mnist(FULL_MNIST)
    assert mnist.content_sha256 == "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"
    assert np.bincount(mnist.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_make_test_subset_reproduces_the_vendored_file(tmp_path):
    source = FULL_MNIST or TEST_SUBSET  # the subset's own prefix is itself
    out = tmp_path / "subset.npz"
    subprocess.run([sys.executable, "-m", "experiments.tools.make_test_subset", "--data", str(source), "--out", str(out)],
                   check=True, capture_output=True)
    assert load_mnist(out).content_sha256 == load_mnist(TEST_SUBSET).content_sha256


def test_source_order_explicit_then_environment(tmp_path, monkeypatch):
    env_file = write_npz(tmp_path / "env.npz", good_arrays())
    monkeypatch.setenv("MNIST_PATH", str(env_file))
    assert find_mnist() == env_file
    assert find_mnist(TEST_SUBSET) == TEST_SUBSET


def test_prepare_subsets_scales_and_one_hot(subset_mnist):
    data = prepare(Spec(train_size=200, test_size=100, input_scale="unit"), subset_mnist)
    assert data.x_train.shape == (200, 784) and data.x_test.shape == (100, 784)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.y_train.shape == (200, 10) and (data.y_train.sum(1) == 1).all()
    assert (data.labels_train == subset_mnist.y_train[:200]).all()
    raw = prepare(Spec(train_size=200, test_size=100), subset_mnist)
    assert raw.x_train.max() == 255.0  # the post's unscaled pixels
    with pytest.raises(DataError, match="train-size"):
        prepare(Spec(train_size=5000), subset_mnist)


def test_batch_order_is_deterministic_and_seeded():
    spec = Spec(train_size=1000)
    first = epoch_batches(spec, 0, 1000)
    assert first.shape == (10, 100)
    assert np.array_equal(first, epoch_batches(spec, 0, 1000))
    assert sorted(first.ravel()) == list(range(1000))  # a permutation: every row once per epoch
    assert not np.array_equal(first, epoch_batches(spec, 1, 1000))
    assert not np.array_equal(first, epoch_batches(spec.replace(seed=778), 0, 1000))
    sequential = epoch_batches(spec.replace(data_order="sequential"), 3, 1000)
    assert np.array_equal(sequential.ravel(), np.arange(1000))
    assert epoch_batches(Spec(train_size=250), 0, 250).shape == (2, 100)  # the partial batch is dropped


def test_batch_order_is_the_same_in_another_process():
    code = "from common.data import epoch_batches; from common.spec import Spec; " \
           "print(epoch_batches(Spec(), 2, 60000)[:3, :5].tolist())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == str(epoch_batches(Spec(), 2, 60000)[:3, :5].tolist())

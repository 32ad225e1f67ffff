"""Shared fixtures: the vendored MNIST subset (no network, no big file) and small specs on it."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# The suite runs a worker per core (pytest-xdist), so each worker's frameworks get one thread: with a pool per
# core each, idle threads spin on the other workers' cores (measured on 2 cores: 3 min 1 s with the default
# pools, 2 min 41 s with one thread). A caller's own setting wins.
for _variable in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_variable, "1")

# Compiled programs are shared by the suite's processes (workers, and the command lines they start), in caches
# made fresh for each suite run, so every run starts cold whatever ran before. JAX has no persistent cache by
# default: its processes recompiled the same steps, ~45 s of the suite's CPU on 2 cores. The size limit turns on
# JAX's file lock, so processes writing and reading one entry at once do not see it half-written. PyTorch's
# inductor keeps such a cache anyway (in /tmp, across runs): here it gets the suite's own. The driver of a
# pytest-xdist run makes the directory; its workers find it in the environment they inherit.
if "XENT_PARITY_TEST_CACHES" not in os.environ:
    os.environ["XENT_PARITY_TEST_CACHES"] = tempfile.mkdtemp(prefix="xent-parity-test-caches-")
    atexit.register(shutil.rmtree, os.environ["XENT_PARITY_TEST_CACHES"], ignore_errors=True)
for _variable, _value in {
        "JAX_COMPILATION_CACHE_DIR": os.path.join(os.environ["XENT_PARITY_TEST_CACHES"], "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_COMPILATION_CACHE_MAX_SIZE": str(2**30),
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(os.environ["XENT_PARITY_TEST_CACHES"], "torchinductor")}.items():
    os.environ.setdefault(_variable, _value)

import pytest

from common.data import Dataset, Mnist, load_mnist, prepare
from common.spec import Spec

from tests_support import TEST_SUBSET


def pytest_configure(config: pytest.Config) -> None:
    """All frameworks share a test process. PyTorch goes first, through its backend, which sets OpenMP's wait
    policy before torch loads (busy-waiting threads ran ~30x slower on 2 cores) — and before TensorFlow, since
    importing TensorFlow first is the order that clashes (docs/design.md, "Performance"). The pytest-xdist
    driver runs no tests, so it loads no framework."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import backends.torch_backend  # noqa: F401


# The suite runs one test file per worker, one worker per core (pytest-xdist, pyproject.toml), and ends when
# its last file does. Workers take files in collection order (``--no-loadscope-reorder``: xdist's own order,
# by number of tests, put the two-test Ray and compare files last, one core idle for their ~30 s): the long
# files go first, by their measured wall time, so that the short ones fill the gaps at the end.
LONGEST_FIRST = ("test_behaviour.py", "test_training_paths.py", "test_parity.py", "test_ray_sweep.py",
                 "test_jax_backend.py", "test_bench.py", "test_versions.py", "test_compare.py", "test_keras_backend.py",
                 "test_torch_backend.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


@pytest.fixture(scope="session")
def subset_mnist() -> Mnist:
    return load_mnist(TEST_SUBSET)


@pytest.fixture(scope="session")
def subset_data(subset_mnist: Mnist) -> Dataset:
    """Raw-pixel subset: 3000 training rows (30 batches of 100), 1000 test rows."""
    return prepare(Spec(), subset_mnist)


@pytest.fixture(scope="session")
def subset_spec() -> Spec:
    """The post's spec for one epoch of the vendored subset."""
    return Spec(epochs=1)

"""The versions study (experiments.versions): argument checks, the environment cache, the child's agreement with
the Keras backend, skipped releases, the atlas' Keras cells probed per release (with TensorFlow and numpy alone,
as in an old release's environment), and (opt-in, slow: it installs TensorFlow 2.13 from the package index)
one old environment built and run."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from common.data import load_mnist, prepare
from common.results import read_records
from common.spec import Spec
from common.training import train
from common.weights import initial_weights
from experiments.versions import command as versions, env as versions_env
from experiments.versions.report import current_since, keras_cells_findings, predicted

from test_atlas import EXPECTED as ATLAS_EXPECTED
from tests_support import TEST_SUBSET

TINY = {"epochs": 1, "train_size": 200, "test_size": 100}
AGREEMENT_CELLS = "layer/fit,layer/eager,op/compiled"
# An old release's environment holds TensorFlow, its Keras and numpy: a sitecustomize on the study's python refuses
# this project's other frameworks and tools, so its children prove they need nothing else.
BLOCKER = """import sys
BLOCKED = {"torch", "jax", "jaxlib", "optax", "tf_keras", "tqdm", "matplotlib", "scipy", "ray", "pytest"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in a versions environment)", name=name)
sys.meta_path.insert(0, Blocker())
"""


def tensorflow_only_python(root: Path) -> Path:
    """This interpreter, with every package but TensorFlow, Keras, numpy and the standard library refused."""
    (root / "blocker").mkdir()
    (root / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    python = root / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{root / "blocker"}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python


def test_tf_versions_are_parsed_sorted_and_checked():
    assert versions.parse_tf_versions("2.21, 2.13,2.9") == ["2.9", "2.13", "2.21"]
    for bad, words in (("2", "MAJOR.MINOR"), ("2.x", "MAJOR.MINOR"), ("1.15", "2.7 and later"),
                       ("2.6", "2.7 and later"), ("3.0", "2.7 and later"), ("2.13,2.13", "twice"), (",", "give")):
        with pytest.raises(ValueError, match=words):
            versions.parse_tf_versions(bad)


def test_cells_are_parsed():
    assert [c.name for c in versions.parse_cells("op/eager,layer/fit")] == ["layer/fit", "op/eager"]
    assert len(versions.parse_cells("all")) == 9
    with pytest.raises(ValueError, match="unknown cell layer/jit"):
        versions.parse_cells("layer/jit")


def test_bad_tf_value_stops_before_anything_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(versions_env, "ensure", lambda *a, **k: pytest.fail("an environment was built"))
    with pytest.raises(SystemExit) as stop:
        versions.main(["--tf", "2.13,2.x", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().endswith("--tf 2.x: give a TensorFlow release as MAJOR.MINOR, like 2.13")


def _fake_venv(root: Path, tf_version: str, requirement: str) -> Path:
    venv = root / "xent-parity" / "venvs" / f"tf-{tf_version}"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    marker = {"requirement": requirement, "versions": {"tensorflow": "2.13.1", "keras": "2.13.1"}}
    (venv / versions_env.MARKER).write_text(json.dumps(marker))
    return venv


def test_a_complete_environment_is_reused_and_rebuild_remakes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    venv = _fake_venv(tmp_path, "2.13", "tensorflow==2.13.*")
    monkeypatch.setattr(versions_env, "install", lambda *a: pytest.fail("pip ran for a cached environment"))
    reused = versions_env.ensure("2.13")
    assert (reused.status, reused.python, reused.versions["tensorflow"]) == ("reused", venv / "bin/python", "2.13.1")

    installs = []
    monkeypatch.setattr(versions_env, "install", lambda path, version: installs.append(path) or "no network")
    rebuilt = versions_env.ensure("2.13", rebuild=True)
    assert installs == [venv] and not (venv / versions_env.MARKER).exists()
    assert rebuilt == versions_env.Skipped("2.13", "no network")


def test_an_environment_without_its_marker_is_installed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    venv = _fake_venv(tmp_path, "2.14", "tensorflow==2.14.*")
    (venv / versions_env.MARKER).unlink()  # an interrupted install
    installs = []
    monkeypatch.setattr(versions_env, "install", lambda path, version: installs.append(version) or "stop here")
    assert versions_env.ensure("2.14").status == "skipped" and installs == ["2.14"]


def test_install_failures_are_one_line_reasons():
    no_wheel = "ERROR: Could not find a version that satisfies ...\nERROR: No matching distribution found for " \
               "tensorflow==2.11.*\n"
    assert versions_env.install_failure(no_wheel, "2.11").startswith("no TensorFlow 2.11 wheel for Python 3.")
    offline = "WARNING: Retrying ... NewConnectionError('...: Failed to establish a new connection')\n" + no_wheel
    assert versions_env.install_failure(offline, "2.11").startswith("no network")
    assert versions_env.install_failure("ERROR: disk full\nWARNING: x is ignored: y\n", "2.12") == \
        "pip could not install TensorFlow 2.12: ERROR: disk full"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One study on the test subset: '2.11' fails to install, '2.21' is this project's own environment, its other
    packages refused (``tensorflow_only_python``)."""
    out = tmp_path_factory.mktemp("versions")
    python = tensorflow_only_python(tmp_path_factory.mktemp("python"))
    installed = {name: metadata.version(name) for name in ("tensorflow", "keras", "numpy")}
    installed["python"] = platform.python_version()

    def ensure(version, rebuild=False):
        if version == "2.11":
            return versions_env.Skipped("2.11", "no TensorFlow 2.11 wheel for Python 3.11 (pip: no match)")
        return versions_env.Environment(version, python, installed, "reused", 0.0)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(versions_env, "ensure", ensure)
        argv = ["--tf", "2.21,2.11", "--cells", AGREEMENT_CELLS, "--data", str(TEST_SUBSET), "--out", str(out)]
        argv += [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
        versions.main(argv)
    return out


def test_a_skipped_release_is_recorded_with_its_reason_and_the_rest_goes_on(study):
    environments = versions.read_environments(study)
    assert [(e["tf_version"], e["status"]) for e in environments] == [("2.11", "skipped"), ("2.21", "reused")]
    assert "no TensorFlow 2.11 wheel" in environments[0]["reason"]
    records = read_records(study / "runs.jsonl")
    cells = sorted(f"{r['softmax']}/{r['loop_exec'] or r['mode']}" for r in records)
    assert cells == sorted(AGREEMENT_CELLS.split(","))
    assert {r["spec"]["tf_version"] for r in records} == {"2.21"}
    assert all(set(r["env"]["frameworks"]) == {"tensorflow", "keras"} for r in records)
    table = (study / "table.md").read_text()
    assert "| 2.11 | skipped |" in table and "no TensorFlow 2.11 wheel" in table
    assert (study / "versions.png").stat().st_size > 0 and "layer/eager" in (study / "findings.md").read_text()


def test_the_child_agrees_with_the_keras_backend_on_the_same_cells(study):
    """The same spec (up to tf_version) trained by the Keras backend in this process gives the same losses."""
    from backends import get_backend

    backend = get_backend("keras", engine="tensorflow")
    data = prepare(Spec(**TINY), load_mnist(TEST_SUBSET))
    for record in read_records(study / "runs.jsonl"):
        spec = Spec.from_dict({**record["spec"], "tf_version": None})
        variant = versions.VARIANTS[record["variant"]]
        ours = train(spec, backend.make_trainer(spec, variant, data, initial_weights(spec)), data)
        cell = f"{record['softmax']}/{record['loop_exec'] or record['mode']}"
        assert record["loss_path"] == ours.loss_path, cell
        np.testing.assert_allclose(record["epoch_costs"], ours.epoch_costs, rtol=1e-5, err_msg=cell)
        assert record["test_loss"] == pytest.approx(ours.test_loss, rel=1e-5), cell
        assert record["test_accuracy"] == ours.test_accuracy, cell
        for theirs, mine in zip(record["diagnostics"], ours.diagnostics, strict=True):
            assert theirs["grad_norm"] == pytest.approx(mine.grad_norm, rel=1e-4), cell
            assert theirs["max_abs_logit"] == pytest.approx(mine.max_abs_logit, rel=1e-5), cell


def test_each_release_probes_the_atlas_keras_cells_as_the_atlas_does(study):
    """TensorFlow, Keras and numpy alone run the atlas' Keras cells, and on TF 2.21 every cell takes the path and
    warns as the atlas' own Keras-on-TensorFlow child pins it (tests/test_atlas.py)."""
    records = versions.read_keras_cells(study)
    cells = {r["cell"]: r for r in records}
    assert {r["tf_version"] for r in records} == {"2.21"} and len(records) == 2 * len(cells)
    assert all(r["versions"] == {"keras": metadata.version("keras"), "tensorflow": metadata.version("tensorflow")}
               for r in records)
    pinned = {cell: state for cell, state in ATLAS_EXPECTED.items() if cell.startswith("keras/tensorflow |")}
    measured = {cell: (r["loss_path"], any(x["warnings"] for x in records if x["cell"] == cell))
                for cell, r in cells.items()}
    assert measured == pinned
    table = (study / "keras_cells.md").read_text()
    assert f"0 of {len(cells)} cells changed" in table and "| every release |" in table
    assert f"{len(cells)} of {len(cells)} cells behave the same" in (study / "findings.md").read_text()


def test_a_cell_is_current_since_the_first_release_that_behaves_as_the_newest():
    clipped, recovered = ("clipped", False), ("recovered_logits", False)
    assert current_since([("2.12", clipped), ("2.13", recovered), ("2.21", recovered)]) == "2.13"
    assert current_since([("2.12", recovered), ("2.13", clipped), ("2.21", recovered)]) == "2.21"
    assert current_since([("2.12", recovered), ("2.21", recovered)]) is None
    assert current_since([("2.12", recovered), ("2.21", ("recovered_logits", True))]) == "2.21"  # a new warning
    text = keras_cells_findings({"a": [("2.12", clipped), ("2.13", recovered)], "b": [("2.12", clipped)]})
    assert "1 of 2 cells behave the same" in text
    assert "- a: `recovered_logits` since 2.13; before: `clipped` in 2.12" in text


def test_the_source_reading_predictions():
    assert predicted("layer", "eager", "2.13")[0] == "stuck" and predicted("layer", "eager", "2.14")[0] == "trains"
    assert predicted("op", "eager", "2.21")[0] == "stuck" and predicted("op", "fit", "2.12")[0] == "trains"


@pytest.mark.slow
def test_an_old_release_builds_and_runs_one_cell(tmp_path, monkeypatch):
    """Installs TensorFlow 2.13 into a fresh cache (network to the package index; minutes) and runs the cell that
    tells 2.13 apart: a Softmax() layer in an eager loop, whose loss clips there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    environment = versions_env.ensure("2.13")
    assert environment.status == "built", environment
    assert environment.versions["tensorflow"].startswith("2.13.")
    base = Spec(**TINY)
    results, last_words = versions.measure(environment.python, base, versions.parse_cells("layer/eager"),
                                           prepare(base, load_mnist(TEST_SUBSET)))
    assert results["layer/eager"]["error"] is None, last_words
    assert results["layer/eager"]["loss_path"] == "clipped_probs"
    assert versions_env.ensure("2.13").status == "reused"

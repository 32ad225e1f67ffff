"""Published results come from committed code and name their machine class: the guard that refuses to write
under docs/results/ from a work tree with uncommitted changes, and the records committed there."""

import json
from pathlib import Path

import pytest

from common.results import RUNS_FILE, read_records
from experiments import run
from experiments.harness import published, sweep
from sweep_support import tiny_units
from tests_support import TEST_SUBSET

ROOT = Path(__file__).resolve().parent.parent
# The files that hold records: a sweep's runs, the reproduction re-runs, the atlas and versions probes.
PUBLISHED_FILES = (RUNS_FILE, "reproduction.jsonl", "probe_reproduction.jsonl", "atlas.jsonl", "keras_cells.jsonl")


def published_records(root: Path) -> list[tuple[str, dict]]:
    """(file:line, record) for every record in a ``PUBLISHED_FILES`` file below ``root``."""
    found = []
    for path in sorted(p for name in PUBLISHED_FILES for p in root.rglob(name)):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                entry = json.loads(line)
                found.append((f"{path.relative_to(root)}:{number}", entry.get("rerun", entry)))
    return found


def dirty(records):
    return [where for where, r in records if (r["env"].get("git_commit") or "").endswith("+dirty")]


def unlabelled(records):
    return [where for where, r in records if not r["env"].get("machine_class")]


@pytest.fixture
def dirty_tree(monkeypatch, tmp_path):
    """A checkout whose docs/results/ is ``tmp_path/docs/results`` and whose tracked files have changes."""
    monkeypatch.setattr(published, "PUBLISHED", tmp_path / "docs" / "results")
    monkeypatch.setattr(published, "git_commit", lambda: "0" * 40 + "+dirty")
    monkeypatch.setattr(published, "tracked_changes", lambda: ["common/spec.py", "README.md"])
    return tmp_path / "docs" / "results"


def test_a_dirty_tree_may_not_write_under_docs_results(dirty_tree, tmp_path):
    with pytest.raises(published.DirtyTree, match=r"under docs/results/.*uncommitted changes to tracked files "
                                                  r"\(common/spec.py, README.md\); commit them first, or write"):
        published.check_publishable(dirty_tree / "cpu-new")
    published.check_publishable(tmp_path / "results")  # anywhere else: written
    with pytest.raises(published.DirtyTree):  # the sweep driver refuses before any child starts
        sweep.run_units(tiny_units([777]), dirty_tree / "cpu-new", sweep.LocalExecutor(cpus=1))
    assert not (dirty_tree / "cpu-new" / RUNS_FILE).exists()


def test_the_command_line_refuses_in_one_line(dirty_tree, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--backend", "torch", "--variants", "loop_logits", "--epochs", "1", "--train-size", "100",
                  "--test-size", "100", "--data", str(TEST_SUBSET), "--out", str(dirty_tree / "cpu-new")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "commit them first" in error
    assert not (dirty_tree / "cpu-new" / RUNS_FILE).exists()


def test_a_clean_tree_may(monkeypatch, dirty_tree):
    monkeypatch.setattr(published, "git_commit", lambda: "0" * 40)
    published.check_publishable(dirty_tree / "cpu-new")


def test_the_checks_name_each_offending_record(tmp_path):
    (tmp_path / "cpu-x").mkdir()
    good = {"env": {"git_commit": "a" * 40, "machine_class": "x86_64-amd-25.17-avx512"}}
    bad = {"env": {"git_commit": "a" * 40 + "+dirty", "cpu": "AMD EPYC"}}
    (tmp_path / "cpu-x" / RUNS_FILE).write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    (tmp_path / "cpu-x" / "reproduction.jsonl").write_text(json.dumps({"verdict": "identical", "rerun": bad}) + "\n")
    records = published_records(tmp_path)
    assert dirty(records) == unlabelled(records) == ["cpu-x/reproduction.jsonl:1", "cpu-x/runs.jsonl:2"]


PUBLISHED_RECORDS = published_records(ROOT / "docs" / "results")


def test_the_checks_read_the_published_records():
    expected = sum(len(read_records(path)) for path in (ROOT / "docs" / "results").rglob(RUNS_FILE))
    assert expected > 0 and len(PUBLISHED_RECORDS) >= expected


def test_every_published_record_is_clean_and_labelled():
    """Every record under docs/results/ (runs, reproduction re-runs, atlas and versions probes) names a committed
    revision and its machine class."""
    assert dirty(PUBLISHED_RECORDS) == []
    assert unlabelled(PUBLISHED_RECORDS) == []

"""experiments.reproduce on an atlas directory: the probe re-run whole, each cell and input set beside its record
(identical, same loss path, another path), the report written, and the exit status."""

import copy
import json

import pytest

from experiments.reproduce import atlas
from experiments.reproduce import command as reproduce
from tests_support import TEST_SUBSET

MACHINE = {"git_commit": "a" * 40, "machine_class": "x86_64-intel-6.207-avx512"}


def probe_record(cell: str, loss: float = 2.375, loss_path: str = "double_softmax") -> dict:
    """A probe record as experiments.atlas writes one (the fields the comparison reads)."""
    return {"cell": cell, "input": "raw", "loss": loss, "reference_loss": 59.53, "grad_finite": True,
            "grad_zero_share": 1.0, "grad_signal": 0.0, "wrong_rows": 88, "loss_path": loss_path, "warnings": [],
            "error": None, "inputs_sha256": "f" * 64, "env": MACHINE}


def test_verdicts():
    record = probe_record("torch | nn.CrossEntropyLoss() | softmax")
    assert atlas.ProbePair(record, copy.deepcopy(record)).verdict == "identical"
    moved = atlas.ProbePair(record, {**record, "loss": 2.376})
    assert moved.verdict == "same_path" and moved.loss_difference == pytest.approx(1e-3)
    assert atlas.ProbePair(record, {**record, "loss_path": "logits"}).verdict == "different_path"
    assert atlas.ProbePair(record, {**record, "warnings": ["UserWarning: ..."]}).verdict == "different_path"
    assert atlas.ProbePair(record, None).verdict == "different_path"


def test_pairs_follow_the_records_and_need_the_same_inputs():
    records = [probe_record("a"), probe_record("b")]
    pairs = atlas.pair(records, [records[1]])
    assert [(p.original["cell"], p.rerun is not None) for p in pairs] == [("a", False), ("b", True)]
    with pytest.raises(atlas.ProbeFailed, match="other inputs.*--data"):
        atlas.pair(records, [{**records[0], "inputs_sha256": "0" * 64}])


@pytest.mark.parametrize("changed, status", [(False, 0), (True, 1)])
def test_the_command_reports_an_atlas_directory(tmp_path, monkeypatch, capsys, changed, status):
    """DIR with atlas.jsonl and no runs.jsonl: the probe is re-run (here: a stand-in), probe_reproduction.md and
    probe_reproduction.jsonl are written beside the records, and a changed loss path exits 1."""
    records = [probe_record("a"), probe_record("b")]
    (tmp_path / atlas.ATLAS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    reruns = [records[0], {**records[1], "loss_path": "clipped"} if changed else records[1]]
    monkeypatch.setattr(atlas, "rerun_probe", lambda data, scratch: reruns)
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(tmp_path), "--data", str(TEST_SUBSET)])
    assert exit_info.value.code == status
    report_file, pairs_file = atlas.PROBE_FILES
    report = (tmp_path / report_file).read_text()
    verdicts = [json.loads(line)["verdict"] for line in (tmp_path / pairs_file).read_text().splitlines()]
    assert verdicts == ["identical", "different_path" if changed else "identical"]
    assert (f"| b | raw | {MACHINE['machine_class']} | different_path | double_softmax → clipped |" in report) == changed
    assert "2 probe records re-run" in capsys.readouterr().out


def test_a_rerun_keeps_the_pairs_another_machine_class_made(tmp_path, monkeypatch):
    """The pairs file holds an earlier re-run of this class (replaced) and one of another class (kept, with its
    command); the report counts both classes and names each one's command, and the exit status is this re-run's
    (the kept pair's other path does not make it 1)."""
    records = [probe_record("a"), probe_record("b")]
    (tmp_path / atlas.ATLAS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    elsewhere = {**records[0], "loss_path": "clipped", "env": {**MACHINE, "machine_class": "x86_64-amd-25.1-avx2"}}
    earlier = [atlas.ProbePair(records[0], elsewhere, "python -m experiments.reproduce D --probe").to_dict(),
               atlas.ProbePair(records[1], {**records[1], "loss": 9.0}, "an earlier run here").to_dict()]
    report_file, pairs_file = atlas.PROBE_FILES
    (tmp_path / pairs_file).write_text("".join(json.dumps(line) + "\n" for line in earlier))
    monkeypatch.setattr(atlas, "rerun_probe", lambda data, scratch: records)
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(tmp_path), "--data", str(TEST_SUBSET)])
    assert exit_info.value.code == 0
    lines = [json.loads(line) for line in (tmp_path / pairs_file).read_text().splitlines()]
    assert [(line["cell"], line["verdict"], line["rerun"]["env"]["machine_class"]) for line in lines] == [
        ("a", "different_path", "x86_64-amd-25.1-avx2"), ("a", "identical", MACHINE["machine_class"]),
        ("b", "identical", MACHINE["machine_class"])]
    report = (tmp_path / report_file).read_text()
    assert ("re-run on x86_64-amd-25.1-avx2 (another machine class): 1 different_path "
            "(`python -m experiments.reproduce D --probe`)") in report
    assert f"re-run on {MACHINE['machine_class']} (the same machine class): 2 identical (`python -m " in report

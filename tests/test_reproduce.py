"""experiments.reproduce: re-running a results directory's records and telling identical, same outcome and
different outcome apart; picking records (filters, a fixed sample); bad input exits 2."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.results import RUNS_FILE, append_record, read_records, record_key
from common.spec import Spec
from experiments import run
from experiments.atlas import train_child
from experiments.harness import cli, sweep
from experiments.harness.report import classify
from experiments.reproduce import command as reproduce
from experiments.reproduce.report import PAIRS_FILE, REPORT_FILE, Pair
from tests_support import TEST_SUBSET

ROOT = Path(__file__).resolve().parent.parent
# One batch of JAX's logits loop on the vendored subset: a quick record, made in seconds.
TINY_JAX = ["--backend", "jax", "--variants", "loop_logits", "--epochs", "1", "--train-size", "100",
            "--test-size", "100", "--data", str(TEST_SUBSET), "--seed", "777"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A results directory with one record, made by the sweep as experiments.compare makes its records."""
    out = tmp_path_factory.mktemp("published")
    parser = run.build_parser()
    plan = cli.plan(parser, parser.parse_args(TINY_JAX), "jax", None)
    units = sweep.make_units({("jax", None): plan}, "cpu", lambda backend, engine, seed: TINY_JAX)
    sweep.run_units(units, out, sweep.LocalExecutor(cpus=1))
    [record] = read_records(out / RUNS_FILE)
    assert record["status"] == "ok"
    return record


def reproduce_dir(directory, *flags):
    return subprocess.run([sys.executable, "-m", "experiments.reproduce", str(directory), "--data", str(TEST_SUBSET),
                           *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_rerun_on_this_machine_is_identical(published, tmp_path):
    """... and it replaces the pairs an earlier re-run made on this machine class, not another class's."""
    append_record(tmp_path / RUNS_FILE, published)
    elsewhere = {**published, "env": {**published["env"], "machine_class": "x86_64-other-1.1-avx"}}
    earlier = [Pair(published, elsewhere, "python -m experiments.reproduce D elsewhere"),
               Pair(published, {**published, "test_accuracy": 0.01}, "an earlier run here")]
    (tmp_path / PAIRS_FILE).write_text("".join(json.dumps(p.to_dict()) + "\n" for p in earlier))
    done = reproduce_dir(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    kept, pair = [json.loads(line) for line in (tmp_path / PAIRS_FILE).read_text().splitlines()]
    assert kept["machine_class"]["rerun"] == "x86_64-other-1.1-avx"
    assert kept["command"] == "python -m experiments.reproduce D elsewhere"
    assert pair["command"].startswith("python -m experiments.reproduce " + str(tmp_path))
    assert pair["verdict"] == "identical" and pair["accuracy_difference"] == 0
    assert pair["machine_class"]["record"] == pair["machine_class"]["rerun"] == published["env"]["machine_class"]
    assert pair["rerun"]["env"]["machine"]["settings"]["OMP_NUM_THREADS"] == "1"  # the record's threads
    report = (tmp_path / REPORT_FILE).read_text()
    assert "2 records re-run: 2 identical" in report and published["env"]["machine_class"] in report
    assert "re-run on x86_64-other-1.1-avx (another machine class): 1 identical (`python -m experiments." in report


def test_an_edited_record_is_a_different_outcome(published, tmp_path):
    edited = copy.deepcopy(published)
    edited["test_accuracy"] = 0.05 if classify(published) == "trains" else 0.95  # across the stuck line
    append_record(tmp_path / RUNS_FILE, edited)
    done = reproduce_dir(tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    [pair] = [json.loads(line) for line in (tmp_path / PAIRS_FILE).read_text().splitlines()]
    assert pair["verdict"] == "different_outcome"
    assert pair["accuracy_difference"] == pytest.approx(abs(edited["test_accuracy"] - published["test_accuracy"]))
    assert "| different_outcome |" in (tmp_path / REPORT_FILE).read_text()


def test_verdicts(published):
    assert Pair(published, published).verdict == "identical"
    moved = copy.deepcopy(published)
    moved["epoch_costs"][-1] += 1e-6  # one figure off in its last digits: same outcome, by that much
    pair = Pair(published, moved)
    assert pair.verdict == "same_outcome" and pair.last_cost_difference == pytest.approx(1e-6)
    failed = {**published, "status": "failed", "epoch_costs": [], "test_loss": None, "test_accuracy": None}
    pair = Pair(published, failed)  # a re-run that failed: its outcome is "failed"
    assert pair.verdict == "different_outcome" and pair.accuracy_difference is None


def test_picking_records(published):
    records = []
    for seed, (backend, engine) in enumerate([("jax", None), ("keras", "jax"), ("torch", None)] * 4):
        records.append({**published, "seed": seed, "backend": backend, "engine": engine})
    first = reproduce.sample(records, 5, seed=0)
    assert first == reproduce.sample(records, 5, seed=0) and len(first) == 5  # the same draw every time
    assert [r["seed"] for r in first] == sorted(r["seed"] for r in first)  # in file order
    assert first != reproduce.sample(records, 5, seed=1)
    assert reproduce.sample(records, 50, seed=0) == records
    assert {r["backend"] for r in reproduce.pick(records, {"jax"}, False)} == {"jax"}
    assert {r["engine"] for r in reproduce.pick(records, {"keras/jax"}, False)} == {"jax"}
    full = {**published, "spec": {**published["spec"], "train_size": None}}
    assert reproduce.pick([published, full], set(), quick_only=True) == [published]


def test_a_spec_the_command_line_cannot_make_is_skipped_with_the_reason(published):
    args, why_not = reproduce.rerun_args(published, TEST_SUBSET)
    assert why_not is None and args[args.index("--seed") + 1] == "777" and "--variants" in args
    other_dropout = {**published, "spec": {**published["spec"], "drop_rate": 0.5}}
    args, why_not = reproduce.rerun_args(other_dropout, TEST_SUBSET)
    assert args is None and why_not == "experiments.run has no flags for its spec's drop_rate"


def versions_record(published, softmax="op", loop_exec="eager", **spec):
    """``published`` dressed as a cell of the versions study (Keras on TF 2.13, probs head)."""
    cell = Spec(epochs=1, train_size=100, test_size=100, prob_loss="native", softmax=softmax, loop_exec=loop_exec,
                tf_version="2.13").replace(**spec)
    mode = "loop" if loop_exec else "fit"
    return {**published, "backend": "keras", "engine": "tensorflow", "variant": f"{mode}_probs", "mode": mode,
            "softmax": softmax, "loop_exec": loop_exec,
            "spec": cell.to_dict(), "spec_hash": cell.hash()}


def test_a_versions_cell_is_re_run_by_the_versions_study(published):
    args, why_not = reproduce.rerun_args(versions_record(published), TEST_SUBSET)
    assert why_not is None and args == ["--tf", "2.13", "--cells", "op/eager", "--epochs", "1", "--seed", "777",
                                        "--data", str(TEST_SUBSET), "--train-size", "100", "--test-size", "100"]
    args, why_not = reproduce.rerun_args(versions_record(published, input_scale="unit"), TEST_SUBSET)
    assert args is None and why_not == "python -m experiments.versions has no flags for its spec's input_scale"


def test_one_versions_process_re_runs_a_releases_cells(published, tmp_path, monkeypatch):
    """Two cells of one release: one experiments.versions process with both; its records pair with theirs."""
    records = [versions_record(published), versions_record(published, softmax="layer", loop_exec=None)]
    arguments = {record_key(r): reproduce.rerun_args(r, TEST_SUBSET)[0] for r in records}
    commands = []

    def versions_study(module, command, timeout):
        assert module == "experiments.versions"
        commands.append(command)
        out = Path(command[command.index("--out") + 1])
        for record in records:
            append_record(out / RUNS_FILE, record)
        return None

    monkeypatch.setattr(sweep, "run_module", versions_study)
    reruns = reproduce.rerun_versions(records, arguments, tmp_path)
    [command] = commands
    assert command[command.index("--cells") + 1] == "op/eager,layer/fit" and "--tf" in command
    assert set(reruns) == {record_key(r) for r in records}


@pytest.mark.parametrize("optimizer, epsilon", [("sgd", 1e-7), ("adam", 1e-3)])
def test_the_plateau_studys_optimiser_ablations_are_re_run_with_their_optimiser(published, optimizer, epsilon):
    """A record of another optimiser or Adam epsilon (experiments.plateaus) re-runs with exactly its spec."""
    ablation = {**published, "spec": {**published["spec"], "optimizer": optimizer, "epsilon": epsilon}}
    args, why_not = reproduce.rerun_args(ablation, TEST_SUBSET)
    assert why_not is None, why_not
    parser = run.build_parser()
    [planned] = cli.plan(parser, parser.parse_args(args), "jax", None)
    assert planned.spec.to_dict() == ablation["spec"]


def test_bad_input_exits_2(published, tmp_path):
    done = reproduce_dir(tmp_path)
    assert done.returncode == 2 and f"no results file at {tmp_path / RUNS_FILE}" in done.stderr
    append_record(tmp_path / RUNS_FILE, published)
    done = reproduce_dir(tmp_path, "--backends", "torch")
    assert done.returncode == 2 and "none of its 1 finished records is left to re-run" in done.stderr
    assert reproduce_dir(tmp_path, "--sample", "0").returncode == 2
    assert not (tmp_path / REPORT_FILE).exists()


ATLAS_CELL = "keras/jax | keras.losses.categorical_crossentropy | softmax | from_logits=True | eager"


def atlas_record(published, **spec):
    """``published`` dressed as a run of the atlas' quick training stage (a Keras-on-JAX cell, unit inputs)."""
    cell = Spec(epochs=1, train_size=6000, test_size=2000, input_scale="unit", loop_exec="compiled",
                loss_cell=ATLAS_CELL).replace(**spec)
    return {**published, "backend": "keras", "engine": "jax", "variant": "loop_logits", "mode": "loop",
            "loop_exec": "compiled", "input_scale": cell.input_scale, "spec": cell.to_dict(), "spec_hash": cell.hash()}


def test_an_atlas_cell_is_re_run_by_the_atlas_training_child(published):
    """The unit trains exactly the record's run (its key) with the training child's own arguments."""
    record = atlas_record(published)
    args, why_not = reproduce.rerun_args(record, TEST_SUBSET)
    assert why_not is None, why_not
    unit = reproduce.unit_of(record, args)
    assert unit.module == "experiments.atlas.train_child" and (unit.backend, unit.engine) == ("keras", "jax")
    assert unit.keys() == [record_key(record)]
    parsed = train_child.build_parser().parse_args([*args, "--out", "unused"])
    assert (parsed.group, parsed.cell, parsed.input_scale, parsed.seed, parsed.train_size) == (
        "keras/jax", [ATLAS_CELL], "unit", 777, 6000)
    assert Pair(record, record).label.endswith(" " + ATLAS_CELL.replace("|", "\\|"))  # a table cell names the call
    args, why_not = reproduce.rerun_args(atlas_record(published, drop_rate=0.5), TEST_SUBSET)
    assert args is None and why_not == "the atlas' training stage has no flags for its spec's drop_rate"


def test_an_atlas_directory_re_runs_its_training_records_and_its_probe_on_request(tmp_path, monkeypatch):
    """With runs.jsonl beside atlas.jsonl the records are re-run; --probe re-runs the probe instead."""
    (tmp_path / "atlas.jsonl").write_text("{}\n")
    (tmp_path / RUNS_FILE).write_text("")
    monkeypatch.setattr(reproduce, "reproduce_atlas", lambda args, argv: sys.exit(7))
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(tmp_path), "--data", str(TEST_SUBSET)])
    assert exit_info.value.code == 2  # the (empty) training records, not the probe
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(tmp_path), "--probe", "--data", str(TEST_SUBSET)])
    assert exit_info.value.code == 7
    (tmp_path / "atlas.jsonl").unlink()
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(tmp_path), "--probe"])
    assert exit_info.value.code == 2

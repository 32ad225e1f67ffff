"""Run a list of (spec, variant) pairs on one backend, appending a record per run; resumable.

Used by every experiment module. Runs whose key (spec hash, backend, engine, variant, seed, device) already
finished in ``DIR/runs.jsonl`` are skipped; a run that raises is recorded as ``failed`` and the sweep goes on;
each record is appended the moment its run ends, so an interrupt loses only the run in progress. A run whose
spec names a ``loss_cell`` trains with the loss ``given_loss(spec)`` returns (``common.training.GivenLoss``):
the study that names the loss builds it, in the backend's framework.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from common.data import Dataset, load_mnist, prepare
from common.diagnostics import EpochDiagnostics
from common.results import (RUNS_FILE, append_record, backend_label, capture_env, finished_keys, make_record,
                            read_records, record_key, run_key)
from common.spec import Spec
from common.training import GivenLoss, train
from common.variants import VARIANTS, Variant
from common.weights import initial_weights
from experiments.harness.published import check_publishable


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    spec: Spec
    variant: Variant


def plan_runs(base: Spec, variants: Iterable[Variant], seeds: Iterable[int], prob_losses: Iterable[str],
              softmaxes: Iterable[str] = ("activation",), loop_execs: Iterable[str] = ("eager",)) -> list[PlannedRun]:
    """Seeds x variants x probability-loss flavours x softmax forms x loop executions.

    Axes that do not apply collapse to one run: a logits variant has no probability loss or softmax (its spec
    keeps the defaults), a fit variant no loop execution (``loop_exec=None``).
    """
    prob_losses, softmaxes, loop_execs = tuple(prob_losses), tuple(softmaxes), tuple(loop_execs)
    plan = []
    for seed in seeds:
        for variant in variants:
            probs = variant.uses_prob_loss
            for flavour, softmax in itertools.product(prob_losses if probs else ("native",),
                                                      softmaxes if probs else ("activation",)):
                for loop_exec in loop_execs if variant.mode == "loop" else (None,):
                    spec = base.replace(seed=seed, prob_loss=flavour, softmax=softmax, loop_exec=loop_exec)
                    plan.append(PlannedRun(spec, variant))
    return plan


def run_sweep(backend: Any, plan: list[PlannedRun], out_dir: str | Path, data_path: str | None = None,
              verbose: bool = False,
              given_loss: Callable[[Spec], GivenLoss] | None = None) -> list[dict[str, Any]]:
    """Run ``plan`` on ``backend``; return the records of every planned run (new and already finished).
    ``given_loss`` builds the loss of a spec with a ``loss_cell`` (module docstring).

    Refuses (``DirtyTree``) to write under docs/results/ from uncommitted code (``published``)."""
    check_publishable(out_dir)
    out = Path(out_dir) / RUNS_FILE
    keys = {id(p): run_key(p.spec.hash(), backend.name, backend.engine, p.variant.name, p.spec.seed,
                           backend.device) for p in plan}
    done = finished_keys(out)
    todo = [p for p in plan if keys[id(p)] not in done]
    if len(todo) < len(plan):
        tqdm.write(f"{out}: {len(plan) - len(todo)} of {len(plan)} runs already finished; skipping them")
    if todo:
        mnist = load_mnist(data_path)
        env = capture_env(backend.versions(), backend.device_name(), backend.threads(), backend.kernel_info())
        datasets: dict[tuple, Dataset] = {}  # one prepared copy per (scale, subset) in the plan
        for planned in todo:
            spec = planned.spec
            shape = (spec.input_scale, spec.train_size, spec.test_size)
            if shape not in datasets:
                datasets[shape] = prepare(spec, mnist)
            append_record(out, _run_one(backend, planned, datasets[shape], env, verbose, given_loss))
    wanted = set(keys.values())
    latest = {record_key(r): r for r in read_records(out) if record_key(r) in wanted}
    return [latest[keys[id(p)]] for p in plan if keys[id(p)] in latest]


def _run_one(backend: Any, planned: PlannedRun, data: Dataset, env: dict, verbose: bool,
             given_loss: Callable[[Spec], GivenLoss] | None) -> dict[str, Any]:
    spec, variant = planned.spec, planned.variant
    label = f"{backend_label(backend.name, backend.engine)} {variant.name}"
    if variant.uses_prob_loss:
        label += f" ({spec.prob_loss}, {spec.softmax})"
    if spec.loop_exec:
        label += f" {spec.loop_exec}"
    if spec.loss_cell:
        label += f" [{spec.loss_cell}, {spec.input_scale}]"
    record_args = dict(spec=spec, variant=variant, backend=backend.name, engine=backend.engine,
                       device=backend.device, data_sha256=data.data_sha256, env=env,
                       label_shares=data.label_shares())
    # Under experiments.compare the sweep's overall bar holds line 0; this run's bar goes below it.
    position = int(os.environ.get("XENT_PARITY_BAR_POSITION", "0"))
    bar = tqdm(total=spec.epochs, desc=label, unit="epoch", leave=False, disable=None, position=position)

    def on_epoch(epoch: int, cost: float, diagnostics: EpochDiagnostics) -> None:
        bar.update(1)
        bar.set_postfix(cost=f"{cost:.4g}", saturated=f"{diagnostics.saturated_share:.0%}")
        if verbose:
            tqdm.write("[Epoch: %7d] cost = %5.5f" % (epoch, cost))  # the post's line

    try:
        loss = {"loss": given_loss(spec)} if spec.loss_cell and given_loss else {}  # none: the backend refuses
        trainer = backend.make_trainer(spec, variant, data, initial_weights(spec), **loss)
        outcome = train(spec, trainer, data, on_epoch)
    except Exception as exc:  # a failed run is recorded and the sweep goes on
        if verbose:
            traceback.print_exc()
        tqdm.write(f"{label}: failed: {type(exc).__name__}: {exc}")
        return make_record(**record_args, error=f"{type(exc).__name__}: {exc}")
    finally:
        bar.close()
    return make_record(**record_args, outcome=outcome)


def format_summary(records: list[dict[str, Any]]) -> str:
    """A fixed-width table of runs, one row each, with the post's accuracy beside ours."""
    header = f"{'backend':<16} {'variant':<12} {'prob_loss':<9} {'softmax':<10} {'loop':<8} {'input':<5} " \
             f"{'seed':>5} {'status':<9} {'cost 1st':>9} {'cost last':>9} {'test acc':>8} {'post':>6} " \
             f"{'loss path':<17} {'train s':>8}"
    lines = [header, "-" * len(header)]
    for r in records:
        costs = r["epoch_costs"]
        backend = backend_label(r["backend"], r["engine"])
        lines.append(
            f"{backend:<16} {r['variant']:<12} {r['prob_loss'] or '-':<9} {r['softmax'] or '-':<10} "
            f"{r['loop_exec'] or '-':<8} {r['input_scale']:<5} {r['seed']:>5} {r['status']:<9} "
            f"{_num(costs[0] if costs else None, '.5g'):>9} {_num(costs[-1] if costs else None, '.5g'):>9} "
            f"{_num(r['test_accuracy'], '.4f'):>8} {VARIANTS[r['variant']].post.test_accuracy:>6.4f} "
            f"{r['loss_path'] or '-':<17} {_num(r['wall_seconds'], '.1f'):>8}"
        )
    return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    """``value`` in format ``spec``; ``nan`` for a missing (non-finite) figure."""
    return "nan" if value is None else format(value, spec)

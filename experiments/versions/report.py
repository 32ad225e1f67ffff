"""The versions study's report, from its records alone: a release x cell table, a plot, and findings.

A cell's outcome is ``experiments.harness.report.classify`` (trains / stuck / diverged / failed) plus the loss path the
child measured in that cell (R: logits recovered behind the softmax, C: probabilities clipped, L: raw log).
The findings walk each cell through the releases, name the first release where it changes, and hold every
cell against what reading the sources predicts (``predicted``).

The atlas' Keras cells probed in each release (DIR/keras_cells.jsonl) get keras_cells.md: every cell's behaviour
per release — its loss path (``experiments.atlas.paths``) and ⚠ if it warned — and the first release from
which every release measured behaves as the newest does ("current since"); findings.md lists the cells that
changed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.harness.report import MARKS, classify
from common.spec import SOFTMAXES, Spec

EXECS = ("fit", "eager", "compiled")
COLUMNS = tuple(f"{s}/{e}" for s in SOFTMAXES for e in EXECS)
PATH_CODES = {"recovered_logits": "R", "clipped_probs": "C", "log_probs": "L", "logits": "Z"}
FORMS = {"activation": "Dense(10, activation='softmax')", "layer": "Dense(10) + keras.layers.Softmax()",
         "op": "Dense(10) + a layer calling tf.nn.softmax"}


def predicted(softmax: str, execution: str, tf_version: str) -> tuple[str, str]:
    """What reading the sources predicts for a cell, and why.

    Traced (fit, tf.function): Keras' cross-entropy finds the ``Softmax`` op behind a graph tensor
    (``output.op.type == "Softmax"``, in tf-keras' ``backend.py`` and Keras 3's ``_get_logits``). Eager: only
    an output carrying ``_keras_logits`` can be rescued: the softmax activation sets it from TF 2.4, the
    ``Softmax`` layer only from Keras 2.14 (tensorflow#60314 moved the caching into ``backend.softmax``), a
    bare ``tf.nn.softmax`` never.
    """
    if execution != "eager":
        return "trains", "a traced graph shows the Softmax op, whose input the loss takes as logits"
    if softmax == "activation":
        return "trains", "the softmax activation keeps its logits on the output (_keras_logits) from TF 2.4"
    if softmax == "layer":
        if _key(tf_version) >= (2, 14):
            return "trains", "keras.layers.Softmax goes through backend.softmax, which keeps the logits, from 2.14"
        return "stuck", "keras.layers.Softmax calls tf.nn.softmax directly before 2.14: no logits kept"
    return "stuck", "a bare tf.nn.softmax keeps no logits and an eager tensor has no op to look behind"


def _key(tf_version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in tf_version.split("."))


def column(record: dict[str, Any]) -> str:
    return f"{record['softmax']}/{record['loop_exec'] or record['mode']}"


def study_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest spec family's versions-study records (a ``tf_version`` in the spec), latest per cell."""
    study = [r for r in records if r["spec"].get("tf_version")]
    if not study:
        return []
    wanted = _family(study[-1])
    latest = {}
    for r in study:
        if _family(r) == wanted:
            latest[(r["spec"]["tf_version"], column(r))] = r
    return list(latest.values())


def _family(record: dict[str, Any]) -> str:
    spec = Spec.from_dict(record["spec"])
    return spec.replace(softmax="activation", loop_exec=None, tf_version=None).hash()


def skipped_versions(environments: list[dict[str, Any]], measured: set[str]) -> dict[str, str]:
    """Releases whose latest environment attempt was skipped and that have no measurements: the reason."""
    latest = {e["tf_version"]: e for e in environments}
    return {v: e["reason"] for v, e in latest.items() if e["status"] == "skipped" and v not in measured}


def cell_text(record: dict[str, Any]) -> str:
    outcome = classify(record)
    if outcome == "failed":
        return "✗ failed"
    accuracy = "nan" if record["test_accuracy"] is None else f"{record['test_accuracy']:.3f}"
    return f"{accuracy}{MARKS[outcome]} {PATH_CODES.get(record['loss_path'], '?')}"


def release_label(tf_version: str, records: list[dict[str, Any]]) -> str:
    frameworks = records[0]["env"]["frameworks"]
    return f"{tf_version} (TF {frameworks['tensorflow']}, Keras {frameworks['keras']})"


def by_version(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: _key(r["spec"]["tf_version"])):
        grouped.setdefault(r["spec"]["tf_version"], {})[column(r)] = r
    return grouped


def table_markdown(grouped: dict, skipped: dict[str, str]) -> str:
    lines = ["| release | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for version in sorted({*grouped, *skipped}, key=_key):
        if version in grouped:
            cells = grouped[version]
            label = release_label(version, list(cells.values()))
            lines.append(f"| {label} | " + " | ".join(cell_text(cells[c]) if c in cells else "—" for c in COLUMNS)
                         + " |")
        else:
            lines.append(f"| {version} | " + " | ".join("skipped" for _ in COLUMNS) + " |")
    legend = ("Cells: test accuracy, ⚠ stuck (accuracy < 0.3) / ✗ diverged or failed, and the loss path measured "
              "in that cell: R = logits recovered behind the softmax, C = probabilities clipped to "
              "[1e-7, 1 - 1e-7], L = raw log of the probabilities.")
    notes = [f"- {v}: skipped — {reason}" for v, reason in sorted(skipped.items(), key=lambda i: _key(i[0]))]
    return "\n".join(lines) + "\n\n" + legend + ("\n\n" + "\n".join(notes) if notes else "")


def table_csv(grouped: dict) -> str:
    rows = ["tf_version,tensorflow,keras,cell,outcome,test_accuracy,loss_path,first_cost,last_cost"]
    for version, cells in grouped.items():
        for name in COLUMNS:
            if name in cells:
                r = cells[name]
                costs = r["epoch_costs"] or [None]
                fw = r["env"]["frameworks"]
                rows.append(",".join(str(x if x is not None else "") for x in (
                    version, fw["tensorflow"], fw["keras"], name, classify(r), r["test_accuracy"],
                    r["loss_path"], costs[0], costs[-1])))
    return "\n".join(rows) + "\n"


def findings_markdown(grouped: dict, skipped: dict[str, str], spec: Spec) -> str:
    versions = list(grouped)
    lines = ["# Findings: when each rescue appeared\n",
             f"Spec: {_spec_summary(spec)}. Releases measured: {', '.join(versions)}"
             + (f"; skipped: {', '.join(skipped)}" if skipped else "") + ".\n",
             "Each cell: how the softmax is written × how the model trains (fit; a GradientTape loop, eager or "
             "under tf.function), the probs head with Keras' own `categorical_crossentropy(from_logits=False)`."
             " A cell 'changes' where its outcome or its loss path differs from the release before.\n"]
    for softmax in SOFTMAXES:
        lines.append(f"## `{softmax}`: {FORMS[softmax]}\n")
        for execution in EXECS:
            name = f"{softmax}/{execution}"
            lines.append(_cell_finding(name, softmax, execution, grouped))
        lines.append("")
    lines.append("## Environments\n")
    lines.extend(environment_lines(grouped))
    lines.extend(f"- TF {v}: skipped — {reason}" for v, reason in skipped.items())
    return "\n".join(lines) + "\n"


def environment_lines(grouped: dict) -> list[str]:
    """One line per release: what ran, where, from which commit, when."""
    lines = []
    for version, cells in grouped.items():
        records = list(cells.values())
        env, fw = records[0]["env"], records[0]["env"]["frameworks"]
        finished = min(r["finished_at"] for r in records)[:10]
        lines.append(f"- TF {version}: tensorflow {fw['tensorflow']}, keras {fw['keras']}, numpy {env['numpy']}, "
                     f"Python {env['python']} (environment {env.get('venv')}); CPU {env.get('cpu')} "
                     f"x{env.get('cpu_count')}; commit {env.get('git_commit')}; finished {finished}")
    return lines


def _cell_finding(name: str, softmax: str, execution: str, grouped: dict) -> str:
    history = [(v, cells[name]) for v, cells in grouped.items() if name in cells]
    if not history:
        return f"- **{name}**: not measured."
    states = [(v, classify(r), r["loss_path"]) for v, r in history]
    changes = [(prev, cur) for prev, cur in zip(states, states[1:]) if prev[1:] != cur[1:]]
    first = states[0]
    if not changes:
        releases = f"{first[0]}, the only release measured" if len(states) == 1 else \
            f"every release measured ({first[0]} to {states[-1][0]})"
        text = f"- **{name}**: {_state(first)} in {releases}."
    else:
        span = first[0] if changes[0][0] is first else f"{first[0]} to {changes[0][0][0]}"
        text = f"- **{name}**: {_state(first)} in {span}"
        text += "; " + "; ".join(f"from {cur[0]}: {_state(cur)}" for _, cur in changes) + "."
    misses = []
    for version, outcome, _ in states:
        expected, _why = predicted(softmax, execution, version)
        if outcome != expected:
            misses.append(f"{version} ({outcome}, predicted {expected})")
    expectations = {predicted(softmax, execution, v) for v, _, _ in states}
    reading = "; ".join(why for _, why in sorted(expectations))
    if misses:
        text += f" Source reading ({reading}): **refuted** in {', '.join(misses)}."
    else:
        text += f" Source reading ({reading}): confirmed in every release measured."
    return text


def _state(state: tuple[str, str, str | None]) -> str:
    _, outcome, path = state
    return f"{outcome} ({path.replace('_', ' ') if path else 'no loss path'})"


def _spec_summary(spec: Spec) -> str:
    changed = {k: v for k, v in spec.to_dict().items()
               if getattr(Spec(), k) != v and k not in ("softmax", "loop_exec", "tf_version")}
    described = ", ".join(f"{k}={v}" for k, v in changed.items())
    return f"the post's spec{' except ' + described if described else ''}"


def plot(grouped: dict, skipped: dict[str, str], path: Path) -> None:
    """A release x cell grid coloured by test accuracy, with the loss path code in each square."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = sorted({*grouped, *skipped}, key=_key)
    grid = [[math.nan] * len(COLUMNS) for _ in versions]
    fig, ax = plt.subplots(figsize=(1.1 * len(COLUMNS) + 2.5, 0.55 * len(versions) + 2))
    for i, version in enumerate(versions):
        for j, name in enumerate(COLUMNS):
            record = grouped.get(version, {}).get(name)
            if record is None:
                ax.text(j, i, "skipped" if version in skipped else "—", ha="center", va="center", fontsize=7)
                continue
            grid[i][j] = record["test_accuracy"] if record["test_accuracy"] is not None else math.nan
            label = cell_text(record).replace(" ⚠ stuck", "\nstuck").replace(" ✗ ", "\n")
            ax.text(j, i, label, ha="center", va="center", fontsize=7)
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(COLUMNS)), COLUMNS, rotation=30, ha="right", fontsize=8)
    labels = [release_label(v, list(grouped[v].values())) if v in grouped else v for v in versions]
    ax.set_yticks(range(len(versions)), labels, fontsize=8)
    for boundary in (2.5, 5.5):
        ax.axvline(boundary, color="white", lw=3)
    fig.colorbar(image, ax=ax, label="test accuracy", fraction=0.03)
    ax.set_title("Keras' probability loss across TensorFlow releases (R recovered logits, C clipped, L raw log)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: str | Path, records: list[dict[str, Any]], environments: list[dict[str, Any]],
                 keras_cells: list[dict[str, Any]] | None = None) -> str:
    """Write table.md, table.csv, versions.png and findings.md into ``out_dir`` (and keras_cells.md from the
    atlas' Keras cells probed per release); return the Markdown table."""
    out_dir = Path(out_dir)
    chosen = study_records(records)
    grouped = by_version(chosen)
    skipped = skipped_versions(environments, set(grouped) | {r["tf_version"] for r in keras_cells or ()})
    history = cell_histories(keras_cells or [])
    if history:
        (out_dir / "keras_cells.md").write_text(keras_cells_markdown(history, keras_cells))
    if not grouped and not skipped:
        return "no versions-study runs to report"
    spec = Spec.from_dict(chosen[-1]["spec"]) if chosen else Spec()
    table = table_markdown(grouped, skipped)
    (out_dir / "table.md").write_text(f"Test accuracy by TensorFlow release and cell, {_spec_summary(spec)}.\n\n"
                                      + table + "\n")
    (out_dir / "table.csv").write_text(table_csv(grouped))
    (out_dir / "findings.md").write_text(findings_markdown(grouped, skipped, spec) + keras_cells_findings(history))
    plot(grouped, skipped, out_dir / "versions.png")
    return table


# --- the atlas' Keras cells across releases --------------------------------------------------------------------

State = tuple[str, bool]  # (loss path, warned)


def cell_histories(keras_cells: list[dict[str, Any]]) -> dict[str, list[tuple[str, State]]]:
    """``{cell: [(release, (path, warned on any input)), ...]}``, oldest release first."""
    states: dict[str, dict[str, State]] = {}
    for record in keras_cells:
        by_release = states.setdefault(record["cell"], {})
        _, warned = by_release.get(record["tf_version"], (None, False))
        by_release[record["tf_version"]] = (record["loss_path"], warned or bool(record["warnings"]))
    return {cell: sorted(by_release.items(), key=lambda item: _key(item[0])) for cell, by_release in states.items()}


def current_since(history: list[tuple[str, State]]) -> str | None:
    """The first release from which every release measured behaves as the newest; None if every release does."""
    current = history[-1][1]
    since = len(history) - 1
    while since > 0 and history[since - 1][1] == current:
        since -= 1
    return None if since == 0 else history[since][0]


def state_text(state: State) -> str:
    path, warned = state
    return f"`{path}`" + (" ⚠" if warned else "")


def keras_cells_markdown(history: dict[str, list[tuple[str, State]]], keras_cells: list[dict[str, Any]]) -> str:
    releases = sorted({release for cell in history.values() for release, _ in cell}, key=_key)
    keras = {r["tf_version"]: r["versions"].get("keras", "?") for r in keras_cells}
    changed = sum(current_since(cell) is not None for cell in history.values())
    lines = ["# The atlas' Keras cells across TensorFlow releases", "",
             "Each cell of `experiments/atlas/keras_cells.py`, probed in each release's environment with the Keras "
             "that TensorFlow brings (Keras 2 before TF 2.16), on the atlas' probe logits (no training). A cell "
             "shows its loss path (`experiments/atlas/paths.py`) and ⚠ if the call warned; *current since* is "
             "the first release from which every release measured behaves as the newest one does. "
             f"{changed} of {len(history)} cells changed across the releases measured.", "",
             "| cell | " + " | ".join(f"{r} (Keras {keras[r]})" for r in releases) + " | current since |",
             "|---|" + "---|" * (len(releases) + 1)]
    for cell, states in history.items():
        by_release = dict(states)
        since = current_since(states)
        lines.append(f"| {cell} | " + " | ".join(state_text(by_release[r]) if r in by_release else "—"
                                                 for r in releases)
                     + f" | {since or 'every release'} |")
    return "\n".join(lines) + "\n"


def keras_cells_findings(history: dict[str, list[tuple[str, State]]]) -> str:
    if not history:
        return ""
    changed = {cell: states for cell, states in history.items() if current_since(states) is not None}
    first, last = (min((s[0][0] for s in history.values()), key=_key),
                   max((s[-1][0] for s in history.values()), key=_key))
    lines = ["", "## The atlas' Keras cells (probe stage)", "",
             f"{len(history) - len(changed)} of {len(history)} cells behave the same in every release measured "
             f"({first} to {last}); keras_cells.md has every cell."
             + (" The others, each with the release from which it behaves as today:" if changed else ""), ""]
    for cell, states in changed.items():
        since = current_since(states)
        before = [f"{state_text(state)} in {release}" for release, state in states if _key(release) < _key(since)]
        lines.append(f"- {cell}: {state_text(states[-1][1])} since {since}; before: {', '.join(before)}")
    return "\n".join(lines) + "\n"

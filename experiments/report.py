"""Write a report from a results directory alone: ``python -m experiments.report DIR [--mechanism]``.

Reads only ``DIR/runs.jsonl``. By default the cross-framework report (table.md, table.csv, curves.png,
accuracy.png, findings.md, as experiments.compare writes it); ``--mechanism``: the mechanism study's
(mechanism.md, mechanism.png, findings.md, as experiments.mechanism writes it) from whatever of its cells ran.
"""

from __future__ import annotations

from pathlib import Path

from experiments.harness import cli, report
from experiments.mechanism import report as mechanism
from common.results import RUNS_FILE


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("out", metavar="DIR", help="a directory holding runs.jsonl")
    parser.add_argument("--mechanism", action="store_true", help="the mechanism study's report")
    args = parser.parse_args(argv)
    runs = Path(args.out) / RUNS_FILE
    if not runs.is_file():
        cli.fail(parser.prog, f"no results file at {runs}; run python -m experiments.compare --out {args.out} first")
    with cli.friendly_errors(parser.prog):
        try:
            if args.mechanism:
                table = mechanism.write_reports(args.out)
                text, files = mechanism.table_markdown(table), "mechanism.md, mechanism.png, findings.md"
            else:
                table = report.write_reports(args.out)
                text, files = report.table_markdown(table), "table.md, table.csv, curves.png, accuracy.png, findings.md"
        except ValueError as exc:
            cli.fail(parser.prog, f"{runs}: {exc}")
    print(text)
    print(f"\n{len(table.records)} runs reported; wrote {files} in {args.out}")


if __name__ == "__main__":
    main()

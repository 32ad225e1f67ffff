"""Write the cross-framework report from a results directory: ``python -m experiments.report DIR``.

Reads only ``DIR/runs.jsonl`` and writes table.md, table.csv, curves.png, accuracy.png and findings.md there.
"""

from __future__ import annotations

from pathlib import Path

from common import cli
from common.report import write_reports


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("out", metavar="DIR", help="a directory holding runs.jsonl")
    args = parser.parse_args(argv)
    runs = Path(args.out) / "runs.jsonl"
    if not runs.is_file():
        cli.fail(parser.prog, f"no results file at {runs}; run python -m experiments.compare --out {args.out} first")
    with cli.friendly_errors(parser.prog):
        try:
            table = write_reports(args.out)
        except ValueError as exc:
            cli.fail(parser.prog, f"{runs}: {exc}")
    print(Path(args.out, "table.md").read_text())
    print(f"{len(table.records)} runs reported; wrote table.md, table.csv, curves.png, accuracy.png, findings.md "
          f"in {args.out}")


if __name__ == "__main__":
    main()

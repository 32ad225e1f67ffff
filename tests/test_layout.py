"""The floors of the house: ``common`` (framework-neutral ground) < ``backends`` < ``experiments``. A module may
import from its own floor and the floors below, never from a floor above; and every ``python -m`` command that the
README and the pages under docs/ show exists and parses ``--help``."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("common", "backends", "experiments")  # ground floor first


def imported_packages(source: str) -> list[tuple[int, str, str]]:
    """(line, top-level package, the import as written) for every import in ``source``, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0], f"import {alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = ", ".join(alias.name for alias in node.names)
            found.append((node.lineno, node.module.split(".")[0], f"from {node.module} import {names}"))
    return found


def upward_imports(root: Path) -> list[str]:
    """``path:line: import`` for each import of a floor above the importing module's own."""
    violations = []
    for floor, package in enumerate(FLOORS):
        for path in sorted((root / package).rglob("*.py")):
            for line, top, text in imported_packages(path.read_text(encoding="utf-8")):
                if top in FLOORS and FLOORS.index(top) > floor:
                    violations.append(f"{path.relative_to(root)}:{line}: {text} ({package} is below {top})")
    return violations


def test_no_module_imports_from_a_floor_above() -> None:
    assert upward_imports(ROOT) == []


@pytest.mark.parametrize(("source", "named"), [
    ("from backends import loop_execs", "common/bad.py:2: from backends import loop_execs"),
    ("import experiments.harness.cli", "common/bad.py:2: import experiments.harness.cli"),
    ("def f():\n    from backends.base import DEVICES", "common/bad.py:3: from backends.base import DEVICES")])
def test_an_upward_import_is_named_with_its_file_and_line(tmp_path: Path, source: str, named: str) -> None:
    for package in FLOORS:
        (tmp_path / package).mkdir()
    (tmp_path / "common" / "ok.py").write_text("import numpy\nfrom common.spec import Spec\n")
    (tmp_path / "experiments" / "ok.py").write_text("from backends import get_backend\nfrom common import spec\n")
    (tmp_path / "common" / "bad.py").write_text(f"import os\n{source}\n")
    [violation] = upward_imports(tmp_path)
    assert violation.startswith(named)


def documented_commands() -> list[str]:
    """Every ``python -m experiments...`` module named in the README and in docs/*.md."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    modules = set()
    for page in pages:
        modules |= set(re.findall(r"python -m (experiments(?:\.\w+)+)", page.read_text(encoding="utf-8")))
    return sorted(modules)


def test_the_docs_name_commands() -> None:
    assert {"experiments.compare", "experiments.mechanism", "experiments.versions", "experiments.bench"} <= set(
        documented_commands())


# runpy warns that the one-backend aliases already imported experiments.run: harmless for --help.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("module", documented_commands())
def test_every_documented_command_parses_help(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_info.value.code in (0, None), f"python -m {module} --help exited {exit_info.value.code}"
    assert "usage:" in out.getvalue()


def test_the_readme_is_a_front_page() -> None:
    """The README stays a front page (the rest lives under docs/): at most 170 lines."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 170, f"README.md has {lines} lines; move detail to a page under docs/"

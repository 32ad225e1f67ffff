"""Published results come from committed code: the guard on ``docs/results/``.

A record names the commit that computed it (``env.git_commit``). A run from a work tree with uncommitted
changes to tracked files records ``COMMIT+dirty``: a commit that did not compute it, so no one can make the
figure again from what the record says. Every writer of records (the runner behind ``experiments.run``, the
sweep driver behind ``experiments.compare`` and ``experiments.mechanism``, the versions study, and
``experiments.reproduce``) calls ``check_publishable`` before its first run, and refuses such a tree there.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.results import RESULTS_DIR, git_commit, tracked_changes

ROOT = Path(__file__).resolve().parents[2]
#: Where the project's published results live; any directory below it is published.
PUBLISHED = ROOT / RESULTS_DIR
_SHOWN = 8  # changed files named in the message


class DirtyTree(RuntimeError):
    """Results would go under ``docs/results/`` from uncommitted code; the message names the files and the fix."""


def is_published(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` is ``docs/results/`` of this checkout or a directory below it."""
    return Path(out_dir).resolve().is_relative_to(PUBLISHED.resolve())


def check_publishable(out_dir: str | os.PathLike, elsewhere: str = "elsewhere (e.g. --out results)") -> None:
    """Raise ``DirtyTree`` when ``out_dir`` is published and this checkout's tracked files have uncommitted
    changes (``git_commit()`` ends in ``+dirty``); anywhere else, or outside git, do nothing. ``elsewhere``
    completes the message's other fix: "or write the results ..."."""
    if not is_published(out_dir):
        return
    commit = git_commit()
    if commit is None or not commit.endswith("+dirty"):
        return
    changed = tracked_changes() or []
    named = ", ".join(changed[:_SHOWN]) + (f" and {len(changed) - _SHOWN} more" if len(changed) > _SHOWN else "")
    raise DirtyTree(f"{out_dir} is under docs/results/, whose records must come from committed code, but this "
                    f"work tree has uncommitted changes to tracked files ({named}); commit them first, or write "
                    f"the results {elsewhere}")

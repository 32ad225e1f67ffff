"""One sweep per results directory: an exclusive, non-blocking ``flock`` on ``DIR/.sweep.lock``.

Two sweeps on one directory would both see the same runs as unfinished, both run them and both append
duplicates. The lock is held for the whole sweep (runs, report, sweep log) and released by the kernel when
the process ends, however it ends, so a crashed sweep never leaves a stale lock behind. The holder writes its
pid into the file, for the refusal message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".sweep.lock"


class DirectoryInUse(RuntimeError):
    """Another process holds the directory's lock; the message names the directory, lock file and pid."""


@contextlib.contextmanager
def locked(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out_dir``'s sweep lock (creating the directory) for the body; raise DirectoryInUse at once if held."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DirectoryInUse(f"{out_dir} is in use by another sweep (lock {path}, pid {holder}); wait for it "
                                 "or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock

"""One cached virtual environment per TensorFlow release, for the versions study (``experiments.versions``).

``$XDG_CACHE_HOME/xent-parity/venvs/tf-X.Y`` (default ``~/.cache/...``) gets a venv made with this Python and
``pip install tensorflow==X.Y.*``: pip picks that release's newest patch, the numpy it needs and the Keras it
pulls in (Keras 2 up to TF 2.15, Keras 3 from 2.16). A marker file written only after TensorFlow imports in it
is what makes an environment reusable, so an interrupted install is simply resumed by pip the next time.
A release that cannot be installed (no wheel for this Python, no network) comes back as a ``Skipped`` with the
reason in one line, and the study goes on with the others.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

MARKER = "xent-parity-env.json"
INSTALL_TIMEOUT_S = 3600
# Asked of an environment once it is installed: what runs there.
VERSIONS_SCRIPT = ("import json, platform, numpy, tensorflow, keras; print(json.dumps({'tensorflow': "
                   "tensorflow.__version__, 'keras': keras.__version__, 'numpy': numpy.__version__, "
                   "'python': platform.python_version()}))")
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name "
                  "resolution", "Network is unreachable", "ConnectTimeoutError", "ProxyError")


@dataclasses.dataclass(frozen=True)
class Environment:
    """A usable environment: its interpreter and what is installed there."""

    tf_version: str  # the release asked for, "2.13"
    python: Path
    versions: dict[str, str]  # tensorflow, keras, numpy, python
    status: str  # "built" or "reused"
    seconds: float


@dataclasses.dataclass(frozen=True)
class Skipped:
    tf_version: str
    reason: str
    status: str = "skipped"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "xent-parity" / "venvs"


def venv_dir(tf_version: str) -> Path:
    return cache_root() / f"tf-{tf_version}"


def requirement(tf_version: str) -> str:
    return f"tensorflow=={tf_version}.*"


def interpreter(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure(tf_version: str, rebuild: bool = False, log=print) -> Environment | Skipped:
    """The environment of ``tf_version``: reused when its marker says it is complete, else built."""
    venv = venv_dir(tf_version)
    if rebuild and venv.exists():
        shutil.rmtree(venv)
    marker = venv / MARKER
    if marker.is_file() and interpreter(venv).exists():
        recorded = json.loads(marker.read_text())
        if recorded.get("requirement") == requirement(tf_version):
            return Environment(tf_version, interpreter(venv), recorded["versions"], "reused", 0.0)
    log(f"TF {tf_version}: building {venv} (pip install '{requirement(tf_version)}'; minutes)")
    start = time.perf_counter()
    problem = install(venv, tf_version)
    if problem is None:
        versions, problem = installed_versions(venv)
    if problem is not None:
        return Skipped(tf_version, problem)
    marker.write_text(json.dumps({"requirement": requirement(tf_version), "versions": versions}, indent=1))
    return Environment(tf_version, interpreter(venv), versions, "built", time.perf_counter() - start)


def install(venv: Path, tf_version: str) -> str | None:
    """Make the venv (if absent) and pip-install the release into it; the reason in one line if that fails."""
    if not interpreter(venv).exists():
        made = _run([sys.executable, "-m", "venv", str(venv)], timeout=600)
        if made.returncode:
            return f"could not create a virtual environment ({last_line(made.stdout)})"
    pip = _run([str(interpreter(venv)), "-m", "pip", "install", "--disable-pip-version-check",
                requirement(tf_version)], timeout=INSTALL_TIMEOUT_S)
    return None if pip.returncode == 0 else install_failure(pip.stdout, tf_version)


def install_failure(pip_output: str, tf_version: str) -> str:
    """Why pip could not install a release, in one line: no network, no wheel for this Python, or pip's own."""
    python = platform.python_version()
    if any(marker in pip_output for marker in NETWORK_ERRORS):
        return f"no network: pip could not reach the package index to install TensorFlow {tf_version}"
    if re.search(r"No matching distribution found for tensorflow==", pip_output):
        return (f"no TensorFlow {tf_version} wheel for Python {python} on {platform.machine()} "
                f"(pip: no matching distribution)")
    return f"pip could not install TensorFlow {tf_version}: {last_line(pip_output)}"


def installed_versions(venv: Path) -> tuple[dict[str, str] | None, str | None]:
    """What imports in the environment, or why TensorFlow does not."""
    probe = _run([str(interpreter(venv)), "-c", VERSIONS_SCRIPT], timeout=600, env=child_env())
    if probe.returncode:
        return None, f"TensorFlow is installed but does not import: {last_line(probe.stdout)}"
    return json.loads(probe.stdout.strip().splitlines()[-1]), None


def child_env() -> dict[str, str]:
    """The environment a study process runs in: Keras 3 on TensorFlow (where it is Keras 3), CPU only, quiet,
    and nothing of this project's environment on its path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS", "VIRTUAL_ENV")}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONNOUSERSITE="1")
    return env


def last_line(text: str) -> str:
    """The last line worth reading in a tool's output (pip's 'is ignored' notes about local indexes skipped)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and "is ignored" not in line]
    return lines[-1] if lines else "no output"


def _run(command: list[str], timeout: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 1, f"timed out after {timeout} s")

"""Each framework's own account of its kernels follows the settings that change them, and so does the key."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One process for both frameworks (no TensorFlow, so no import-order clash); the settings must be in its
# environment before either framework loads, as they are for a sweep's child.
PROBE = """
import json
from backends import get_backend
from common.results import capture_env
views = {}
for name in ("torch", "jax"):
    backend = get_backend(name)
    env = capture_env(backend.versions(), backend.device_name(), backend.threads(), backend.kernel_info())
    views[name] = {"kernels": env["kernels"], "machine_class": env["machine_class"]}
print(json.dumps(views))
"""


def probe(**settings):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu", **settings}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_kernel_views_follow_the_settings():
    capped = probe(ATEN_CPU_CAPABILITY="default",
                   XLA_FLAGS="--xla_cpu_max_isa=AVX --xla_cpu_enable_fast_math=true")
    torch_view, jax_view = capped["torch"]["kernels"], capped["jax"]["kernels"]
    assert torch_view["cpu_capability"] == "DEFAULT" and torch_view["float32_matmul_precision"] == "highest"
    assert jax_view["platform"] == "cpu" and jax_view["xla_cpu_max_isa"] == "AVX"
    assert jax_view["xla_cpu_enable_fast_math"] is True  # XLA's own reading of XLA_FLAGS
    assert capped["torch"]["machine_class"].endswith("~xla=avx~aten=default")

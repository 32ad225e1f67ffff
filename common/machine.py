"""What decides the bits of a run: the processor, its instruction sets, the settings that choose kernels.

Two runs of one spec give bit-identical figures only where the same kernels do the same floating-point
operations in the same order. Float addition is not associative, so a kernel that sums a dot product in
16-wide AVX-512 lanes and one that sums it in 8-wide AVX2 lanes round differently in the last bits; a
trained run's figures then move in the low digits, and a run on a chaotic path (a stuck model's locked-in
classes) can turn those bits into another outcome. The kernels are chosen at run time, per machine:

- XLA (JAX, Keras on JAX) compiles every program for the host CPU's features, capped by
  ``--xla_cpu_max_isa`` in ``XLA_FLAGS`` (the flag jaxlib's ``libjax_common.so`` parses: "`xla_cpu_max_isa`
  is set. Will not use features newer than: ...");
- PyTorch dispatches each vectorised kernel to its DEFAULT, AVX2 or AVX512 build
  (``torch.backends.cpu.get_cpu_capability()``, capped by ``ATEN_CPU_CAPABILITY``), and its matrix multiplies
  go to MKL or oneDNN, which choose a code path per instruction set (``MKL_ENABLE_INSTRUCTIONS``,
  ``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``);
- TensorFlow runs oneDNN kernels unless ``TF_ENABLE_ONEDNN_OPTS=0``, and Eigen's otherwise.

So a record names the CPU by vendor, family, model and stepping (one family.model is one microarchitecture,
the same instruction sets and the same cache sizes the kernels block for), the instruction-set flags those
libraries dispatch on (``KERNEL_FLAGS``), the environment settings that change kernels (``KERNEL_SETTINGS``),
and the GPU and its driver where there is one. ``machine_class`` turns that into a short key reports group by:

    ARCH-VENDOR-FAMILY.MODEL-ISA[~SETTING=VALUE ...][+GPU]

ARCH is the instruction-set architecture (``x86_64``, ``aarch64``); VENDOR the CPU's maker (``intel``,
``amd``; for ARM the implementer: ``arm``, ``ampere``, ...); FAMILY.MODEL the CPU family and model numbers of
``/proc/cpuinfo`` (on ARM the architecture and the part number, e.g. ``8.0xd0c``); ISA the widest vector tier
the CPU reports (``isa_tier``: ``amx``, ``avx512``, ``avx2``, ``avx``, ``sse``; on ARM ``sme``, ``sve2``,
``sve``, ``neon``); each ``~SETTING=VALUE`` a kernel switch set in the environment (``KEY_CAPS``: XLA's
``--xla_cpu_max_isa``, oneDNN's and MKL's caps, ``TF_ENABLE_ONEDNN_OPTS``, ``ATEN_CPU_CAPABILITY``);
``+GPU`` the accelerator's model when the run used one. Thread counts decide how some sums are split too; they
are in every record's ``env.threads`` and ``machine["settings"]``, not in the key.

    >>> cpu = parse_cpuinfo("vendor_id : GenuineIntel\\ncpu family : 6\\nmodel : 207\\nstepping : 2\\n"
    ...                     "model name : Intel Xeon\\nflags : fma avx avx2 avx512f avx512bw avx512dq avx512vl",
    ...                     "x86_64")
    >>> machine_class(describe(cpu, environ={}, gpus=[]))
    'x86_64-intel-6.207-avx512'
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

#: The x86 instruction-set flags (as ``/proc/cpuinfo`` spells them) that the frameworks' kernels dispatch on:
#: vector width (AVX, AVX2, AVX-512 and its subsets), fused multiply-add (one rounding instead of two), and the
#: int8/bf16/fp16 dot-product and matrix-tile units that oneDNN and XLA pick when they exist.
X86_KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
                    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
#: The same for ARM (``Features`` in ``/proc/cpuinfo``): NEON (``asimd``), its dot product, SVE and SME, and
#: the bf16 / int8 matrix-multiply extensions.
ARM_KERNEL_FLAGS = ("asimd", "asimddp", "sve", "sve2", "bf16", "i8mm", "sme")
KERNEL_FLAGS = X86_KERNEL_FLAGS + ARM_KERNEL_FLAGS

#: Environment variables that change which kernels run, or how their work is split, recorded where set.
KERNEL_SETTINGS = (
    "XLA_FLAGS",  # XLA's compiler options, --xla_cpu_max_isa among them
    "JAX_DEFAULT_MATMUL_PRECISION",  # JAX's matrix-multiply precision where a dot names none (Keras on JAX)
    "TF_ENABLE_ONEDNN_OPTS",  # TensorFlow: oneDNN kernels (default on x86) or Eigen's
    "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",  # oneDNN's instruction-set cap (TensorFlow, PyTorch)
    "ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE",  # oneDNN may compute fp32 in bf16/tf32
    "ATEN_CPU_CAPABILITY",  # PyTorch's kernel build: default, avx2, avx512
    "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",  # MKL's code path: instruction-set cap, reproducible-results branch
    "NVIDIA_TF32_OVERRIDE",  # CUDA libraries' TF32 matrix multiplies, whatever the framework asks
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",  # split of sums
)

#: Settings that move a framework's kernels to another instruction set or kernel library: they go into the
#: machine-class key as ``~NAME=VALUE``, since such a run computes like another machine (a capped one like a
#: smaller CPU). NAME -> the variables that set it, first found wins; any value counts, even a default's.
KEY_CAPS = {
    "xla": ("XLA_FLAGS",),  # its --xla_cpu_max_isa value
    "onednn": ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"),
    "tf-onednn": ("TF_ENABLE_ONEDNN_OPTS",),
    "aten": ("ATEN_CPU_CAPABILITY",),
    "mkl": ("MKL_ENABLE_INSTRUCTIONS",),
    "mkl-cbwr": ("MKL_CBWR",),
}

_X86_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "hygon", "CentaurHauls": "centaur"}
# ARM's "CPU implementer" codes (the Arm Architecture Reference Manual's MIDR_EL1.Implementer values).
_ARM_IMPLEMENTERS = {0x41: "arm", 0x42: "broadcom", 0x43: "cavium", 0x46: "fujitsu", 0x48: "hisilicon",
                     0x4E: "nvidia", 0x50: "apm", 0x51: "qualcomm", 0x61: "apple", 0x6D: "microsoft",
                     0xC0: "ampere"}
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
_XLA_MAX_ISA = re.compile(r"""--xla_cpu_max_isa=([^\s'"]+)""")


@dataclasses.dataclass(frozen=True)
class Cpu:
    """The processor as ``/proc/cpuinfo`` reports it (first logical CPU; all are alike on the machines here).

    ``family``/``model``/``stepping`` are x86's CPUID numbers; on ARM ``family`` is the architecture version,
    ``model`` the part number as printed (``0xd0c``) and ``stepping`` the revision. ``flags`` holds the
    ``KERNEL_FLAGS`` the CPU has, sorted. Off Linux only ``arch`` and ``model_name`` are known.
    """

    arch: str
    vendor: str
    model_name: str
    family: int | None = None
    model: int | str | None = None
    stepping: int | None = None
    flags: tuple[str, ...] = ()


def parse_cpuinfo(text: str, arch: str) -> Cpu:
    """The ``Cpu`` described by the first processor block of a ``/proc/cpuinfo`` text, on architecture ``arch``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block ends at the first blank line
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    arch = normalise_arch(arch)
    if "cpu implementer" in fields:
        return _arm_cpu(fields, arch)
    flags = set(fields.get("flags", "").split())
    vendor_id = fields.get("vendor_id", "")
    return Cpu(arch=arch, vendor=_X86_VENDORS.get(vendor_id, vendor_id.lower() or "unknown"),
               model_name=fields.get("model name", vendor_id or arch), family=_int(fields.get("cpu family")),
               model=_int(fields.get("model")), stepping=_int(fields.get("stepping")),
               flags=tuple(sorted(flags & set(X86_KERNEL_FLAGS))))


def _arm_cpu(fields: dict[str, str], arch: str) -> Cpu:
    implementer = _int(fields["cpu implementer"])
    vendor = _ARM_IMPLEMENTERS.get(implementer, fields["cpu implementer"]) if implementer is not None else "unknown"
    part = fields.get("cpu part")
    flags = set(fields.get("features", "").split())
    return Cpu(arch=arch, vendor=vendor, model_name=fields.get("model name", f"{vendor} part {part}"),
               family=_int(fields.get("cpu architecture")), model=part, stepping=_int(fields.get("cpu revision")),
               flags=tuple(sorted(flags & set(ARM_KERNEL_FLAGS))))


def _int(value: str | None) -> int | None:
    """A decimal or 0x-prefixed number; None for a missing or non-numeric field."""
    try:
        return int(value, 0) if value else None
    except ValueError:
        return None


def normalise_arch(arch: str) -> str:
    """One name per instruction-set architecture: Windows' ``AMD64`` and macOS' ``arm64`` as Linux says them."""
    return _ARCH_ALIASES.get(arch.lower(), arch.lower())


def this_cpu() -> Cpu:
    """This machine's ``Cpu``: from ``/proc/cpuinfo`` on Linux; elsewhere what ``platform`` knows (no vendor
    numbers or flags: such a machine's class key says ``unknown``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return parse_cpuinfo(handle.read(), platform.machine())
    except OSError:
        arch = normalise_arch(platform.machine() or "unknown")
        return Cpu(arch=arch, vendor="unknown", model_name=platform.processor() or arch)


def isa_tier(arch: str, flags: tuple[str, ...] | list[str]) -> str:
    """The widest vector tier among ``flags``.

    x86: ``amx`` (matrix tiles), ``avx512`` (F, BW, DQ and VL: the set PyTorch's AVX512 kernels and oneDNN's
    avx512_core need), ``avx2`` (with FMA), ``avx``, else ``sse``. ARM: ``sme``, ``sve2``, ``sve``, ``neon``,
    else ``base``.
    """
    have = set(flags)
    if normalise_arch(arch) == "aarch64":
        tiers = (("sme", {"sme"}), ("sve2", {"sve2"}), ("sve", {"sve"}), ("neon", {"asimd"}))
        fallback = "base"
    else:
        tiers = (("amx", {"amx_tile"}), ("avx512", {"avx512f", "avx512bw", "avx512dq", "avx512vl"}),
                 ("avx2", {"avx2", "fma"}), ("avx", {"avx"}))
        fallback = "sse"
    return next((tier for tier, needs in tiers if needs <= have), fallback)


def kernel_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``KERNEL_SETTINGS`` set in ``environ`` (default: this process' environment), by name."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in KERNEL_SETTINGS if name in environ}


def nvidia_gpus() -> list[dict[str, str]]:
    """Each NVIDIA GPU's model and driver version, as ``nvidia-smi`` reports them; none without it.

    The driver ships the CUDA libraries' kernels, so it is part of what decides a GPU run's bits.
    """
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.rsplit(",", 1) for line in out.splitlines() if "," in line]
    return [{"name": name.strip(), "driver": driver.strip()} for name, driver in rows]


def describe(cpu: Cpu | None = None, environ: Mapping[str, str] | None = None,
             gpus: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The record's ``env.machine``: the ``Cpu``'s fields, its ``isa`` tier, the CPU count, the kernel
    settings of ``environ`` and the ``gpus`` (defaults: this machine, process and ``nvidia_gpus()``)."""
    cpu = this_cpu() if cpu is None else cpu
    return {**dataclasses.asdict(cpu), "flags": list(cpu.flags), "isa": isa_tier(cpu.arch, cpu.flags),
            "cpu_count": os.cpu_count(), "settings": kernel_settings(environ),
            "gpus": nvidia_gpus() if gpus is None else gpus}


def machine_class(machine: Mapping[str, Any], device_name: str = "cpu") -> str:
    """The short key of ``machine`` (a ``describe`` dict, as recorded) for a run on ``device_name`` (``"cpu"``
    or the accelerator's model): ``ARCH-VENDOR-FAMILY.MODEL-ISA[~CAP=VALUE ...][+GPU]`` (module docstring)."""
    family, model = machine.get("family"), machine.get("model")
    number = f"{family}.{model}" if family is not None and model is not None else "unknown"
    key = f"{machine['arch']}-{_slug(machine['vendor'])}-{number}-{machine['isa']}"
    for name, value in isa_caps(machine.get("settings", {})).items():
        key += f"~{name}={_slug(value)}"
    if device_name and device_name != "cpu":
        key += f"+{_slug(device_name)}"
    return key


def isa_caps(settings: Mapping[str, str]) -> dict[str, str]:
    """The ``KEY_CAPS`` among recorded ``settings``, by their ``KEY_CAPS`` name: XLA's
    ``--xla_cpu_max_isa`` (the last, if given twice), and each other variable's value."""
    caps = {}
    for name, variables in KEY_CAPS.items():
        value = next((settings[v] for v in variables if settings.get(v)), None)
        if value is not None and name == "xla":
            matches = _XLA_MAX_ISA.findall(value)
            value = matches[-1] if matches else None
        if value is not None:
            caps[name] = value
    return caps


def _slug(text: str) -> str:
    """Lower case, runs of anything but letters, digits and dots as one hyphen: ``NVIDIA H100 80GB HBM3`` ->
    ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")

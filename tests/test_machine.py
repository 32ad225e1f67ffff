"""What decides the bits: /proc/cpuinfo parsed into vendor, family, model, flags and a machine-class key; the
key's settings and GPU parts; the new env keys through the results file."""

import json
import os

import numpy as np

from common.machine import (ARM_KERNEL_FLAGS, X86_KERNEL_FLAGS, describe, isa_caps, machine_class, parse_cpuinfo,
                            this_cpu)
from common.results import append_record, capture_env, make_record, read_records
from common.spec import Spec
from common.training import TrainOutcome
from common.variants import VARIANTS

# Abridged from real machines: the fields the parser reads, and flags it must ignore (sse2, ht, ...).
INTEL_SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
stepping\t: 8
flags\t\t: fpu sse sse2 ht fma avx avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni \
avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
flags\t\t: fpu sse sse2
"""
INTEL_AVX512_NO_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 2
flags\t\t: fpu sse2 fma avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni \
avx512_fp16
"""
AMD_ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
stepping\t: 1
flags\t\t: fpu sse2 ht fma avx avx2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 \
avx512vbmi avx512_vnni avx512_bitalg
"""
AMD_ZEN2_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7B12
stepping\t: 0
flags\t\t: fpu sse2 ht fma avx avx2 bmi2 sha_ni
"""
ARM_NEOVERSE_V1 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve \
bf16 i8mm
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""
ARM_NEOVERSE_N1 = ARM_NEOVERSE_V1.replace(" sve bf16 i8mm", "").replace("0xd40", "0xd0c")


def key_of(text, arch="x86_64", environ=None, device="cpu"):
    return machine_class(describe(parse_cpuinfo(text, arch), environ=environ or {}, gpus=[]), device)


def test_intel_with_amx():
    cpu = parse_cpuinfo(INTEL_SAPPHIRE_RAPIDS, "x86_64")
    assert (cpu.vendor, cpu.family, cpu.model, cpu.stepping) == ("intel", 6, 143, 8)
    assert cpu.model_name.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert {"amx_tile", "amx_bf16", "amx_int8", "avx512_fp16", "avx_vnni"} <= set(cpu.flags)
    assert set(cpu.flags) <= set(X86_KERNEL_FLAGS)  # sse2, ht, fpu: not kernel flags
    assert key_of(INTEL_SAPPHIRE_RAPIDS) == "x86_64-intel-6.143-amx"


def test_intel_avx512_without_amx():
    cpu = parse_cpuinfo(INTEL_AVX512_NO_AMX, "x86_64")
    assert (cpu.vendor, cpu.family, cpu.model, cpu.stepping) == ("intel", 6, 207, 2)
    assert "amx_tile" not in cpu.flags and "avx512cd" not in cpu.flags
    assert key_of(INTEL_AVX512_NO_AMX) == "x86_64-intel-6.207-avx512"


def test_amd_zen4_with_avx512():
    cpu = parse_cpuinfo(AMD_ZEN4, "x86_64")
    assert (cpu.vendor, cpu.family, cpu.model, cpu.stepping) == ("amd", 25, 17, 1)
    assert cpu.flags == ("avx", "avx2", "avx512_bf16", "avx512_vnni", "avx512bw", "avx512dq", "avx512f",
                         "avx512vl", "fma")
    assert key_of(AMD_ZEN4) == "x86_64-amd-25.17-avx512"


def test_avx2_only_cpu():
    cpu = parse_cpuinfo(AMD_ZEN2_AVX2, "x86_64")
    assert cpu.flags == ("avx", "avx2", "fma")
    assert key_of(AMD_ZEN2_AVX2) == "x86_64-amd-23.49-avx2"
    # AVX-512 needs all four of F, BW, DQ and VL: F alone leaves the AVX2 tier.
    assert key_of(AMD_ZEN2_AVX2.replace("avx2 ", "avx2 avx512f ")) == "x86_64-amd-23.49-avx2"
    assert key_of(AMD_ZEN2_AVX2.replace("fma avx avx2 ", "avx ")) == "x86_64-amd-23.49-avx"


def test_aarch64():
    cpu = parse_cpuinfo(ARM_NEOVERSE_V1, "arm64")  # macOS' name for the architecture
    assert (cpu.arch, cpu.vendor, cpu.family, cpu.model, cpu.stepping) == ("aarch64", "arm", 8, "0xd40", 1)
    assert cpu.flags == ("asimd", "asimddp", "bf16", "i8mm", "sve") and set(cpu.flags) <= set(ARM_KERNEL_FLAGS)
    assert key_of(ARM_NEOVERSE_V1, "aarch64") == "aarch64-arm-8.0xd40-sve"
    assert key_of(ARM_NEOVERSE_N1, "aarch64") == "aarch64-arm-8.0xd0c-neon"


def test_key_names_isa_caps_and_gpu_but_not_threads():
    assert key_of(AMD_ZEN4, environ={"OMP_NUM_THREADS": "2", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}) == \
        "x86_64-amd-25.17-avx512"
    capped = key_of(AMD_ZEN4, environ={"XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_cpu_max_isa=AVX",
                                       "DNNL_MAX_CPU_ISA": "AVX2"})
    assert capped == "x86_64-amd-25.17-avx512~xla=avx~onednn=avx2"
    assert isa_caps({"TF_ENABLE_ONEDNN_OPTS": "0"}) == {"tf-onednn": "0"}
    assert key_of(INTEL_SAPPHIRE_RAPIDS, device="NVIDIA H100 80GB HBM3") == \
        "x86_64-intel-6.143-amx+nvidia-h100-80gb-hbm3"


def test_this_machine_key_is_stable():
    first, second = describe(), describe()
    assert first == second and machine_class(first) == machine_class(second)
    assert machine_class(first).startswith(f"{this_cpu().arch}-{this_cpu().vendor}-")
    assert capture_env({}, "cpu", {})["machine_class"] == machine_class(first)


def test_env_keys_round_trip(tmp_path):
    kernels = {"cpu_capability": "AVX512", "mkldnn": True}
    env = capture_env({"torch": "2.13.0"}, "cpu", {"intra_op": 2}, kernels)
    assert env["machine"]["settings"] == {k: os.environ[k] for k in env["machine"]["settings"]}
    assert env["cpu"] and env["kernels"] == kernels  # the old key stays beside the new ones
    trained = TrainOutcome(epoch_costs=[0.5], step_losses=np.array([0.5]), status="ok", diagnostics=[],
                           first_nonfinite_step=None, test_loss=0.4, test_accuracy=0.9,
                           test_predicted_shares=np.full(10, 0.1), loss_path="logits", wall_seconds=1.0,
                           compile_seconds=0.1, steps_per_second=5.0, trainer=None)
    written = make_record(Spec(), VARIANTS["loop_logits"], "torch", None, "cpu", "abc", env, trained)
    append_record(tmp_path / "runs.jsonl", written)
    (read,) = read_records(tmp_path / "runs.jsonl")
    assert read == json.loads(json.dumps(written))
    assert read["env"]["machine"] == env["machine"] and read["env"]["kernels"] == kernels
    assert machine_class(read["env"]["machine"], read["device"]) == read["env"]["machine_class"]

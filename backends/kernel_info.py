"""Each framework's own account of the kernels it runs: the ``kernel_info()`` of every backend and Keras engine.

``common.machine`` records what the hardware and the environment offer; this module asks the framework what it
chose from that, through its public API where it has one. Each function imports its framework when called, so
a backend asks only the framework its process already runs (PyTorch for the torch backend and Keras' torch
engine, JAX for the JAX backend and Keras' jax engine, TensorFlow for Keras on TensorFlow and tf_keras).
"""

from __future__ import annotations

import os
from typing import Any

from common.machine import isa_caps, kernel_settings


def torch_kernels(device: Any) -> dict[str, Any]:
    """PyTorch on ``device`` (a ``torch.device``).

    ``cpu_capability``: the build of its vectorised kernels that ATen dispatches to (``DEFAULT``, ``AVX2``,
    ``AVX512``, ...; ``torch.backends.cpu.get_cpu_capability``); ``mkl`` / ``mkldnn``: whether this build has
    MKL and oneDNN (``torch.backends.mkl.is_available``, ``torch.backends.mkldnn.is_available``), which run its
    CPU matrix multiplies, and whether oneDNN is switched on (``torch.backends.mkldnn.enabled``);
    ``float32_matmul_precision``: ``highest`` unless fp32 products may run in TF32/bf16
    (``torch.get_float32_matmul_precision``). On CUDA: the CUDA and cuDNN versions torch was built with, the
    GPU and its compute capability.
    """
    import torch

    info: dict[str, Any] = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    gpu=torch.cuda.get_device_name(device), compute_capability=f"{major}.{minor}")
    return info


def jax_kernels(device: Any) -> dict[str, Any]:
    """JAX on ``device`` (a ``jax.Device``).

    ``platform`` and ``device_kind`` name what XLA compiles for; ``platform_version`` is the runtime's own
    version string (the CUDA/driver stack on a GPU; ``jax.extend.backend.get_backend``). XLA compiles for the
    host CPU's features and has no public call that names them, so the record keeps the cap that overrides them:
    ``xla_cpu_max_isa``, from ``XLA_FLAGS`` (None: the host's own features). ``xla_cpu_enable_fast_math``: XLA's
    own reading of its options (``XLA_FLAGS`` included) through ``jax.extend.backend.get_compile_options``, whose
    ``debug_options`` expose this one CPU setting that reorders arithmetic. ``default_matmul_precision``: JAX's
    precision for a product that names none (``jax_default_matmul_precision``; None: the platform's default,
    full fp32 on CPU).
    """
    import jax
    import jax.extend

    options = jax.extend.backend.get_compile_options(num_replicas=1, num_partitions=1)
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "platform_version": jax.extend.backend.get_backend(device.platform).platform_version,
        "xla_cpu_max_isa": isa_caps(kernel_settings()).get("xla"),
        "xla_cpu_enable_fast_math": options.executable_build_options.debug_options.xla_cpu_enable_fast_math,
        "default_matmul_precision": jax.config.jax_default_matmul_precision,
    }


def tensorflow_kernels(gpu: bool) -> dict[str, Any]:
    """TensorFlow, on its GPU when ``gpu`` (Keras on TensorFlow, tf_keras).

    ``onednn``: whether TensorFlow runs its oneDNN kernels (on by default on x86 Linux; ``TF_ENABLE_ONEDNN_OPTS``
    switches them). The answer is TensorFlow's own ``IsMklEnabled`` (``tensorflow/python/util/
    _pywrap_util_port.pyi``, the call ``tensorflow.python.framework.test_util.IsMklEnabled`` makes), a private
    module: where it is gone the value is None and ``TF_ENABLE_ONEDNN_OPTS`` (``onednn_opts``, None when unset)
    still says what was asked. ``tensor_float_32``: whether fp32 products may run in TF32 on a GPU
    (``tf.config.experimental.tensor_float_32_execution_enabled``). ``build``: the CUDA and cuDNN versions of
    this build (``tf.sysconfig.get_build_info``); on a GPU the device's name and compute capability.
    """
    import tensorflow as tf

    try:
        from tensorflow.python.util import _pywrap_util_port
        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = None
    build = tf.sysconfig.get_build_info()
    info: dict[str, Any] = {
        "onednn": onednn,
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "build": {key: build.get(key) for key in ("is_cuda_build", "cuda_version", "cudnn_version")},
    }
    devices = tf.config.list_physical_devices("GPU") if gpu else []
    if devices:
        details = tf.config.experimental.get_device_details(devices[0])
        capability = details.get("compute_capability")
        info.update(gpu=details.get("device_name"),
                    compute_capability=".".join(map(str, capability)) if capability else None)
    return info

"""Devices, threads and precision, for training and inference alike: the device of a run and its
CPU threads, bfloat16 autocast where it is fast, channels-last models (optionally wrapped for
DistributedDataParallel or compiled)."""
from __future__ import annotations

import os
import re

import torch

from .errors import ConfigError


def get_device(name: str = "auto"):
    """Return a ``torch.device``: CUDA when available and ``name`` is ``"auto"``, else ``name``.

    On CPU the torch thread count is set to ``OMP_NUM_THREADS`` when it is set (several training
    processes on one machine: one or a few threads each, or they slow each other down many times
    over), else to the number of usable cores. Raises ``ConfigError`` for a name that is not
    ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or a CUDA device where torch finds none.
    """
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", str(name)):
        raise ConfigError(f"device {name!r} is not auto, cpu, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: this machine has no CUDA GPU that torch can use; use cpu or auto")
    device = torch.device(name)
    if device.type == "cpu":
        threads = os.environ.get("OMP_NUM_THREADS", "")
        torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else n_cpus())
    else:
        torch.backends.cudnn.benchmark = True
    return device


def n_cpus() -> int:
    """Number of CPU cores this process may use (respects affinity masks and cgroups pinning)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX instructions, e.g. Intel
    Xeon from Cooper/Sapphire Rapids on). Elsewhere bfloat16 is emulated and slower than float32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers of torch >= 2.3
        return False


def autocast(device, enabled: bool = True, training: bool = True):
    """Mixed-precision context: bfloat16 autocast on CUDA (float16 where bf16 is unsupported);
    on a CPU that computes bfloat16 natively (:func:`cpu_bf16`) for ``training`` only (1.8-3.2x
    faster training steps on a 2-core Xeon with AMX, ``bench/train.py``; CPU predictions stay
    float32, since bfloat16 logits would tie close predictions); float32 otherwise or when not
    ``enabled`` (:func:`training_dtype` and :func:`inference_dtype` name the dtype). Stage 02's
    per-epoch validation predicts with ``training=True`` and the training steps' ``enabled``;
    the OOF predictions are made again for inference when the two differ."""
    device = torch.device(device)
    dtype = training_dtype(device, enabled) if training else inference_dtype(device) if enabled else "float32"
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=getattr(torch, dtype if dtype != "float32" else "bfloat16"),
                              enabled=dtype != "float32")
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def inference_dtype(device) -> str:
    """The dtype :func:`autocast` predicts in (``training=False``): that of CUDA's training steps
    with ``amp`` on, ``"float32"`` on any other device."""
    device = torch.device(device)
    return training_dtype(device, True) if device.type == "cuda" else "float32"


def training_dtype(device, amp: bool) -> str:
    """The dtype :func:`autocast` computes training steps in with ``amp`` (the result of
    :func:`training_amp`): ``"bfloat16"``, ``"float16"`` (CUDA without bfloat16) or ``"float32"``
    (``amp`` off, a CPU without native bfloat16, another device type)."""
    device = torch.device(device)
    if not amp or (device.type == "cpu" and not cpu_bf16()) or device.type not in ("cpu", "cuda"):
        return "float32"
    return "bfloat16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "float16"


def training_amp(device, amp: bool, compiled: bool) -> bool:
    """Whether training autocasts (:func:`autocast`): ``train.amp``, except for a model compiled
    with ``torch.compile`` on the CPU, which trains in float32. Inductor's CPU code under bfloat16
    autocast gave non-finite gradients to every convolution of ``cnn8`` on 128-band inputs, whose
    loss was finite (torch 2.11; the same model compiled in float32, or eager in bfloat16, was
    finite; ``tests/test_training_options.py``); bench/gpu.sh's CPU rehearsal found it."""
    return amp and not (compiled and torch.device(device).type == "cpu")


def place_model(model: torch.nn.Module, device, compile: bool = False, ddp: bool = False):
    """Move ``model`` to ``device`` in the channels-last memory format (in place: cuDNN's NHWC
    tensor-core kernels on CUDA, oneDNN's faster NHWC convolutions on the CPU) and return the
    callable to train with: the model, wrapped in ``DistributedDataParallel`` when ``ddp`` (the
    process group must be initialised: :mod:`lib.runs.distributed`), compiled with
    ``torch.compile`` when ``compile`` (the weights stay shared with ``model``)."""
    model.to(device, memory_format=torch.channels_last)
    net = model
    if ddp:
        # static_graph: the same parameters take part in every step, and some never do (WaveNet's last
        # residual convolution): DDP learns which after the first step, without find_unused_parameters' cost
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                        static_graph=True)
    return torch.compile(net) if compile else net


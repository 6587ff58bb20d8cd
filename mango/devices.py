"""Which torch device a model lives on (one rule for generators, targets and the objective)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from .errors import ConfigError

__all__ = ["module_device", "module_dtype", "to_module_dtype", "check_device", "full_float32"]


def module_device(obj: Any, default: torch.device | str | None = "cpu") -> torch.device | None:
    """The device of ``obj``'s first parameter, else its first buffer, else ``default``.

    ``obj`` may be any object: an ``nn.Module`` is inspected; anything else (a plain
    function target) has no device and gives ``default`` (``None`` to tell "unknown"
    apart from "cpu").
    """
    if isinstance(obj, torch.nn.Module):
        for p in obj.parameters():
            return p.device
        for b in obj.buffers():
            return b.device
    return None if default is None else torch.device(default)


def module_dtype(obj: Any) -> torch.dtype | None:
    """The dtype of ``obj``'s first floating parameter or buffer (an ``nn.Module``), else None."""
    if isinstance(obj, torch.nn.Module):
        return next((t.dtype for t in (*obj.parameters(), *obj.buffers()) if t.is_floating_point()), None)
    return None


def to_module_dtype(obj: Any, x: torch.Tensor) -> torch.Tensor:
    """Floating ``x`` in ``obj``'s floating dtype (:func:`module_dtype`; a float64 or half model takes the
    float32 images or latents MANGO makes), else ``x`` unchanged."""
    dtype = module_dtype(obj)
    return x.to(dtype) if dtype is not None and x.is_floating_point() and x.dtype != dtype else x


def check_device(device: str | None) -> None:
    """Refuse a torch device this machine cannot use, before any model is built.

    Raises:
        ConfigError: a device string torch does not parse (``"nonsense"``), or a CUDA / MPS
            device this torch build or machine does not have; the message lists the devices
            that are available here.
    """
    if device is None:
        return
    avail = ["cpu"]
    if torch.cuda.is_available():
        avail += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        avail.append("mps")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"unknown device {device!r}; valid devices here: {', '.join(avail)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} is not available: this torch has no CUDA device "
                              f"(torch {torch.__version__}); valid devices here: {', '.join(avail)}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} is not available; valid devices here: {', '.join(avail)}")
    elif dev.type == "mps" and "mps" not in avail:
        raise ConfigError(f"device {device!r} is not available; valid devices here: {', '.join(avail)}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not supported; valid devices here: {', '.join(avail)}")


@contextlib.contextmanager
def full_float32(device: torch.device | str | None) -> Iterator[None]:
    """Run the block with full float32 precision for CUDA convolutions and matrix products (no TF32), then
    give torch's settings back. PyTorch lets cuDNN convolutions use TF32 (10 mantissa bits) by default on
    Ampere and later GPUs; on the paper pipeline that moved a spiking unit's count by one spike for 12 % of
    random codes against the CPU (``experiments/gpu_check.py``), so a code's value depended on the device.
    On a CPU (or without CUDA) nothing is changed."""
    if device is None or torch.device(device).type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        # torch >= 2.9's settings (the old allow_tf32 flags raise once these have been set): save, set, restore
        before = (conv.fp32_precision, matmul.fp32_precision)
        conv.fp32_precision = matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = before
        return
    cudnn = torch.backends.cudnn
    before_flags = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before_flags

"""Images for people: float image batches -> ``uint8`` pixels -> PNG files (the one place that does it).

* :func:`to_uint8` -- ``[k, C, H, W]`` floats -> ``uint8 [k, H, W, C]``, undoing a
  value range or a per-channel normalisation (generators call it in their ``to_uint8``).
* :func:`display_uint8` -- the same through a generator's own ``to_uint8`` when it has
  one (the protocol's optional method), else for images in ``[0, 1]``.
* :func:`upscale` -- nearest-neighbour enlargement by an integer factor (``np.kron``).
* :func:`save_png` -- a batch as one PNG row, enlarged to about 128 pixels high.

Rounding rule everywhere: ``floor(v * 255 + 0.5)`` of the value clipped to ``[0, 1]``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["to_uint8", "display_uint8", "upscale", "save_png", "DISPLAY_HEIGHT"]

#: PNGs written for people are enlarged (by an integer factor) to at least this many pixels high
DISPLAY_HEIGHT = 128


def to_uint8(images: Any, value_range: tuple[float, float] = (0.0, 1.0), *,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Image batch -> ``uint8 [k, H, W, C]`` (``C`` = 1 or 3) for display.

    Args:
        images: ``[k, C, H, W]`` (or a single ``[C, H, W]`` image) of floats (torch tensor or array).
        value_range: ``(lo, hi)`` mapped linearly to ``0..255`` (ignored when
            ``mean``/``std`` are given).
        mean, std: per-channel normalisation to undo: ``x * std + mean``, then
            clipped to ``[0, 1]`` (CIFAR: :data:`mango.data.CIFAR10_MEAN`, ``CIFAR10_STD``).

    Values outside the range are clipped.

    Raises:
        ConfigError: not 3-D/4-D, ``hi <= lo``, or mean/std with the wrong number of channels.
    """
    if hasattr(images, "detach"):  # a torch tensor (torch itself is not imported here)
        images = images.detach().float().cpu().numpy()
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ConfigError(f"to_uint8 needs images [k, C, H, W], got shape {x.shape}")
    if mean is not None or std is not None:
        c = x.shape[1]
        m = np.asarray(mean if mean is not None else [0.0] * c, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std if std is not None else [1.0] * c, np.float32).reshape(1, -1, 1, 1)
        if m.shape[1] not in (1, c) or s.shape[1] not in (1, c):
            raise ConfigError(f"mean/std have {m.shape[1]}/{s.shape[1]} channels, images have {c}")
        x = x * s + m
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ConfigError(f"value_range must have hi > lo, got {value_range!r}")
        x = (x - lo) / (hi - lo)
    x = np.clip(x, 0.0, 1.0)
    return np.ascontiguousarray((x * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1))


def display_uint8(images: Any, generator: Any = None) -> np.ndarray:
    """``[k, C, H, W]`` -> ``uint8 [k, H, W, C]`` via ``generator.to_uint8`` when it has one, else
    :func:`to_uint8` for images in ``[0, 1]``."""
    convert = getattr(generator, "to_uint8", None)
    arr = convert(images) if callable(convert) else to_uint8(images)
    return np.ascontiguousarray(np.asarray(arr, dtype=np.uint8))


def upscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``[H, W]`` or ``[H, W, C]`` pixels by ``scale`` (>= 1) in H and W."""
    if scale <= 1:
        return img
    return np.kron(img, np.ones((scale, scale) + (() if img.ndim == 2 else (1,)), dtype=img.dtype))


def save_png(images: Any, path: str | os.PathLike, generator: Any = None) -> Path:
    """Save an image batch as one PNG row, enlarged to about :data:`DISPLAY_HEIGHT` pixels.

    Args:
        images: ``float [k, C, H, W]`` generator output (converted with :func:`display_uint8`),
            or already ``uint8 [k, H, W, C]`` (a numpy array of dtype uint8).
        path: the PNG file.
        generator: whose ``to_uint8`` converts float images (optional).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import imageio.v3 as iio  # third-party, only when writing

    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        arr = images if images.ndim == 4 else images[None]
    else:
        arr = display_uint8(images, generator)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    row = np.concatenate(list(arr), axis=1)
    row = upscale(row, max(1, DISPLAY_HEIGHT // max(1, arr.shape[1])))
    path = Path(path)
    iio.imwrite(path, row)
    return path

"""Pieces shared by every MANGO generator: display conversion, safe weight loading, ``wrap``.

* :func:`to_uint8` (defined in :mod:`mango.imaging`, re-exported here) turns a
  generator's image batch ``[k, C, H, W]`` into ``uint8 [k, H, W, C]`` for people
  (PNG, GIF), undoing the generator's value range or per-channel normalisation;
  :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD` come from :mod:`mango.data`.
* :func:`load_weights` reads a ``state_dict`` file with ``torch.load(...,
  weights_only=True)`` and turns every failure (missing file, not a torch file,
  missing / unexpected keys, wrong shapes) into a :class:`~mango.errors.ConfigError`
  that names the file and the problem.
* :class:`GeneratorBase` is the small mixin the concrete generators share
  (``value_range``, ``to_uint8``, ``device``, ``describe``).
* :func:`wrap` makes any ``nn.Module`` plus a :class:`~mango.spaces.LatentSpace`
  a generator.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mango.data import CIFAR10_MEAN, CIFAR10_STD
from mango.devices import module_device, to_module_dtype
from mango.errors import ConfigError
from mango.fingerprint import transform_fingerprint
from mango.imaging import to_uint8
from mango.modes import eval_mode
from mango.spaces import LatentSpace

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "to_uint8", "load_weights", "load_state", "save_weights",
    "GeneratorBase", "WrappedGenerator", "wrap", "weights_dir", "normalised_range", "save_grid",
]

log = logging.getLogger(__name__)

def weights_dir() -> Path:
    """The folder with the project's embedded default weights (``mango/generators/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def normalised_range(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """The ``(lo, hi)`` that images in ``[0, 1]`` take after ``(x - mean) / std`` (over all channels)."""
    lo = min((0.0 - m) / s for m, s in zip(mean, std))
    hi = max((1.0 - m) / s for m, s in zip(mean, std))
    return float(lo), float(hi)


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with every failure as a :class:`ConfigError`.

    Returns the loaded object, which must be a mapping (a ``state_dict`` or a dict
    holding one).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"weights file {str(p)!r} does not exist")
    if not p.is_file():
        raise ConfigError(f"weights path {str(p)!r} is not a file")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError, TypeError) as e:
        raise ConfigError(
            f"weights file {str(p)!r} could not be read as a PyTorch state_dict "
            f"(truncated, corrupted or not a torch.save file): {type(e).__name__}: {_short(e)}"
        ) from None
    except Exception as e:  # pickle.UnpicklingError and the weights_only refusals
        raise ConfigError(
            f"weights file {str(p)!r} could not be loaded safely with weights_only=True "
            f"(it holds something other than tensors, or it is corrupted): {type(e).__name__}: {_short(e)}"
        ) from None
    if not isinstance(obj, Mapping):
        raise ConfigError(f"weights file {str(p)!r} holds a {type(obj).__name__}, expected a state_dict (a dict of tensors)")
    return dict(obj)


def _short(e: BaseException, n: int = 300) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return s[:n]


def load_weights(module: nn.Module, path: str | os.PathLike, *, key: str | None = None,
                 ignore: Sequence[str] = (), map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a ``state_dict`` file into ``module`` strictly, with clear errors.

    Args:
        module: the model to fill.
        path: the ``.pt`` file.
        key: if given, the state dict is ``file[key]`` (checkpoints that also store
            config and training metadata); the rest of the file is returned.
        ignore: key prefixes in the file that are not loaded (e.g. training-only buffers).

    Returns:
        The whole loaded mapping (so callers can read stored config).

    Raises:
        ConfigError: the file is missing or unreadable, or its keys / shapes do
            not match ``module`` (the message lists the first offending keys).
    """
    obj = load_state(path, map_location=map_location)
    sd = obj
    if key is not None:
        if key not in obj or not isinstance(obj[key], Mapping):
            raise ConfigError(f"weights file {str(path)!r} has no {key!r} entry; it holds keys {sorted(obj)[:10]}")
        sd = obj[key]
    non_tensor = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if non_tensor:
        raise ConfigError(f"weights file {str(path)!r}: entries {non_tensor[:5]} are not tensors, so it is not a "
                          f"state_dict of {type(module).__name__} (wrong file for this generator?)")
    sd = {k: v for k, v in sd.items() if not any(k.startswith(pfx) for pfx in ignore)}
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not any(k.startswith(pfx) for pfx in ignore)]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
        raise ConfigError(
            f"weights file {str(path)!r} does not match {type(module).__name__}: " + "; ".join(parts)
            + " (wrong file, or the architecture options differ from the ones it was trained with)"
        )
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
           for k in sd if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ConfigError(
            f"weights file {str(path)!r} has {len(bad)} tensors of the wrong shape for {type(module).__name__}: "
            + "; ".join(bad[:4]) + (" ..." if len(bad) > 4 else "")
            + " (the architecture options differ from the ones it was trained with)"
        )
    nonfinite = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise ConfigError(f"weights file {str(path)!r} holds NaN or inf in {nonfinite[:4]}")
    sd = {k: v.to(own[k].dtype) for k, v in sd.items()}
    module.load_state_dict(sd, strict=not ignore)
    log.info("loaded %d tensors from %s into %s", len(sd), path, type(module).__name__)
    return obj


def save_weights(path: str | os.PathLike, state: Mapping[str, torch.Tensor], *, half: bool = False,
                 **meta: Any) -> None:
    """Save ``{"state_dict": ..., "config": meta}`` loadable with ``weights_only=True``.

    ``half=True`` stores floating tensors as float16 (smaller committed files);
    they are cast back to the model's dtype on load.
    """
    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().contiguous()
          for k, v in state.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(dict(meta), default=str))  # plain types only: loadable with weights_only=True
    torch.save({"state_dict": sd, "config": config}, path)


class GeneratorBase(nn.Module):
    """Mixin of the generator protocol (:mod:`mango.protocols`) for torch modules.

    Subclasses set ``space``, ``value_range`` and optionally ``mean``/``std`` (the
    per-channel normalisation of their output, undone by :meth:`to_uint8`).
    """

    space: LatentSpace
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    differentiable: bool = True
    name: str = "generator"

    @property
    def device(self) -> torch.device:
        """Device of the first parameter or buffer (CPU when there is none)."""
        return module_device(self)

    def to_uint8(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """This generator's images ``[k, C, H, W]`` -> ``uint8 [k, H, W, C]`` for display."""
        if self.mean is not None or self.std is not None:
            return to_uint8(images, mean=self.mean, std=self.std)
        return to_uint8(images, self.value_range)

    def sample(self, k: int, seed: int = 0) -> torch.Tensor:
        """Images of ``k`` uniformly random codes (no grad), ``[k, C, H, W]``."""
        I = self.space.sample(np.random.default_rng(seed), k)
        with torch.no_grad(), eval_mode(self):
            return self(self.space.decode(I, self.device))

    def describe(self) -> str:
        return f"{self.name} ({self.space.kind} space d={self.space.d}, n={self.space.n})"


class WrappedGenerator(GeneratorBase):
    """Any ``nn.Module`` (or callable) mapping ``space.decode(I)`` to images, as a generator."""

    def __init__(self, module: nn.Module | Callable[[torch.Tensor], torch.Tensor], space: LatentSpace, *,
                 value_range: tuple[float, float] = (0.0, 1.0), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, name: str | None = None,
                 differentiable: bool = True) -> None:
        super().__init__()
        if not isinstance(space, LatentSpace):
            raise ConfigError(f"wrap needs a mango.spaces.LatentSpace, got {type(space).__name__}")
        if not callable(module):
            raise ConfigError(f"wrap needs a callable module, got {type(module).__name__}")
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ConfigError(f"value_range must have hi > lo, got {value_range!r}")
        self.module = module if isinstance(module, nn.Module) else _Fn(module)
        self.space = space
        self.value_range = (lo, hi)
        self.mean = tuple(float(v) for v in mean) if mean is not None else None
        self.std = tuple(float(v) for v in std) if std is not None else None
        if self.std is not None and not all(v > 0 and v < float("inf") for v in self.std):
            raise ConfigError(f"wrap: std must be finite and > 0 for every channel, got {std!r}")
        if self.mean is not None and not all(abs(v) < float("inf") for v in self.mean):
            raise ConfigError(f"wrap: mean must be finite, got {mean!r}")
        self.name = name or type(module).__name__
        self.differentiable = bool(differentiable)
        self._channels_checked = self.mean is None and self.std is None
        self.training = False       # the wrapper itself (not the user's module): a module in eval stays untouched

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` from ``space.decode`` (moved to the module's device and, when floating, its floating dtype)
        -> images ``[k, C, H, W]``. The module runs in eval mode and gets its own train/eval mode back
        (:func:`mango.modes.eval_mode`): wrapping a generator in the middle of training leaves it as it was."""
        z = to_module_dtype(self.module, z.to(self.device))
        with eval_mode(self.module):
            x = self.module(z)
        if not self._channels_checked and isinstance(x, torch.Tensor) and x.ndim == 4:
            for what, v in (("mean", self.mean), ("std", self.std)):
                if v is not None and len(v) != x.shape[1]:
                    raise ConfigError(f"wrap: {what} has {len(v)} channel value(s) but {self.name}'s images have "
                                      f"{x.shape[1]} channel(s) (shape {list(x.shape)}); give one value per channel")
            self._channels_checked = True
        return x


class _Fn(nn.Module):
    """A plain function as a module. Its repr names the function and a fingerprint of what it computes
    (:func:`mango.fingerprint.transform_fingerprint`: its code and the values it closes over, tensors by
    value), so a run's structure mark sees a wrapped function change although it has no parameters."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def extra_repr(self) -> str:
        name = getattr(self.fn, "__qualname__", type(self.fn).__qualname__)
        return f"fn={name}, computes={transform_fingerprint(self.fn)}"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)


def wrap(module: nn.Module | Callable[[torch.Tensor], torch.Tensor], space: LatentSpace, *,
         value_range: tuple[float, float] = (0.0, 1.0), mean: Sequence[float] | None = None,
         std: Sequence[float] | None = None, name: str | None = None,
         differentiable: bool = True) -> WrappedGenerator:
    """Make ``module`` + ``space`` a MANGO generator.

    ``module(space.decode(I))`` must return images ``[k, C, H, W]`` with values in
    ``value_range`` (or normalised with ``mean``/``std``, which ``to_uint8`` undoes).
    To make it available by name in configs and on the command line::

        from mango import registry
        registry.register("generator", "my-gan",
                          lambda device="cpu": wrap(MyGAN().to(device), GridSpace(64, 16), name="my-gan"))

    Example:
        >>> from mango.spaces import GridSpace
        >>> g = wrap(torch.nn.Sequential(torch.nn.Unflatten(1, (1, 4, 4)), torch.nn.Sigmoid()), GridSpace(16, 8))
        >>> g(g.space.decode([[0] * 16])).shape
        torch.Size([1, 1, 4, 4])
    """
    return WrappedGenerator(module, space, value_range=value_range, mean=mean, std=std, name=name,
                            differentiable=differentiable)


def save_grid(path: str | os.PathLike, images: np.ndarray, ncol: int = 8, scale: int = 1, pad: int = 1) -> Path:
    """Write ``uint8 [k, H, W, C]`` images as one PNG grid (``ncol`` per row, nearest upscaling by ``scale``)."""
    import imageio.v3 as iio

    imgs = np.asarray(images, dtype=np.uint8)
    k, h, w, c = imgs.shape
    if scale > 1:
        imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    nrow = -(-k // ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(k):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = imgs[i]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(p, grid[:, :, 0] if c == 1 else grid)
    return p

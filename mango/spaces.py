"""Discrete search spaces over a generator's latent.

Every optimizer in MANGO works on integer index arrays ``I`` of shape ``[k, d]``
with ``0 <= I[:, j] < n``. A :class:`LatentSpace` says what those indices mean
and turns them into the latent tensor a generator takes (:meth:`LatentSpace.decode`).

Two kinds:

* :class:`CodebookSpace` -- ``d`` categorical variables with ``n`` values and no
  order (VQ-VAE codebook indices). ``decode`` returns the indices themselves as a
  ``LongTensor`` laid out on the latent grid.
* :class:`GridSpace` -- ``d`` continuous variables, each put on ``n`` levels. The
  default levels are the equal-probability quantiles of N(0, 1), so a GAN latent
  drawn uniformly over indices follows the generator's prior; ``levels="uniform"``
  puts them evenly on ``[low, high]``. ``decode`` returns a float tensor.

Both offer a QTT view (:class:`QTTView`) when ``n = 2**q``: each variable becomes
``q`` binary variables (most significant bit first), the representation
tensor-train optimizers like best at large ``n``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["LatentSpace", "CodebookSpace", "GridSpace", "QTTView", "space_from_dict"]


def _as_shape(d: int, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if shape is None:
        return (int(d),)
    shape = tuple(int(s) for s in shape)
    if math.prod(shape) != d:
        raise ConfigError(f"latent shape {shape} has {math.prod(shape)} positions, but d={d}")
    return shape


@dataclass(frozen=True)
class LatentSpace:
    """``d`` discrete variables with ``n`` levels each; base of the concrete spaces.

    Attributes:
        d: number of variables (latent positions), >= 1.
        n: number of levels per variable, >= 2.
        shape: how the ``d`` positions are laid out for the generator
            (e.g. ``(8, 8)`` for a VQ-VAE grid); ``prod(shape) == d``.
    """

    d: int
    n: int
    shape: tuple[int, ...] | None = None

    kind = "abstract"
    ordered = False

    def __post_init__(self) -> None:
        if int(self.d) < 1:
            raise ConfigError(f"space dimension d must be >= 1, got {self.d!r}")
        if int(self.n) < 2:
            raise ConfigError(f"space levels n must be >= 2, got {self.n!r}")
        object.__setattr__(self, "shape", _as_shape(int(self.d), self.shape))

    # -- index handling -------------------------------------------------
    def validate(self, I: Any) -> np.ndarray:
        """Check an index batch and return it as ``int64 [k, d]``.

        Raises:
            ConfigError: wrong number of dimensions, wrong ``d``, or an index
                outside ``[0, n)``; the message names the offending row.
        """
        arr = np.asarray(I)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.d:
            raise ConfigError(f"index batch must have shape [k, {self.d}], got {tuple(np.shape(I))}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise ConfigError("index batch must hold integers")
        arr = arr.astype(np.int64, copy=False)
        bad = (arr < 0) | (arr >= self.n)
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            raise ConfigError(
                f"index {arr[row, col]} at query {row}, position {col} is outside [0, {self.n})"
            )
        return arr

    def sample(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """Uniform random indices, ``int64 [k, d]``."""
        return rng.integers(0, self.n, size=(int(k), self.d), dtype=np.int64)

    @property
    def log10_size(self) -> float:
        """log10 of the number of points, ``d * log10(n)``."""
        return self.d * math.log10(self.n)

    def qtt(self) -> "QTTView":
        """The QTT view of this space (requires ``n`` to be a power of two)."""
        return QTTView(self)

    def decode(self, I: Any, device: torch.device | str | None = None) -> torch.Tensor:
        """Map indices ``[k, d]`` to the generator's latent ``[k, *shape]``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (inverse: :func:`space_from_dict`)."""
        return {"kind": self.kind, "d": self.d, "n": self.n, "shape": list(self.shape)}


@dataclass(frozen=True)
class CodebookSpace(LatentSpace):
    """Categorical variables without order: VQ-VAE codebook indices.

    ``decode(I)`` returns ``LongTensor [k, *shape]`` with values in ``[0, n)``.
    """

    kind = "codebook"
    ordered = False

    def decode(self, I: Any, device: torch.device | str | None = None) -> torch.Tensor:
        arr = self.validate(I)
        return torch.as_tensor(arr, device=device).reshape(arr.shape[0], *self.shape)

    def encode(self, z: torch.Tensor | np.ndarray) -> np.ndarray:
        """Inverse of :meth:`decode`: ``[k, *shape]`` indices -> ``int64 [k, d]``."""
        arr = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
        return self.validate(arr.reshape(arr.shape[0], self.d))


_LEVELS = ("normal", "uniform")


@dataclass(frozen=True)
class GridSpace(LatentSpace):
    """Continuous variables put on ``n`` levels each (ordered).

    Args:
        levels: ``"normal"`` (default): levels are the quantiles
            ``Phi^-1((i + 0.5) / n)`` of N(0, 1), each equally likely under the
            prior; ``"uniform"``: ``n`` evenly spaced values on ``[low, high]``.
        low, high: the interval for ``"uniform"`` levels.

    ``decode(I)`` returns ``float32 [k, *shape]``.
    """

    levels: str = "normal"
    low: float = -1.0
    high: float = 1.0
    values: np.ndarray = field(init=False, repr=False, compare=False)

    kind = "grid"
    ordered = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.levels not in _LEVELS:
            raise ConfigError(f"unknown grid levels {self.levels!r}; valid choices: {', '.join(_LEVELS)}")
        if self.levels == "normal":
            nd = NormalDist()
            vals = np.array([nd.inv_cdf((i + 0.5) / self.n) for i in range(self.n)])
        else:
            if not self.high > self.low:
                raise ConfigError(f"uniform grid needs high > low, got low={self.low}, high={self.high}")
            vals = np.linspace(self.low, self.high, self.n)
        object.__setattr__(self, "values", vals.astype(np.float32))

    def decode(self, I: Any, device: torch.device | str | None = None) -> torch.Tensor:
        arr = self.validate(I)
        z = torch.as_tensor(self.values[arr], device=device)
        return z.reshape(arr.shape[0], *self.shape)

    def encode(self, z: torch.Tensor | np.ndarray) -> np.ndarray:
        """Nearest level of each value: ``[k, *shape]`` floats -> ``int64 [k, d]``.

        Exact inverse of :meth:`decode` on decoded latents.
        """
        arr = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float64)
        arr = arr.reshape(arr.shape[0], self.d)
        mids = (self.values[1:] + self.values[:-1]) / 2.0
        return np.searchsorted(mids, arr).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(levels=self.levels, low=self.low, high=self.high)
        return out


class QTTView:
    """Binary (quantized tensor-train) view of a space with ``n = 2**q`` levels.

    Variable ``j`` becomes bits ``j*q .. j*q+q-1``, most significant first, so the
    view has ``d * q`` variables with 2 levels each.
    """

    def __init__(self, space: LatentSpace) -> None:
        q = int(round(math.log2(space.n)))
        if 2**q != space.n:
            raise ConfigError(f"QTT view needs n to be a power of two, got n={space.n} (protes and ttopt: pass "
                              "qtt=false to search the n values per variable directly)")
        self.space = space
        self.q = q
        self.d = space.d * q
        self.n = 2
        self._weights = (1 << np.arange(q - 1, -1, -1)).astype(np.int64)

    def to_bits(self, I: Any) -> np.ndarray:
        """``int [k, d]`` indices -> ``int64 [k, d*q]`` bits (MSB first per variable)."""
        arr = self.space.validate(I)
        bits = (arr[:, :, None] >> np.arange(self.q - 1, -1, -1)) & 1
        return bits.reshape(arr.shape[0], self.d).astype(np.int64)

    def from_bits(self, B: Any) -> np.ndarray:
        """Inverse of :meth:`to_bits`: ``[k, d*q]`` bits -> ``int64 [k, d]``."""
        b = np.asarray(B, dtype=np.int64)
        if b.ndim == 1:
            b = b[None, :]
        if b.shape[1] != self.d or ((b != 0) & (b != 1)).any():
            raise ConfigError(f"bit batch must be 0/1 of shape [k, {self.d}], got {b.shape}")
        return b.reshape(b.shape[0], self.space.d, self.q) @ self._weights


def space_from_dict(spec: dict[str, Any]) -> LatentSpace:
    """Rebuild a space from :meth:`LatentSpace.to_dict` output (or a config table)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    kinds = {"codebook": CodebookSpace, "grid": GridSpace}
    if kind not in kinds:
        raise ConfigError(f"unknown space kind {kind!r}; valid choices: {', '.join(kinds)}")
    if "shape" in spec and spec["shape"] is not None:
        spec["shape"] = tuple(spec["shape"])
    return kinds[kind](**spec)

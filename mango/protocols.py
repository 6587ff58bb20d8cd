"""The small protocols that generators and targets meet (no subclassing needed).

A *generator* maps a latent batch to an image batch::

    generator.space            -> LatentSpace (what the indices mean)
    generator(z)               -> torch.Tensor [k, C, H, W]
    generator.value_range      -> (lo, hi) of its pixel values       (optional)
    generator.encode(images)   -> int64 [k, d] indices                (optional, VQ-VAE)
    generator.code_vectors()   -> float [n, D] vector of each value  (optional, VQ-VAE codebook;
                                  elite's directional moves use it)
    generator.to_uint8(images) -> uint8 [k, H, W, C] for display      (optional)
    generator.differentiable   -> bool                                (optional, default False)

A *target* maps an image batch to activations::

    target(images)             -> torch.Tensor [k] (or [k, channels] for a rig)
    target.differentiable      -> bool  (optional, default False)
    target.noisy               -> bool  (optional, default False; noisy targets are not cached)

Any callable with these attributes works; a plain function is a target that is
neither differentiable nor noisy.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from .spaces import LatentSpace

__all__ = ["Generator", "Target", "flag"]


@runtime_checkable
class Generator(Protocol):
    """Latent batch ``z`` (see ``space.decode``) -> images ``[k, C, H, W]``."""

    space: LatentSpace

    def __call__(self, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Target(Protocol):
    """Images ``[k, C, H, W]`` -> activations ``[k]`` (float) or ``[k, channels]``."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def flag(obj: Any, name: str, default: bool = False) -> bool:
    """Read an optional boolean protocol attribute (``differentiable``, ``noisy``)."""
    return bool(getattr(obj, name, default))

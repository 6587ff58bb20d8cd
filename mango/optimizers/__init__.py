"""Ask/tell optimizers. Found by name through :mod:`mango.registry` (entry points ``mango.optimizers``).

``make_optimizer(name, space, batch_size=..., seed=..., budget=..., **params)``
builds one; unknown names or parameters raise :class:`~mango.errors.ConfigError`
naming the valid choices.
"""
from __future__ import annotations

from typing import Any

from ..spaces import LatentSpace
from .base import Optimizer

__all__ = ["Optimizer", "make_optimizer"]


def make_optimizer(name: str, space: LatentSpace, *, batch_size: int | None = None, seed: int = 0,
                   budget: int | None = None, params: dict[str, Any] | None = None) -> Optimizer:
    """Build the optimizer registered as ``name`` for ``space``.

    Args:
        batch_size: queries per ask; ``None`` = the optimizer's own default.
        budget: the run's total queries (some optimizers use it).
        params: optimizer-specific parameters (see ``mango optimizers``).
    """
    from .. import registry

    fixed: dict[str, Any] = {"space": space, "seed": seed, "budget": budget}
    if batch_size is not None:
        fixed["batch_size"] = batch_size
    return registry.create("optimizer", name, params, **fixed)

"""Ask/tell optimizers. Found by name through :mod:`mango.registry` (entry points ``mango.optimizers``).

``make_optimizer(name, space, batch_size=..., seed=..., budget=..., **params)``
builds one; unknown names or parameters raise :class:`~mango.errors.ConfigError`
naming the valid choices.
"""
from __future__ import annotations

import logging
from typing import Any

from ..errors import ConfigError, check_int, check_seed
from ..spaces import LatentSpace
from .base import Optimizer

__all__ = ["Optimizer", "make_optimizer", "MAX_BATCH_SIZE", "DEFAULT_OPTIMIZER"]

log = logging.getLogger(__name__)

#: the optimizer a run uses when none is named (command line, TOML, ``mango.maximize``): a CMA-ES search
#: over encoded 2 x 2 colour layouts for 40 % of the budget (at most 400 queries), then the elite local
#: search from its best codes and natural-image starts (:mod:`mango.optimizers.handoff`); on rigs, grids
#: and generators without an encoder it is ``elite`` alone. Why, with the measurements, in README.md
#: ("Which optimizer, and why")
DEFAULT_OPTIMIZER = "layout-elite"

#: the most queries one ask may hold; a larger ``batch_size`` is refused before anything is allocated
MAX_BATCH_SIZE = 100_000


def make_optimizer(name: str, space: LatentSpace, *, batch_size: int | None = None, seed: int = 0,
                   budget: int | None = None, params: dict[str, Any] | None = None) -> Optimizer:
    """Build the optimizer registered as ``name`` for ``space``.

    Args:
        batch_size: queries per ask (an int in ``[1, MAX_BATCH_SIZE]``); ``None`` = the
            optimizer's own default. A batch larger than ``budget`` is cut to ``budget``
            (logged as a warning) before the optimizer allocates anything.
        seed: an int.
        budget: the run's total queries (a positive int); handed only to optimizers whose
            factory takes a ``budget`` parameter (nevergrad's, gradient AM), so an optimizer
            never accepts a parameter it ignores.
        params: optimizer-specific parameters (see ``mango optimizers``); one the optimizer
            does not take (``budget`` included) raises :class:`ConfigError` naming the valid ones.

    Raises:
        ConfigError: a non-integer ``batch_size``, ``seed`` or ``budget`` (``True``, ``2.5``,
            ``"a"``), a batch size below 1 or above :data:`MAX_BATCH_SIZE`, an unknown name
            or parameter.
    """
    from .. import registry

    seed = check_seed(seed)
    if budget is not None:
        budget = check_int(budget, "budget", minimum=1)
    fixed: dict[str, Any] = {"space": space, "seed": seed}
    if "budget" in registry.describe_params(registry.get("optimizer", name)):
        fixed["budget"] = budget
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if budget is not None and batch_size > budget:
            log.warning("batch_size %d is larger than the budget of %d queries: using batch_size %d",
                        batch_size, budget, budget)
            batch_size = budget
        if batch_size > MAX_BATCH_SIZE:
            raise ConfigError(f"batch_size {batch_size} is too large: one ask may hold at most "
                              f"{MAX_BATCH_SIZE} queries (valid: 1 to {MAX_BATCH_SIZE})")
        fixed["batch_size"] = batch_size
    return registry.create("optimizer", name, params, **fixed)

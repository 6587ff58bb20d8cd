"""The ask/tell optimizer interface every MANGO optimizer implements.

An optimizer searches integer index arrays of a :class:`~mango.spaces.LatentSpace`
and *maximizes*::

    I = opt.ask(limit)   # int64 [k', d], 0 <= I < n, k' <= limit - (queries spent inside this ask)
    spent = opt.take_spent()   # queries the optimizer evaluated itself in that ask (gradient AM)
    y = objective(I)     # float64 [k']
    opt.tell(I, y)

Query spending (the loop owns the budget): ``limit`` is the most queries one
``ask`` may spend in all, its own forward passes plus the rows it returns. An
optimizer that evaluates the pipeline itself records each such query with
:meth:`Optimizer.spend`; the loop reads them with :meth:`Optimizer.take_spent`
right after the ask, counts them in the budget and journals them. An ask whose
own spending leaves no room for one returned row breaks this contract and raises
:class:`~mango.errors.MangoError`; rows beyond the room are cut by the base class
(the last batch of a run).

``state_dict()`` returns JSON/NPZ-able state (numpy arrays, numbers, strings,
nested dicts/lists) or ``None`` when the optimizer cannot serialise its state;
the loop then resumes by *replaying* the journal (ask again with the same seed,
tell the journaled values), which gives the same state for any optimizer whose
ask is deterministic given its seed and past tells.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, MangoError, check_int, check_seed
from ..spaces import LatentSpace

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: batch size ``k``, seed, best-so-far tracking.

    Args:
        space: the search space.
        batch_size: queries per ``ask`` (k >= 1).
        seed: fixes the run.

    Subclasses implement ``_ask() -> int64 [k, d]`` and ``_tell(I, y)``; the base
    checks shapes and keeps the best point seen (``best_x``, ``best_y``).
    """

    name: ClassVar[str] = "base"
    #: what the optimizer sees of the space (shown by ``mango optimizers``)
    description: ClassVar[str] = ""
    #: set True by optimizers that need the pipeline itself (gradient AM): the loop calls ``bind(objective)``
    needs_objective: ClassVar[bool] = False
    #: True when the first batch is uniform random draws from the space (random search, the GA): only then
    #: does a run's summary estimate random search's best from it
    uniform_first_batch: ClassVar[bool] = False
    #: queries spent inside ``_ask`` and not yet taken by the loop (see :meth:`spend`, :meth:`take_spent`)
    _spent: int = 0
    #: the ``limit`` of the ask in progress (``None`` outside ``ask`` or when unlimited); read by ``_ask``
    #: of optimizers that spend queries themselves
    ask_limit: int | None = None

    def __init__(self, space: LatentSpace, batch_size: int = 10, seed: int = 0) -> None:
        self.space = space
        self.k = check_int(batch_size, "batch_size", minimum=1)
        self.seed = check_seed(seed)
        self.best_x: np.ndarray | None = None
        self.best_y = -np.inf
        self.n_told = 0

    def ask(self, limit: int | None = None) -> np.ndarray:
        """Next batch of candidates, ``int64 [k', d]`` with ``1 <= k' <= k``.

        Args:
            limit: the most queries this call may spend in all (queries the
                optimizer evaluates itself, see :meth:`spend`, plus the rows
                returned), ``>= 1``; ``None``: no limit. Rows beyond
                ``limit - spent`` are cut (the last batch of a run).

        Raises:
            MangoError: the optimizer spent so much inside this ask that no row fits.
        """
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
                raise ConfigError(f"ask limit must be a positive integer or None, got {limit!r}")
            limit = int(limit)
        s0 = self._spent
        self.ask_limit = limit
        try:
            I = np.asarray(self._ask(), dtype=np.int64)
        finally:
            self.ask_limit = None
        if I.ndim != 2 or I.shape[1] != self.space.d or I.shape[0] < 1:
            raise RuntimeError(f"{self.name}: ask produced shape {I.shape}, expected [k >= 1, {self.space.d}]")
        if limit is not None:
            room = limit - (self._spent - s0)
            if room < 1:
                raise MangoError(f"{self.name}: this ask spent {self._spent - s0} queries itself with a limit of "
                                 f"{limit}, leaving no room for the {len(I)} codes it returns; an optimizer must "
                                 "keep its own queries plus its returned codes within the limit")
            I = I[:room]
        return I

    def spend(self, n: int) -> None:
        """Record ``n`` queries this optimizer evaluated itself (e.g. gradient AM forward passes)."""
        self._spent = self._spent + int(n)

    def take_spent(self) -> int:
        """Queries recorded with :meth:`spend` since the last call (0 for most optimizers); resets the count."""
        n, self._spent = self._spent, 0
        return n

    def tell(self, I: np.ndarray, y: np.ndarray) -> None:
        """Report the values ``y [k]`` of the asked batch ``I [k, d]`` (larger is better)."""
        I = np.asarray(I, dtype=np.int64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if I.shape[0] != y.shape[0]:
            raise ConfigError(f"tell got {I.shape[0]} codes but {y.shape[0]} values")
        if y.size:
            j = int(np.argmax(y))
            if y[j] > self.best_y:
                self.best_y, self.best_x = float(y[j]), I[j].copy()
        self.n_told += y.size
        self._tell(I, y)

    def recommend(self) -> tuple[np.ndarray | None, float]:
        """Best code seen and its value."""
        return self.best_x, self.best_y

    def _ask(self) -> np.ndarray:
        raise NotImplementedError

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any] | None:
        """Serialisable state, or ``None`` (resume by replay)."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{self.name} restores by replay, not from a state dict")

    def _base_state(self) -> dict[str, Any]:
        return {"best_x": None if self.best_x is None else self.best_x.tolist(),
                "best_y": self.best_y, "n_told": self.n_told}

    def _load_base_state(self, s: dict[str, Any]) -> None:
        self.best_x = None if s["best_x"] is None else np.asarray(s["best_x"], dtype=np.int64)
        self.best_y = float(s["best_y"])
        self.n_told = int(s["n_told"])

    def bind(self, objective: Any) -> None:
        """Give the optimizer the objective (only used when ``needs_objective``)."""
        self.objective = objective

    def close(self) -> None:
        """Release resources (threads); called by the loop at the end."""

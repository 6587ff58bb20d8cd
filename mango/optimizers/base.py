"""The ask/tell optimizer interface every MANGO optimizer implements.

An optimizer searches integer index arrays of a :class:`~mango.spaces.LatentSpace`
and *maximizes*::

    I = opt.ask()        # int64 [k, d], 0 <= I < n
    y = objective(I)     # float64 [k]
    opt.tell(I, y)

``state_dict()`` returns JSON/NPZ-able state (numpy arrays, numbers, strings,
nested dicts/lists) or ``None`` when the optimizer cannot serialise its state;
the loop then resumes by *replaying* the journal (ask again with the same seed,
tell the journaled values), which gives the same state for any optimizer whose
ask is deterministic given its seed and past tells.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
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

    def __init__(self, space: LatentSpace, batch_size: int = 10, seed: int = 0) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        self.space = space
        self.k = int(batch_size)
        self.seed = int(seed)
        self.best_x: np.ndarray | None = None
        self.best_y = -np.inf
        self.n_told = 0

    def ask(self) -> np.ndarray:
        """Next batch of candidates, ``int64 [k', d]`` (k' = k for most optimizers)."""
        I = np.asarray(self._ask(), dtype=np.int64)
        if I.ndim != 2 or I.shape[1] != self.space.d:
            raise RuntimeError(f"{self.name}: ask produced shape {I.shape}, expected [k, {self.space.d}]")
        return I

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

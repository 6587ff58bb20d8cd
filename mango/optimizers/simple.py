"""Random search and an XDream-style genetic algorithm, both in plain numpy."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, check_int
from ..spaces import LatentSpace
from .base import Optimizer

__all__ = ["RandomSearch", "GeneticAlgorithm"]


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


class RandomSearch(Optimizer):
    """Uniform random search over the index grid: the baseline every table needs."""

    description = "uniform random indices (codebook and grid alike)"
    uniform_first_batch = True

    def __init__(self, space: LatentSpace, batch_size: int = 10, seed: int = 0) -> None:
        super().__init__(space, batch_size, seed)
        self.rng = np.random.default_rng(self.seed)

    def _ask(self) -> np.ndarray:
        return self.space.sample(self.rng, self.k)

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "rng": _rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)
        _set_rng_state(self.rng, state["rng"])


class GeneticAlgorithm(Optimizer):
    """Genetic algorithm in the style of XDream (Xiao & Kreiman 2020).

    Each generation (one ``ask`` of ``batch_size`` codes): keep the ``n_elite``
    best codes unchanged, fill the rest with children of two parents drawn with
    probability ``softmax(z-scored fitness / temperature)``, uniform crossover,
    and per-position mutation with probability ``mutation``. A mutated codebook
    position takes a uniformly random new value (no order); a mutated grid
    position moves by a rounded N(0, ``mutation_scale * n``) step (ordered).

    Args:
        n_elite: codes carried over unchanged, in ``[0, batch_size)``; default (``None``)
            ``min(2, batch_size - 1)``.
        mutation: per-position mutation probability in (0, 1].
        mutation_scale: step size of grid mutations as a fraction of ``n``.
        temperature: selection temperature (> 0; smaller = greedier).
    """

    description = ("XDream-style GA: codebook mutations draw a new random value (unordered), "
                   "grid mutations take a Gaussian step (ordered)")

    uniform_first_batch = True      # its first population is uniform random codes

    def __init__(self, space: LatentSpace, batch_size: int = 20, seed: int = 0, *, n_elite: int | None = None,
                 mutation: float = 0.1, mutation_scale: float = 0.1, temperature: float = 0.5) -> None:
        super().__init__(space, batch_size, seed)
        if n_elite is None:
            n_elite = min(2, self.k - 1)
        elif check_int(n_elite, "n_elite", minimum=0) >= self.k:
            raise ConfigError(f"n_elite={n_elite} conflicts with batch_size={self.k}: n_elite must be in "
                              f"[0, batch_size={self.k}) (leave n_elite unset to get {min(2, self.k - 1)} "
                              f"for this batch size, or raise batch_size)")
        if not 0 < float(mutation) <= 1:
            raise ConfigError(f"mutation must be in (0, 1], got {mutation!r}")
        if not float(temperature) > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        if not float(mutation_scale) > 0:
            raise ConfigError(f"mutation_scale must be > 0 (a grid step as a fraction of n), got {mutation_scale!r}")
        self.n_elite, self.mutation = int(n_elite), float(mutation)
        self.mutation_scale, self.temperature = float(mutation_scale), float(temperature)
        self.rng = np.random.default_rng(self.seed)
        self.pop: np.ndarray | None = None
        self.fit: np.ndarray | None = None

    def _ask(self) -> np.ndarray:
        if self.pop is None:
            return self.space.sample(self.rng, self.k)
        z = (self.fit - self.fit.mean()) / (self.fit.std() + 1e-12)
        p = np.exp((z - z.max()) / self.temperature)
        p /= p.sum()
        order = np.argsort(-self.fit, kind="stable")
        elite = self.pop[order[: self.n_elite]]
        m = self.k - self.n_elite
        a = self.pop[self.rng.choice(len(p), size=m, p=p)]
        b = self.pop[self.rng.choice(len(p), size=m, p=p)]
        children = np.where(self.rng.random(a.shape) < 0.5, a, b)
        mut = self.rng.random(children.shape) < self.mutation
        if self.space.ordered:
            step = np.rint(self.rng.normal(0, max(1.0, self.mutation_scale * self.space.n), children.shape))
            children = np.where(mut, np.clip(children + step, 0, self.space.n - 1), children)
        else:
            children = np.where(mut, self.rng.integers(0, self.space.n, children.shape), children)
        return np.concatenate([elite, children.astype(np.int64)])

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        self.pop, self.fit = I.copy(), y.copy()

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "rng": _rng_state(self.rng),
                "pop": None if self.pop is None else self.pop, "fit": None if self.fit is None else self.fit}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)
        _set_rng_state(self.rng, state["rng"])
        self.pop = None if state["pop"] is None else np.asarray(state["pop"], dtype=np.int64)
        self.fit = None if state["fit"] is None else np.asarray(state["fit"], dtype=np.float64)

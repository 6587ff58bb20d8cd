"""Benchmark problems with known maxima, as index-space objectives.

Each factory returns a :class:`~mango.objective.FunctionObjective` whose
``known_max`` is exact (or, for large random TT tensors, the best value teneva's
TT optimiser finds, checked against brute force on small sizes in the tests).
They are what the optimizer tests, the PROTES comparison and the engine
benchmark run on.
"""
from __future__ import annotations

import numpy as np

from .objective import FunctionObjective
from .spaces import CodebookSpace, GridSpace

__all__ = ["tt_random", "separable", "quadratic_grid", "constant"]


def _rng(seed: int) -> np.random.Generator:
    """The problem's own random stream: never the one an optimizer with the same seed draws from."""
    return np.random.default_rng([0x4D414E47, int(seed)])


def tt_random(d: int = 8, n: int = 8, rank: int = 3, seed: int = 0, nonneg: bool = False) -> FunctionObjective:
    """A random TT tensor of rank ``rank`` (teneva.rand) on a codebook space.

    Cores are uniform on ``[-1, 1]`` (signed: the maximum is a rare extreme, a
    needle), or on ``[0, 1]`` with ``nonneg=True`` (a smoother landscape, like a
    firing rate).

    ``known_max`` is teneva's ``optima_tt`` maximum; for ``n**d <= 2**24`` it is
    replaced by the brute-force maximum (exact).
    """
    import teneva

    Y = teneva.rand([n] * d, rank, a=0.0 if nonneg else -1.0, b=1.0, seed=seed)
    if n**d <= 2**24:
        full = teneva.full(Y)
        known = float(full.max())
    else:
        known = float(teneva.optima_tt(Y)[3])
    fn = lambda I: teneva.get_many(Y, I)  # noqa: E731
    return FunctionObjective(fn, CodebookSpace(d, n), known_max=known, name=f"tt-random(d={d},n={n},r={rank},seed={seed},nonneg={nonneg})")


def separable(d: int = 64, n: int = 128, seed: int = 0) -> FunctionObjective:
    """``y(I) = sum_j W[j, I_j]`` with ``W ~ N(0, 1)``: unordered codebook problem, max = sum of row maxima."""
    W = _rng(seed).standard_normal((d, n))
    cols = np.arange(d)
    return FunctionObjective(lambda I: W[cols, I].sum(axis=1), CodebookSpace(d, n),
                             known_max=float(W.max(axis=1).sum()), name=f"separable(d={d},n={n},seed={seed})")


def quadratic_grid(d: int = 16, n: int = 32, seed: int = 0) -> FunctionObjective:
    """``y(z) = -||z - c||^2`` on a normal-quantile grid space with ``c`` a random grid point: ordered, max 0."""
    space = GridSpace(d, n)
    c = space.values[_rng(seed).integers(0, n, d)]
    return FunctionObjective(lambda I: -((space.values[I] - c) ** 2).sum(axis=1), space, known_max=0.0,
                             name=f"quadratic-grid(d={d},n={n},seed={seed})")


def constant(d: int = 64, n: int = 512) -> FunctionObjective:
    """A trivial objective (``y = I[:, 0]``) for measuring engine overhead; the cache is off."""
    return FunctionObjective(lambda I: I[:, 0].astype(np.float64), CodebookSpace(d, n), cache=False,
                             known_max=float(n - 1), name=f"constant(d={d},n={n})")

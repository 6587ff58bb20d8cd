"""nevergrad's optimizers behind MANGO's ask/tell interface, always asked in batches of ``k``.

How each optimizer sees the space (shown by ``mango optimizers``):

* grid spaces (ordered levels): a bounded integer ``Array`` on ``[0, n-1]``
  for every optimizer -- the order of the levels is meaningful.
* codebook spaces (no order), ``encoding="integer"`` (the default): also the bounded integer
  ``Array``. For the discrete (1+1) optimizers (``discrete-one-plus-one``,
  ``portfolio-discrete``) this respects "no order": their mutation replaces a
  coordinate by a fresh random value of its whole range, never a nearby one.
  The continuous families (CMA, DiagonalCMA, TwoPointsDE) and the
  meta-optimizers (NGOpt, Portfolio) do use the order, which is arbitrary for
  codes: the unordered alternative, ``Choice`` (``encoding="choice"``), hands
  them a softmax over ``d * n`` weights (32,768 dimensions for the paper's
  8 x 8 x 512 VQ-VAE), which costs ~1.7 s per query (Portfolio) and which
  full-covariance CMA cannot run on at all. Measured on the separable 16 x 32
  codebook problem at 2,000 queries (3 seeds, median best; random search 11.3,
  maximum 33.3): DiscreteOnePlusOne reached 29.9 with the integer ``Array`` and
  12.6 with ``Choice``, at a tenth of the overhead -- hence the default.

nevergrad minimises; MANGO maximises, so values are negated on ``tell``.
State is restored by replay (nevergrad optimizers are deterministic given the
parametrization's seeded random state and the told values).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..spaces import LatentSpace
from .base import Optimizer

__all__ = ["NevergradOptimizer", "NGOpt", "Portfolio", "CMA", "DiagonalCMA", "TwoPointsDE",
           "DiscreteOnePlusOne", "PortfolioDiscreteOnePlusOne"]


class NevergradOptimizer(Optimizer):
    """Wrap ``nevergrad.optimizers.registry[ng_name]`` (``num_workers = batch_size``).

    Args:
        budget: total queries of the run (nevergrad's meta-optimizers pick
            their algorithm from it); ``None`` = unknown.
        encoding: ``"integer"`` (bounded integer ``Array``, the default; see module doc)
            or ``"choice"`` (unordered ``Choice``).
    """

    ng_name: ClassVar[str] = ""

    def __init__(self, space: LatentSpace, batch_size: int = 10, seed: int = 0, *,
                 budget: int | None = None, encoding: str = "integer") -> None:
        super().__init__(space, batch_size, seed)
        import nevergrad as ng

        from ..errors import ConfigError

        if encoding not in ("integer", "choice"):
            raise ConfigError(f"unknown encoding {encoding!r}; valid choices: integer, choice")
        self.encoding = encoding
        if encoding == "choice":
            param = ng.p.Choice(list(range(space.n)), repetitions=space.d)
        else:
            param = ng.p.Array(shape=(space.d,), lower=0, upper=space.n - 1).set_integer_casting()
        param.random_state = np.random.RandomState(self.seed)
        self._ng = ng.optimizers.registry[self.ng_name](parametrization=param, budget=budget,
                                                         num_workers=self.k)
        self._pending: list[Any] = []

    def _to_index(self, cand: Any) -> np.ndarray:
        v = np.asarray(cand.value, dtype=np.float64).reshape(-1)
        return np.clip(np.rint(v), 0, self.space.n - 1).astype(np.int64)

    def _ask(self) -> np.ndarray:
        self._pending = [self._ng.ask() for _ in range(self.k)]
        return np.stack([self._to_index(c) for c in self._pending])

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        if len(I) > len(self._pending):
            raise RuntimeError(f"{self.name}: told {len(I)} values for {len(self._pending)} asked candidates")
        for cand, val in zip(self._pending, y):
            self._ng.tell(cand, -float(val))
        self._pending = []


def _make(ng_name: str, discrete: bool, doc: str) -> type[NevergradOptimizer]:
    """The subclass for ``nevergrad.optimizers.registry[ng_name]`` (class name = ``ng_name``)."""
    desc = ("bounded integer Array on [0, n-1]; its mutations resample a code uniformly, so codebook "
            "order is not used (encoding=choice for nevergrad's Choice)" if discrete else
            "bounded integer Array on [0, n-1] (uses an order that is arbitrary for codebook "
            "indices; nevergrad's unordered Choice costs ~1.7 s/query at d*n=32768)")
    return type(ng_name, (NevergradOptimizer,), {
        "ng_name": ng_name, "description": f"nevergrad {ng_name}; {desc}",
        "__doc__": f"nevergrad's {ng_name}: {doc}", "__module__": __name__})


NGOpt = _make("NGOpt", False, "meta-optimizer that picks an algorithm from budget and space.")
Portfolio = _make("Portfolio", False, "a portfolio of CMA, TwoPointsDE and others.")
CMA = _make("CMA", False, "covariance-matrix adaptation evolution strategy.")
DiagonalCMA = _make("DiagonalCMA", False, "CMA-ES with a diagonal covariance.")
TwoPointsDE = _make("TwoPointsDE", False, "differential evolution, two-point crossover.")
DiscreteOnePlusOne = _make("DiscreteOnePlusOne", True,
                           "(1+1) evolution with discrete mutations.")
PortfolioDiscreteOnePlusOne = _make("PortfolioDiscreteOnePlusOne", True,
                                    "(1+1) evolution with a portfolio of mutation rates.")

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

CMA's first step. On a fully bounded space nevergrad starts CMA-ES with a spread of 0.025 of
the range in every variable (0.05 below 18 variables): of the first 50 latents on the embedded
GAN's grid (32 variables, 16 levels) 1,589 of 1,600 values sat at levels 7-8 (on the paper's
512-entry codebook, the first 50 codes' indices sat within 226-286). ``cma`` and
``diagonal-cma`` take ``sigma0``, the first step as a fraction of the range ``[0, n-1]``.
Its default, ``"auto"``, is 0.25 on grid spaces (pycma's advice: about a quarter of the search
domain's width) and nevergrad's own on codebook spaces, where the order is arbitrary. Measured
before choosing (``experiments/results/cma_first_step.md``): on the
GAN grid, 0.25 beat nevergrad's step (mean best logit 20.4 against 13.8, random search 17.1);
on the paper codebook it did not (0.035 against 0.040).

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
        self._ng = self._ng_optimizer(ng, param, budget)
        self._pending: list[Any] = []

    def _ng_optimizer(self, ng: Any, param: Any, budget: int | None) -> Any:
        """The nevergrad optimizer on ``param`` (a subclass configures its family here)."""
        return ng.optimizers.registry[self.ng_name](parametrization=param, budget=budget,
                                                     num_workers=self.k)

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


class _CMAFamily(NevergradOptimizer):
    """nevergrad's CMA-ES with its first step set as a fraction of the range (module doc).

    Args:
        sigma0: first step (standard deviation of the first samples around the middle of
            ``[0, n-1]``, before nevergrad folds them back into the bounds) as a fraction of the
            range, in ``(0, 1]``; ``"nevergrad"`` (or ``None``) keeps nevergrad's own, 0.025 of
            the range (0.05 below 18 variables); ``"auto"``: 0.25 on an ordered (grid) space,
            nevergrad's own on a codebook. Ignored with ``encoding="choice"``.
    """

    diagonal: ClassVar[bool] = False

    def __init__(self, space: LatentSpace, batch_size: int = 10, seed: int = 0, *,
                 budget: int | None = None, encoding: str = "integer",
                 sigma0: float | str | None = "auto") -> None:
        from ..errors import ConfigError

        if sigma0 == "auto":
            sigma0 = 0.25 if space.ordered else None
        elif sigma0 == "nevergrad":
            sigma0 = None
        if sigma0 is not None and (isinstance(sigma0, (bool, str)) or not 0 < float(sigma0) <= 1):
            raise ConfigError(f"sigma0 must be a fraction of the range in (0, 1], 'auto' or "
                              f"'nevergrad', got {sigma0!r}")
        # the one-hot view (encoding="choice") has no range to take a fraction of: nevergrad's own step
        self.sigma0 = None if sigma0 is None or encoding != "integer" else float(sigma0)
        super().__init__(space, batch_size, seed, budget=budget, encoding=encoding)

    def _ng_optimizer(self, ng: Any, param: Any, budget: int | None) -> Any:
        if self.sigma0 is None:
            return super()._ng_optimizer(ng, param, budget)
        # nevergrad's CMA works on values standardised so that the range's sixth is 1, and on a
        # fully bounded space multiplies its ``scale`` by 0.15 (0.3 below 18 variables)
        multiplier = 0.3 if self.space.d < 18 else 0.15
        family = ng.optimizers.ParametrizedCMA(scale=6.0 * self.sigma0 / multiplier,
                                               diagonal=self.diagonal)
        return family(parametrization=param, budget=budget, num_workers=self.k)


CMA = type("CMA", (_CMAFamily,), {
    "ng_name": "CMA", "__module__": __name__,
    "description": "nevergrad CMA-ES; bounded integer Array on [0, n-1] (uses an order that is "
                   "arbitrary for codebook indices); first step sigma0 of the range (auto: 0.25 "
                   "on grids, nevergrad's own on codebooks: 0.025, 0.05 below 18 variables)",
    "__doc__": "nevergrad's CMA: covariance-matrix adaptation evolution strategy, first step "
               "``sigma0`` of the range."})
DiagonalCMA = type("DiagonalCMA", (_CMAFamily,), {
    "ng_name": "DiagonalCMA", "diagonal": True, "__module__": __name__,
    "description": "nevergrad DiagonalCMA; bounded integer Array on [0, n-1] (uses an order that "
                   "is arbitrary for codebook indices); first step sigma0 of the range (auto: "
                   "0.25 on grids, nevergrad's own on codebooks: 0.025, 0.05 below 18 variables)",
    "__doc__": "nevergrad's DiagonalCMA: CMA-ES with a diagonal covariance, first step "
               "``sigma0`` of the range."})
NGOpt = _make("NGOpt", False, "meta-optimizer that picks an algorithm from budget and space.")
Portfolio = _make("Portfolio", False, "a portfolio of CMA, TwoPointsDE and others.")
TwoPointsDE = _make("TwoPointsDE", False, "differential evolution, two-point crossover.")
DiscreteOnePlusOne = _make("DiscreteOnePlusOne", True,
                           "(1+1) evolution with discrete mutations.")
PortfolioDiscreteOnePlusOne = _make("PortfolioDiscreteOnePlusOne", True,
                                    "(1+1) evolution with a portfolio of mutation rates.")

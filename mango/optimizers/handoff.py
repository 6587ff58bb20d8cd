"""A layout search, then elite from its best codes (``layout-elite``): the portfolio of the tuning record.

For ``split`` queries :class:`~mango.optimizers.layout.LayoutCMA` searches smooth ``k x k`` colour layouts
encoded to codes, started muted (mid-grey, a small step); then :class:`~mango.optimizers.elite.EliteSearch`
runs for the rest of the budget, started from the layout search's ``top`` best distinct codes followed by
elite's usual natural-image starts, as ``experiments/search_output_needles.py portfolio`` does. On the
paper SNN's tuning units (``experiments/results/search_quality_tuning.md``) it fired 12 of 12 runs of three
silent channels where elite alone fired 6, and on a screen of 12 more tuning units chosen by a rule
(``experiments/search_default_screen.toml``) it met the rule written there before the runs (silent runs
fired 10/12 against 9/12, mean best rate 0.804 against 0.797, protes's 1,000-query value reached at a
median of 12 queries against 61), so it is the default (:data:`mango.optimizers.DEFAULT_OPTIMIZER`).

Without a layout phase (a noisy objective such as a rig, a generator without ``encode``, a grid space or
``split = 0``) it is elite alone, exactly as ``elite`` with the same seed and batch size.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, check_int
from ..spaces import LatentSpace
from .base import Optimizer
from .elite import EliteSearch, load_starts
from .layout import LayoutCMA

__all__ = ["LayoutThenElite", "DEFAULT_SPLIT", "SPLIT_FRACTION"]

#: layout-phase queries of a run of 1,000 or more (the tuned split), and the share of a shorter run
DEFAULT_SPLIT = 400
SPLIT_FRACTION = 0.4

log = logging.getLogger(__name__)


class LayoutThenElite(Optimizer):
    """``split`` queries of :class:`LayoutCMA`, then :class:`EliteSearch` from its best codes.

    Args:
        space: search space (the layout phase needs a codebook space and a generator with ``encode``).
        batch_size: elite's codes per ask (the layout phase asks one CMA-ES generation of ``layout_batch``).
        seed: fixes the run (both phases).
        budget: the run's queries (the loop passes it); sets the default ``split``.
        split: queries of the layout phase (>= 0); default ``min(400, round(0.4 * budget))``, 0 (elite alone)
            where that is less than one generation (``layout_batch``), 400 without a budget. 400 of 1,000 was
            tuned; the 40 % of shorter runs and the 400 of longer ones were chosen, then checked against elite
            alone at 300 and 2,000 queries (``experiments/search_default_budget300.toml``, ``...2000.toml``). The layout phase asks
            whole generations of ``layout_batch`` codes, whatever ``batch_size`` (elite's) is.
        top: how many of the layout phase's best distinct codes start elite (>= 0), before its natural starts.
        k: layout side (``C * k * k`` variables); sigma: CMA-ES's first step (see :class:`LayoutCMA`): 0.3 since
            a screen on tuning units chose it over 0.5 (``experiments/search_default_screen.toml``, its later
            candidate).
        layout_batch: the layout phase's CMA-ES population (>= 2).
        **elite_params: any parameter of :class:`~mango.optimizers.elite.EliteSearch` (``kernel_pool``,
            ``uniform_pick``, ...: checked when built), for the elite phase. ``starts`` (default
            ``"natural"``) are the codes elite starts from after the layout phase's best ones; ``None``:
            only those.
    """

    description = ("a CMA-ES search over 2 x 2 colour layouts from grey, encoded (split queries), then elite from "
                   "its best codes and the natural starts (the default; elite alone without an encoder, on grids and on rigs)")
    needs_objective: ClassVar[bool] = True

    def __init__(self, space: LatentSpace, batch_size: int = 50, seed: int = 0, *, budget: int | None = None,
                 split: int | None = None, top: int = 8, k: int = 2, sigma: float = 0.3,
                 layout_batch: int = 20, **elite_params: Any) -> None:
        super().__init__(space, batch_size, seed)
        self.elite_params = dict(elite_params)      # (the run identity reads its scalar entries)
        EliteSearch(space, batch_size=self.k, seed=self.seed, **self.elite_params).close()   # a bad one: named now
        self.layout_batch = check_int(layout_batch, "layout_batch", minimum=2)
        if split is None:       # 400 of a 1,000-query run (as tuned); 40 % of a shorter one, so elite gets the rest,
            split = DEFAULT_SPLIT if budget is None else min(DEFAULT_SPLIT, int(round(SPLIT_FRACTION * budget)))
            if split < self.layout_batch:     # ... and none where that is less than one CMA-ES generation
                split = 0
        self.split = check_int(split, "split", minimum=0)
        self.top = check_int(top, "top", minimum=0)
        self.layout_k, self.sigma = k, sigma     # the layout phase's side and first step (checked by LayoutCMA)
        self.layout: LayoutCMA | None = None
        if self.split > 0 and getattr(space, "kind", "codebook") == "codebook":
            self.layout = LayoutCMA(space, batch_size=self.layout_batch, seed=self.seed, k=k, sigma=sigma)
        self.elite: EliteSearch | None = None
        self.objective: Any = None
        self._layout_told = 0

    def identity_params(self) -> dict[str, Any]:
        """Elite's settings given to this optimizer (``elite.<name>``), for the run identity: a resume with
        other ones is refused, as it is for ``elite``."""
        return {f"elite.{k}": v for k, v in sorted(self.elite_params.items())
                if isinstance(v, (bool, int, float, str)) or v is None}

    def bind(self, objective: Any) -> None:
        """Bind the layout phase when the objective allows one (deterministic, a generator with ``encode``)."""
        super().bind(objective)
        if self.layout is not None:
            why = "a noisy objective (a rig)" if getattr(objective, "noisy", False) else None
            if why is None:
                try:
                    self.layout.bind(objective)
                except ConfigError as exc:
                    why = str(exc)
            if why is not None:
                log.info("layout-elite: no layout phase (%s); elite alone", why)
                self.layout = None
        if self.layout is None:
            self._start_elite(None)

    def _start_elite(self, first: np.ndarray | None) -> None:
        """Elite for the rest of the run: from ``first`` (the layout phase's best codes), then natural starts."""
        params = dict(self.elite_params)
        starts = params.pop("starts", "natural")
        if first is None or not len(first):
            self.elite = EliteSearch(self.space, batch_size=self.k, seed=self.seed, starts=starts, **params)
        else:
            if isinstance(starts, str) and starts == "natural":
                from .starts import natural_start_codes

                more = natural_start_codes(getattr(self.objective, "generator", None))
            else:
                more = load_starts(starts, self.space)
            codes = first if more is None or more.shape[1] != self.space.d else np.concatenate([first, more])
            self.elite = EliteSearch(self.space, batch_size=self.k, seed=self.seed, starts=codes.tolist(), **params)
        if self.elite.needs_objective:
            self.elite.bind(self.objective)

    def _best_layout_codes(self) -> np.ndarray:
        """The layout phase's ``top`` best distinct codes ``int64 [m, d]``, best first (ties: first seen)."""
        assert self.layout is not None
        seen = list(self.layout.seen.items())                  # insertion order: the order they were told
        order = sorted(range(len(seen)), key=lambda i: -seen[i][1])[:self.top]
        return np.asarray([np.frombuffer(seen[i][0], dtype=np.int64) for i in order],
                          dtype=np.int64).reshape(-1, self.space.d)

    def _ask(self) -> np.ndarray:
        if self.objective is None:
            raise ConfigError("layout-elite must be bound to an objective before it is asked "
                              "(the loop does this for optimizers with needs_objective)")
        if self.elite is None and self.layout is not None and self._layout_told < self.split:
            limit = self.split - self._layout_told
            if self.ask_limit is not None:
                limit = min(limit, self.ask_limit)
            return self.layout.ask(limit)
        if self.elite is None:
            self._start_elite(self._best_layout_codes())
        return self.elite.ask(self.ask_limit)

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        if self.elite is None:          # asked by the layout phase (elite starts at the ask after it)
            assert self.layout is not None
            self.layout.tell(I, y)
            self._layout_told += len(y)
        else:
            self.elite.tell(I, y)

    def close(self) -> None:
        if self.elite is not None:
            self.elite.close()


def _signature() -> inspect.Signature:
    """``LayoutThenElite``'s own parameters, then elite's (``**elite_params``): what the registry, the
    config check and ``mango optimizers`` read, so an elite parameter given to the default is taken and a
    wrong name is refused with every valid one listed."""
    own = list(inspect.signature(LayoutThenElite.__init__).parameters.values())[1:]
    own = [p for p in own if p.kind != p.VAR_KEYWORD]
    names = {p.name for p in own}
    extra = [p for p in inspect.signature(EliteSearch.__init__).parameters.values()
             if p.kind == p.KEYWORD_ONLY and p.name not in names]
    return inspect.Signature(own + extra)


LayoutThenElite.__signature__ = _signature()

"""Statistics of comparison runs (pure numpy).

A run's trace is two arrays of equal length ``N``: ``queries`` (``int [N]``, the
budget counter after each query, increasing; gradient AM counts its forward
passes too, so it may skip numbers) and ``values`` (``float [N]``, each query's
activation). The best-so-far curve is the running maximum of ``values`` as a
step function of the query count: ``bsf(q)`` = the best value among queries
numbered ``<= q`` (``nan`` before the first query).

Per (unit, optimizer), over seeds, :func:`summarize` gives

* the median and IQR (25th, 75th percentile) of the best value at several budgets;
* the queries needed to reach 50 % and 90 % of the best value found by *any*
  method for that unit (``baseline + f * (best_any - baseline)``; the baseline is
  0 for non-negative activations such as firing rates, else the lowest value any
  run saw), as the median over seeds (``inf`` when a seed never got there), the
  number of seeds that got there and the median over those seeds; ``nan`` (and
  ``responded=False``) when no run moved the unit off the baseline (all values equal);
* the area under the best-so-far curve, normalised: the mean over queries
  ``1..budget`` of ``(bsf(q) - baseline) / (best_any - baseline)`` (1 = found
  the best at the first query; ``nan`` queries before the first count as 0);
* wall time and the share of it spent inside the optimizer (ask + tell).

:func:`win_rates` counts, for each pair of optimizers, the share of (unit, seed)
pairs where the first found a strictly higher best value (ties count one half).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Trace", "best_so_far", "best_at", "reach", "best_at_reached", "curve_on_grid", "queries_to_threshold", "threshold",
           "normalized_auc", "median_iqr", "win_rates", "summarize", "UnitStats"]


@dataclass
class Trace:
    """One run: unit and optimizer labels, seed, per-query counts and values, timing."""

    unit: str
    optimizer: str
    seed: int
    queries: np.ndarray
    values: np.ndarray
    seconds: float = float("nan")
    optimizer_seconds: float = float("nan")
    budget: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the query count up to which the run's best-so-far is known (``None``: as far as any column asks,
    #: i.e. a whole run); past it the run has no value (:func:`summarize` leaves it out there)
    reached: int | None = None
    #: the run stopped, or has not yet got, short of its budget, or is not marked finished: a 50/90 % level
    #: it has not reached in the queries it ran, short of its budget, is *pending* (neither reached nor never)
    partial: bool = False

    def __post_init__(self) -> None:
        self.queries = np.asarray(self.queries, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.queries.shape != self.values.shape or self.values.ndim != 1:
            raise ValueError(f"queries {self.queries.shape} and values {self.values.shape} must be equal 1-D shapes")

    @property
    def best(self) -> float:
        return float(np.max(self.values)) if len(self.values) else float("nan")

    @property
    def n_queries(self) -> int:
        return int(self.queries[-1]) if len(self.queries) else 0


def best_so_far(values: np.ndarray) -> np.ndarray:
    """Running maximum of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return np.maximum.accumulate(values) if len(values) else values


def best_at(queries: np.ndarray, values: np.ndarray, budgets: Sequence[int] | np.ndarray) -> np.ndarray:
    """Best value among queries numbered ``<= b`` for each ``b`` in ``budgets`` (``nan`` if none)."""
    queries = np.asarray(queries)
    bsf = best_so_far(values)
    idx = np.searchsorted(queries, np.asarray(budgets), side="right") - 1
    out = np.full(len(idx), np.nan)
    ok = idx >= 0
    out[ok] = bsf[idx[ok]]
    return out


def reach(t: Trace) -> float:
    """The query count up to which ``t``'s best-so-far is known (:attr:`Trace.reached`; ``inf`` when unsaid)."""
    return float("inf") if t.reached is None else float(t.reached)


def best_at_reached(t: Trace, budgets: Sequence[int] | np.ndarray) -> np.ndarray:
    """:func:`best_at` of ``t`` at ``budgets``, ``nan`` at the query counts past the last one it reached."""
    out = best_at(t.queries, t.values, budgets)
    out[np.asarray(budgets, dtype=np.float64) > reach(t)] = np.nan
    return out


def curve_on_grid(queries: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The best-so-far step function sampled at the query counts ``grid``; past the run's end it stays flat."""
    return best_at(queries, values, grid)


def threshold(best_any: float, fraction: float, baseline: float = 0.0) -> float:
    """``baseline + fraction * (best_any - baseline)``."""
    return float(baseline + fraction * (best_any - baseline))


def queries_to_threshold(queries: np.ndarray, values: np.ndarray, level: float) -> float:
    """The query count at which the best-so-far first reaches ``level`` (``inf`` if never)."""
    values = np.asarray(values, dtype=np.float64)
    hit = np.nonzero(values >= level)[0]
    return float(np.asarray(queries)[hit[0]]) if len(hit) else float("inf")


def normalized_auc(queries: np.ndarray, values: np.ndarray, budget: int, best_any: float,
                   baseline: float = 0.0) -> float:
    """Mean over ``q = 1..budget`` of ``(bsf(q) - baseline) / (best_any - baseline)``.

    Queries before the run's first counted query contribute 0; after its last one
    the curve stays at its final value. ``nan`` when ``best_any == baseline``.
    """
    span = best_any - baseline
    if not np.isfinite(span) or span == 0:
        return float("nan")
    curve = curve_on_grid(queries, values, np.arange(1, int(budget) + 1))
    norm = np.where(np.isnan(curve), 0.0, (curve - baseline) / span)
    return float(norm.mean())


def median_iqr(x: Iterable[float]) -> tuple[float, float, float]:
    """``(median, 25th percentile, 75th percentile)`` of the finite-or-inf values (nan if empty)."""
    arr = np.asarray([v for v in x if not np.isnan(v)], dtype=np.float64)
    if not len(arr):
        return (float("nan"),) * 3
    with np.errstate(invalid="ignore"):
        q = np.percentile(arr, [50, 25, 75], method="linear")
    if np.isinf(arr).any():  # percentiles of inf-containing data: use order statistics (inf-safe)
        q = np.array([_order_stat(arr, p) for p in (50, 25, 75)])
    return float(q[0]), float(q[1]), float(q[2])


def _order_stat(arr: np.ndarray, p: float) -> float:
    s = np.sort(arr)
    pos = p / 100 * (len(s) - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    if lo == hi or s[lo] == s[hi]:
        return float(s[lo])
    if np.isinf(s[hi]):
        return float("inf")
    return float(s[lo] + (pos - lo) * (s[hi] - s[lo]))


def win_rates(traces: Sequence[Trace], optimizers: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pairwise win rates over (unit, seed) pairs both optimizers ran.

    Returns ``(optimizers, W, n)``: ``W[i, j]`` = share of shared (unit, seed)
    pairs where optimizer ``i``'s best value is strictly higher than ``j``'s, ties
    counting 1/2 (``nan`` with no shared pair; the diagonal is ``nan``); ``n[i, j]``
    the number of shared pairs.
    """
    opts = list(optimizers) if optimizers is not None else sorted({t.optimizer for t in traces})
    best: dict[str, dict[tuple[str, int], float]] = {o: {} for o in opts}
    for t in traces:
        if t.optimizer in best:
            best[t.optimizer][(t.unit, t.seed)] = t.best
    m = len(opts)
    W = np.full((m, m), np.nan)
    n = np.zeros((m, m), dtype=np.int64)
    for i, a in enumerate(opts):
        for j, b in enumerate(opts):
            if i == j:
                continue
            keys = sorted(set(best[a]) & set(best[b]))
            n[i, j] = len(keys)
            if keys:
                wins = sum(1.0 if best[a][k] > best[b][k] else 0.5 if best[a][k] == best[b][k] else 0.0
                           for k in keys)
                W[i, j] = wins / len(keys)
    return opts, W, n


@dataclass
class UnitStats:
    """Statistics of one (unit, optimizer) over its seeds (see the module docstring)."""

    unit: str
    optimizer: str
    seeds: int
    best_at: dict[int, tuple[float, float, float]]
    q50: float
    q90: float
    reached50: int
    reached90: int
    auc: float
    seconds: float
    optimizer_share: float
    best: float
    best_any: float
    baseline: float
    batch_size: str = "-"  # effective queries per ask over the seeds ("10", or "10, 50" if they differ)
    #: median queries to 50/90 % over the seeds that got there (``inf`` when none did)
    q50_reached: float = float("inf")
    q90_reached: float = float("inf")
    #: False when no method moved the unit off its baseline (every value of the unit equal, e.g. all 0):
    #: then the 50/90 % levels are meaningless and ``q50``/``q90`` are ``nan``
    responded: bool = True
    #: per level (50 %, 90 %): partial seeds that did not get there in the queries they ran
    pending: tuple[int, int] = (0, 0)


def unit_reference(traces: Sequence[Trace]) -> tuple[float, float]:
    """``(best_any, baseline)`` over the traces of one unit (baseline 0 unless some value is negative)."""
    vals = [t.values for t in traces if len(t.values)]
    if not vals:
        return float("nan"), 0.0
    allv = np.concatenate(vals)
    lo = float(allv.min())
    return float(allv.max()), (0.0 if lo >= 0 else lo)


def batch_sizes(traces: Sequence[Trace]) -> str:
    """The effective batch sizes (``extra["batch_size"]``) of some traces: ``"10"``, ``"10, 50"``, or ``"-"``
    when no trace recorded one."""
    sizes = sorted({int(b) for b in (t.extra.get("batch_size") for t in traces) if b is not None})
    return ", ".join(map(str, sizes)) or "-"


def summarize(traces: Sequence[Trace], budgets: Sequence[int], budget: int | None = None,
              fractions: tuple[float, float] = (0.5, 0.9)) -> list[UnitStats]:
    """Per (unit, optimizer) statistics, in the order units and optimizers first appear.

    ``budget`` (the AUC's range) defaults to the largest budget any trace ran. No value is carried
    past the query count a trace reached (:attr:`Trace.reached`): a "best @ N" median is over the seeds
    that got to ``N`` (``nan`` when none did), the AUC over the seeds that ran the whole ``budget``, and
    a partial trace (:attr:`Trace.partial`) that has not reached a 50/90 % level counts neither as
    reaching it nor as never reaching it (``pending``).
    """
    units = list(dict.fromkeys(t.unit for t in traces))
    opts = list(dict.fromkeys(t.optimizer for t in traces))
    budget = int(budget or max((t.budget or t.n_queries) for t in traces))
    out: list[UnitStats] = []
    for u in units:
        ut = [t for t in traces if t.unit == u]
        best_any, baseline = unit_reference(ut)
        levels = [threshold(best_any, f, baseline) for f in fractions]
        for o in opts:
            ts = [t for t in ut if t.optimizer == o]
            if not ts:
                continue
            at = np.array([best_at_reached(t, budgets) for t in ts], dtype=np.float64)  # [seeds, budgets]
            responded = bool(np.isfinite(best_any) and best_any > baseline)
            q = [[queries_to_threshold(t.queries, t.values, lv) if responded else float("nan") for t in ts]
                 for lv in levels]
            # a partial run that has not got there in the queries it ran, short of its budget: pending (nan),
            # not "never" (one that ran its whole budget and missed the level never reached it)
            short = [t.partial and (t.reached is None or t.reached < (t.budget or budget)) for t in ts]
            q = [[float("nan") if np.isinf(v) and sh else v for v, sh in zip(qq, short)] for qq in q]
            pending = tuple(sum(np.isnan(v) for v in qq) if responded else 0 for qq in q)
            q_reached = [[v for v in qq if np.isfinite(v)] for qq in q]
            aucs = [normalized_auc(t.queries, t.values, budget, best_any, baseline) if reach(t) >= budget
                    else float("nan") for t in ts]
            secs = np.array([t.seconds for t in ts])
            osecs = np.array([t.optimizer_seconds for t in ts])
            both = np.isfinite(osecs) & np.isfinite(secs)   # runs that recorded both (an interrupted one may not)
            share = float(osecs[both].sum() / secs[both].sum()) if both.any() and secs[both].sum() > 0 \
                else float("nan")
            out.append(UnitStats(
                unit=u, optimizer=o, seeds=len(ts),
                best_at={int(b): median_iqr(at[:, i]) for i, b in enumerate(budgets)},
                q50=median_iqr(q[0])[0], q90=median_iqr(q[1])[0],
                reached50=int(np.isfinite(q[0]).sum()), reached90=int(np.isfinite(q[1]).sum()),
                auc=median_iqr(aucs)[0], seconds=float(np.nanmedian(secs)) if np.isfinite(secs).any() else float("nan"),
                optimizer_share=share, best=max(t.best for t in ts), best_any=best_any, baseline=baseline,
                batch_size=batch_sizes(ts),
                q50_reached=float(np.median(q_reached[0])) if q_reached[0] else float("inf"),
                q90_reached=float(np.median(q_reached[1])) if q_reached[1] else float("inf"),
                responded=responded, pending=(int(pending[0]), int(pending[1]))))
    return out

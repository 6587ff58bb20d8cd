"""Empirical-Bayes shrinkage of noisy per-code means (the winner's curse of a noisy search).

Among many codes each measured a few times, the one with the highest raw mean is mostly the
luckiest. The normal-normal posterior mean pulls each code's mean toward the mean of all
values in proportion to how little it was measured::

    post_i = (sum_i + n0 * mu) / (n_i + n0),   n0 = noise variance / variance of true means

with ``mu`` the grand mean of all values, the noise variance pooled from the codes measured at
least twice, and the variance of true means the spread of the raw means less their noise.
Used by the rig's closed loop (recommendation, confirmation block) and by the noise mode of
the ``elite`` optimizer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["shrunk_means", "noise_variance"]


def noise_variance(sums: Any, sumsq: Any, counts: Any) -> float | None:
    """Pooled variance of one value around its code's mean, from codes measured at least twice
    (``None`` when there is none)."""
    s = np.asarray(sums, dtype=np.float64)
    ss = np.asarray(sumsq, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    rep = n >= 2
    if not rep.any():
        return None
    return max(0.0, float((ss[rep] - s[rep] ** 2 / n[rep]).sum() / (n[rep] - 1).sum()))


def shrunk_means(sums: Any, sumsq: Any, counts: Any, *, min_repeated: int = 5,
                 default_n0: float = 1.0, prior: Any = None) -> tuple[np.ndarray, float]:
    """Posterior means of codes from their running sums.

    Args:
        sums: ``float [m]``, sum of each code's values.
        sumsq: ``float [m]``, sum of squares of each code's values.
        counts: ``int [m]``, values per code (>= 1 each).
        min_repeated: codes measured at least twice needed to estimate ``n0``; with fewer,
            ``default_n0`` is used.
        default_n0: prior weight (in values) before ``n0`` can be estimated.
        prior: optional ``float [m]`` prior mean per code (e.g. a model's prediction) in place of
            the grand mean.

    Returns:
        ``(post float64 [m], n0)``; ``n0`` is clipped to ``[0.05, 20]`` values.
    """
    s = np.asarray(sums, dtype=np.float64)
    ss = np.asarray(sumsq, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if s.size == 0:
        return np.zeros(0), float(default_n0)
    mu = s.sum() / n.sum()
    n0 = float(default_n0)
    if int((n >= 2).sum()) >= min_repeated:
        within = noise_variance(s, ss, n) or 0.0
        spread = float((s / n).var() - within * np.mean(1.0 / n))
        n0 = float(np.clip(within / max(spread, 1e-12), 0.05, 20.0))
    centre = mu if prior is None else np.asarray(prior, dtype=np.float64)
    return (s + n0 * centre) / (n + n0), n0

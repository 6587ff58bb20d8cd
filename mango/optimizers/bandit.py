"""An adaptive mix of move kinds: probability matching on each kind's recent success rate.

A local search that has several kinds of moves (elite's directional, recolour, block, shift and
point moves) fixes their shares up front, but which kind makes progress differs between units and
over a run: on some silent channels of the paper pipeline whole-region moves bring the unit to
fire, on others only long runs of single-position moves do. :class:`MoveMix` starts from the fixed
shares and moves them toward the kinds whose children beat their reference value more often.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["MoveMix"]


class MoveMix:
    """Shares of ``a`` move kinds, ``p_i ∝ base_i * rate_i``, each kept at least ``floor * base_i``.

    ``rate_i`` is kind ``i``'s success rate over its recent trials (the rewards and trials decay by
    ``decay`` per :meth:`step`, i.e. per batch), shrunk toward the pooled rate of all kinds with a
    weight of ``prior`` trials, so a kind tried a few times keeps about its base share. With equal
    rates the shares are the base shares.

    Args:
        base: the fixed shares ``float [a]`` (>= 0, not all 0); they are normalised.
        floor: the least share of a kind as a fraction of its base share, in [0, 1].
        decay: per-step factor of the rewards and trials, in (0, 1].
        prior: trials' worth of shrinkage toward the pooled rate (> 0).
    """

    def __init__(self, base: np.ndarray, floor: float = 0.25, decay: float = 0.9, prior: float = 5.0) -> None:
        b = np.asarray(base, dtype=np.float64).reshape(-1)
        if b.size == 0 or (b < 0).any() or not b.sum() > 0:
            raise ConfigError(f"move shares must be >= 0 and not all 0, got {b.tolist()}")
        if not 0.0 <= float(floor) <= 1.0 or not 0.0 < float(decay) <= 1.0 or not float(prior) > 0:
            raise ConfigError(f"floor must be in [0, 1], decay in (0, 1] and prior > 0, got {floor!r}, {decay!r}, {prior!r}")
        self.base = b / b.sum()
        self.floor, self.decay, self.prior = float(floor), float(decay), float(prior)
        self.reward = np.zeros(b.size)
        self.trials = np.zeros(b.size)

    def shares(self) -> np.ndarray:
        """The current shares ``float [a]``, summing to 1."""
        pooled = (self.reward.sum() + 1e-3) / (self.trials.sum() + 2e-3)
        rate = (self.reward + self.prior * pooled) / (self.trials + self.prior)
        p = self.base * rate
        p = p / p.sum()
        p = np.maximum(p, self.floor * self.base)
        return p / p.sum()

    def record(self, kind: int, reward: float) -> None:
        """One trial of ``kind`` with ``reward`` in [0, 1]."""
        self.reward[kind] += float(reward)
        self.trials[kind] += 1.0

    def step(self) -> None:
        """End of a batch: older trials count for less."""
        self.reward *= self.decay
        self.trials *= self.decay

    def state(self) -> np.ndarray:
        """``float [2, a]``: rewards and trials."""
        return np.stack([self.reward, self.trials])

    def load(self, state: np.ndarray) -> None:
        s = np.asarray(state, dtype=np.float64).reshape(2, -1)
        if s.shape[1] == self.base.size:
            self.reward, self.trials = s[0].copy(), s[1].copy()

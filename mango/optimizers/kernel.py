"""A kernel model of the score over codebook codes, used to screen candidate children before asking.

Codes are compared through their codebook *vectors* (what a VQ-VAE decodes): the squared distance
of two codes ``a``, ``b`` of ``d`` positions is ``sum_p |E[a_p] - E[b_p]|^2`` (``E``: the codebook,
centred and scaled to mean squared row norm 1). Kernel ridge regression (the posterior mean of a
Gaussian process) with the RBF kernel ``k(a, b) = exp(-dist(a, b) / (width * m))``, ``m`` the median
squared distance between the fitted codes, predicts the standardised score of any code from the
last ``window`` evaluated codes.

Why this model: on histories of ``elite`` runs on tuning units of the paper pipeline, the rank
correlation between predicted and measured *gains of children over their parents* (next 50 codes,
fit on the 400 before) was 0.45-0.76 on three of four runs for this model (0.21 on the fourth),
and -0.20 to 0.24 for the linear model of :mod:`mango.optimizers.directional` (which is also fitted to those codes);
see ``experiments/results/search_quality_tuning.md``. The kernel model does not extrapolate to
values far from anything tried; it ranks nearby candidates, which is what screening needs.
Used by :class:`~mango.optimizers.elite.EliteSearch` with ``kernel_pool > 1`` (off by default:
on tuning units it helped two output neurons and slowed fully connected neurons, same record;
measured again once elite's textures were picked by a model, the output neurons' gain was gone).
"""
from __future__ import annotations

import numpy as np

__all__ = ["KernelScreen"]


class KernelScreen:
    """RBF kernel ridge model of a score over codes, through their codebook vectors.

    Args:
        vectors: codebook ``float [n, D]`` (the generator's ``code_vectors()``).
        d: code length (positions).
        window: the model is fitted to the last ``window`` codes given to :meth:`fit` (>= 2).
        width: kernel width relative to the median squared distance between fitted codes (> 0).
        reg: ridge (noise) term added to the kernel matrix's unit diagonal (> 0).
    """

    def __init__(self, vectors: np.ndarray, d: int, window: int = 400, width: float = 0.2, reg: float = 0.1) -> None:
        V = np.asarray(vectors, dtype=np.float64)
        if V.ndim != 2:
            raise ValueError(f"code vectors must be [n, D], got shape {V.shape}")
        if int(window) < 2 or not float(width) > 0 or not float(reg) > 0:
            raise ValueError(f"window must be >= 2, width > 0 and reg > 0, got {window!r}, {width!r}, {reg!r}")
        E = V - V.mean(0)
        E /= float(np.sqrt((E ** 2).sum(1).mean())) or 1.0
        self._E = E.astype(np.float32)                     # [n, D]
        self.d, self.window, self.width, self.reg = int(d), int(window), float(width), float(reg)
        self._X: np.ndarray | None = None                  # features of the fitted codes [N, d * D]
        self._sq: np.ndarray | None = None                 # their squared norms [N]
        self._alpha: np.ndarray | None = None             # K^-1 y of the fitted codes [N]
        self._chol: np.ndarray | None = None              # Cholesky factor of K + reg I [N, N]
        self._scale = 1.0

    def _features(self, codes: np.ndarray) -> np.ndarray:
        return self._E[np.asarray(codes, dtype=np.int64).reshape(-1, self.d)].reshape(len(codes), -1)

    def _dist(self, X: np.ndarray, sq: np.ndarray) -> np.ndarray:
        d2 = sq[:, None] + self._sq[None, :] - 2.0 * (X @ self._X.T)
        return np.maximum(d2, 0.0)

    def fit(self, codes: np.ndarray, values: np.ndarray) -> bool:
        """Fit to the last ``window`` of ``codes int [N, d]`` with ``values [N]``.

        Returns False (and keeps no model) when fewer than 2 codes are given or their values are flat.
        """
        codes = np.asarray(codes).reshape(-1, self.d)[-self.window:]
        y = np.asarray(values, dtype=np.float64)[-self.window:]
        sd = float(y.std()) if len(y) > 1 else 0.0
        if len(y) < 2 or not sd > 0:
            self._alpha = None
            return False
        X = self._features(codes)
        sq = (X * X).sum(1)
        self._X, self._sq = X, sq
        D = self._dist(X, sq)
        off = D[~np.eye(len(D), dtype=bool)]
        med = float(np.median(off[off > 0])) if (off > 0).any() else 1.0
        self._scale = self.width * med
        K = np.exp(-D.astype(np.float64) / self._scale)
        self._chol = np.linalg.cholesky(K + self.reg * np.eye(len(K)))
        self._alpha = np.linalg.solve(self._chol.T, np.linalg.solve(self._chol, (y - y.mean()) / sd))
        return True

    def predict(self, codes: np.ndarray, std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted standardised score ``float64 [m]`` of ``codes int [m, d]`` (0: the fitted mean);
        with ``std=True`` also the posterior standard deviation ``float64 [m]`` in ``[0, 1]``."""
        if self._alpha is None:
            raise RuntimeError("predict() before a successful fit()")
        X = self._features(codes)
        Ks = np.exp(-self._dist(X, (X * X).sum(1)).astype(np.float64) / self._scale)    # [m, N]
        mean = Ks @ self._alpha
        if not std:
            return mean
        v = np.linalg.solve(self._chol, Ks.T)                                            # [N, m]
        return mean, np.sqrt(np.clip(1.0 - (v * v).sum(0), 0.0, 1.0))

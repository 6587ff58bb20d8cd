"""A linear model of the score in a codebook's embedding space: directional moves without gradients.

A VQ-VAE decodes the *vectors* of its codes, so two codes whose vectors are close give close
images. A linear model in those vectors,

    score(c) ~ b + sum_p  w_p . E[c_p]          (E: codebook [n, D]; w_p in R^D per position p),

fitted by ridge regression to the codes evaluated last (mostly children of the elite, so the fit
is local), estimates the direction the white-box gradient AM follows, from black-box values only
(an evolution-strategies estimate that reuses every recent evaluation, not one generation). Unlike
a one-hot additive model it predicts the effect of codebook values never tried at a position: the
gain of moving position ``p`` of a parent to value ``v`` is ``w_p . (E[v] - E[parent_p])``.
Measured on elite runs of the paper pipeline (``experiments/search_model_quality.py``), its
predicted gains of the next children rank them near chance (Spearman rho -0.20 to 0.24), where
a one-hot additive or an RBF kernel model (:mod:`mango.optimizers.kernel`) reaches 0.21-0.76.

The ridge is solved in its dual form (``N`` codes, ``F = d * D`` features, ``N << F``): with the
centred Gram matrix ``Kc = H Phi Phi^T H``, ``alpha = (Kc + lam I)^-1 y_std`` and
``w = (Phi - mean Phi)^T alpha``. The Gram matrix of the window grows by the new rows only, so a
fit costs ``O(m N F)`` for ``m`` new codes plus ``O(N^3)`` for the solve.
"""
from __future__ import annotations

import numpy as np

__all__ = ["EmbeddingLinearModel"]


class EmbeddingLinearModel:
    """Ridge-regression model of a score, linear in the codes' codebook vectors.

    Feed it every evaluated code once, in order (:meth:`add_codes`), then :meth:`fit` the values of
    all codes added so far; only the last ``window`` codes are kept and used.

    Args:
        vectors: codebook ``float [n, D]`` (the generator's ``code_vectors()``).
        d: code length (positions).
        reg: ridge strength relative to the mean squared (centred) feature norm (> 0).
        window: the model is fitted to the last ``window`` codes added (>= 2).
    """

    def __init__(self, vectors: np.ndarray, d: int, reg: float = 1.0, window: int = 400) -> None:
        V = np.asarray(vectors, dtype=np.float64)
        if V.ndim != 2:
            raise ValueError(f"code vectors must be [n, D], got shape {V.shape}")
        scale = float(np.sqrt(((V - V.mean(0)) ** 2).sum(1).mean())) or 1.0
        self.E = (V - V.mean(0)) / scale            # [n, D], mean squared row norm 1
        self._E32 = self.E.astype(np.float32)       # features for the Gram products (float32: 3x faster)
        self.d, self.reg, self.window = int(d), float(reg), int(window)
        self.reset()

    def reset(self) -> None:
        """Forget every code (a resumed optimizer adds its evaluated codes again)."""
        self.n_added = 0
        self._phi = np.zeros((0, self.d * self.E.shape[1]), dtype=np.float32)   # features of the window's codes
        self._K = np.zeros((0, 0))                            # their (uncentred) Gram matrix
        self._proj: np.ndarray | None = None                  # [d, n] predicted value of each value at each position

    def add_codes(self, codes: np.ndarray) -> None:
        """Append evaluated codes ``int [m, d]`` (their features and Gram rows); keep the last ``window``."""
        codes = np.asarray(codes).reshape(-1, self.d)
        if not len(codes):
            return
        self.n_added += len(codes)
        codes = codes[-self.window:]
        new = self._E32[codes].reshape(len(codes), -1)
        cross = (new @ self._phi.T).astype(np.float64)
        self._K = np.block([[self._K, cross.T], [cross, (new @ new.T).astype(np.float64)]])
        self._phi = np.concatenate([self._phi, new])
        if len(self._phi) > self.window:
            self._phi, self._K = self._phi[-self.window:], self._K[-self.window:, -self.window:]

    def fit(self, y: np.ndarray) -> bool:
        """Fit to the values of every code added so far (``y [n_added]``; its last rows are the window's).

        Returns False (and keeps no model) when fewer than 2 codes are kept or their values are flat.
        """
        N = len(self._phi)
        y = np.asarray(y, dtype=np.float64)[-N:] if N else np.zeros(0)
        sd = float(y.std()) if N > 1 else 0.0
        if N < 2 or not sd > 0:
            self._proj = None
            return False
        K = self._K
        m = K.mean(0)
        Kc = K - m[None, :] - m[:, None] + m.mean()           # H K H with H = I - 1/N, in O(N^2)
        lam = self.reg * float(np.trace(Kc)) / N + 1e-9
        alpha = np.linalg.solve(Kc + lam * np.eye(N), (y - y.mean()) / sd)
        phi = self._phi.astype(np.float64)
        W = (phi.T @ alpha - phi.mean(0) * alpha.sum()).reshape(self.d, -1)                     # [d, D]
        self._proj = W @ self.E.T
        return True

    def gains(self, parent: np.ndarray) -> np.ndarray:
        """Predicted score change ``[d, n]`` of setting position ``p`` of ``parent int [d]`` to each value
        (0 at the parent's own values; in units of the fitted values' standard deviation)."""
        proj = self._proj
        if proj is None:
            raise RuntimeError("gains() before a successful fit()")
        return proj - proj[np.arange(self.d), np.asarray(parent)][:, None]

"""CMA-ES over smooth low-resolution colour layouts, turned into codes by the generator's encoder.

A codebook search moves one code position at a time; the image it sees changes in patches. Some units
(on the paper SNN: output neurons whose optimum is a smooth, muted image) respond to whole-image colour
structure that such moves reach only by crossing codes that score far lower. This optimizer searches
that structure directly: a ``k x k`` grid of colours (``C * k * k`` continuous variables, ``C`` the
generator's image channels), each squashed into ``[0, 1]`` by a logistic function, upsampled to the
generator's image size (nearest neighbour: ``k * k`` flat patches) and encoded to a code with the
generator's ``encode``. CMA-ES (the ``cma`` package) starts at mid-grey (every variable 0) with step size
``sigma`` in the logistic's input units; a small ``sigma`` keeps the first images muted, which is where the
gradient AM's images lie on those neurons (``experiments/results/search_quality_tuning.md``).

Every returned row is a code the generator can decode; two layouts that encode to the same code are
evaluated once (the repeat gets the stored value and costs no query). When CMA-ES stops (flat values,
e.g. a unit that never fires), it restarts at mid-grey with the same ``sigma``.

Needs a generator with ``encode(images [m, C, H, W]) -> int64 [m, d]`` and ``image_shape`` ``(C, H, W)``
(the VQ-VAEs); other generators are refused at :meth:`LayoutCMA.bind` with a message naming the generator.
It is the first phase of ``layout-elite`` (:mod:`mango.optimizers.handoff`), not registered on its own.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, check_int
from ..spaces import LatentSpace
from .base import Optimizer
from .starts import encode_images

__all__ = ["LayoutCMA"]

#: generations in a row whose candidates all encode to codes already evaluated, after which ask gives up
#: on new codes and returns repeats (a collapsed search on a tiny space)
_MAX_EMPTY_GENERATIONS = 50


class LayoutCMA(Optimizer):
    """CMA-ES over a ``k x k`` colour layout, encoded to codes through the generator (codebook spaces).

    Args:
        space: a codebook space whose codes the bound generator's ``encode`` produces.
        batch_size: CMA-ES population size: codes per generation (>= 2; default 20). A generation whose
            codes were all evaluated before is told from the stored values and another is asked.
        seed: fixes the run (CMA-ES draws from its own seeded generator, not numpy's global one).
        k: layout side (>= 1): ``C * k * k`` search variables; 2 (four flat colour patches) by default.
        sigma: CMA-ES initial step size in the logistic's input units (> 0); 0.3 (the default) moves a mid-grey
            start by about +-0.07 in colour at first, 0.5 (the default until 2026-11-28, evening) by about +-0.12.
    """

    description = ("CMA-ES over a k x k colour layout (logistic colours, nearest-upsampled) encoded to codes by "
                   "the generator's encoder; starts at mid-grey (generators with encode only)")
    needs_objective: ClassVar[bool] = True

    def __init__(self, space: LatentSpace, batch_size: int = 20, seed: int = 0, *, k: int = 2,
                 sigma: float = 0.3) -> None:
        super().__init__(space, batch_size, seed)
        if self.k < 2:
            raise ConfigError(f"the layout search needs batch_size >= 2 (the CMA-ES population), got {batch_size!r}")
        if getattr(space, "kind", "codebook") != "codebook":
            raise ConfigError(f"the layout search (layout-elite's first phase) searches codebook spaces (codes from "
                              f"an encoder), got a "
                              f"{getattr(space, 'kind', type(space).__name__)!r} space")
        self.side = check_int(k, "k", minimum=1)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not float(sigma) > 0 \
                or not np.isfinite(float(sigma)):
            raise ConfigError(f"sigma must be a number > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.rng = np.random.default_rng(self.seed)
        self.restarts = 0
        self._es: Any = None
        self._generator: Any = None
        self._shape: tuple[int, int, int] | None = None
        #: every evaluated code (its bytes) -> its value, in the order they were told
        self.seen: dict[bytes, float] = {}
        # the generation being evaluated: its layouts [p, C*k*k], their codes [p, d], and which codes were asked
        self._gen: tuple[np.ndarray, np.ndarray] | None = None

    # -- set-up -----------------------------------------------------------------------------
    def bind(self, objective: Any) -> None:
        """Take the objective's generator encoder; raises :class:`ConfigError` naming a generator without one."""
        g = getattr(objective, "generator", None)
        encode, shape = getattr(g, "encode", None), getattr(g, "image_shape", None)
        name = type(g).__name__ if g is not None else "none"
        if not callable(encode) or shape is None:
            raise ConfigError(f"the layout search (layout-elite's first phase) needs a generator with encode(images) "
                              f"and image_shape (a VQ-VAE such "
                              f"as vqvae-cifar10 or vqvae-digits); generator {name} has "
                              f"{'no encode' if not callable(encode) else 'no image_shape'}")
        C, H, W = (int(s) for s in shape)
        super().bind(objective)
        self._shape = (C, H, W)
        self._generator = g
        self._new_es()

    def _new_es(self) -> None:
        import cma

        assert self._shape is not None
        n = self._shape[0] * self.side * self.side
        opts = {"popsize": self.k, "seed": np.nan, "verbose": -9,
                "randn": lambda lam, dim: self.rng.standard_normal((lam, dim))}
        self._es = cma.CMAEvolutionStrategy(np.zeros(n), self.sigma, opts)

    # -- images and codes ---------------------------------------------------------------------
    def images(self, Z: np.ndarray) -> np.ndarray:
        """Layouts ``[p, C*k*k]`` -> images ``float32 [p, C, H, W]`` in ``[0, 1]`` (nearest upsampling)."""
        assert self._shape is not None
        C, H, W = self._shape
        P = 1.0 / (1.0 + np.exp(-np.asarray(Z, dtype=np.float64)))
        P = P.reshape(-1, C, self.side, self.side)
        rows = (np.arange(H) * self.side) // H
        cols = (np.arange(W) * self.side) // W
        return P[:, :, rows][:, :, :, cols].astype(np.float32)

    def codes(self, Z: np.ndarray) -> np.ndarray:
        """Layouts ``[p, C*k*k]`` -> codes ``int64 [p, d]`` through the generator's encoder."""
        codes = encode_images(self._generator, self.images(Z))
        return self.space.validate(codes.reshape(len(codes), -1))

    # -- ask / tell -----------------------------------------------------------------------------
    def _ask(self) -> np.ndarray:
        if self._es is None:
            raise ConfigError("the layout search must be bound to an objective before it is asked "
                              "(the loop does this for optimizers with needs_objective)")
        for _ in range(_MAX_EMPTY_GENERATIONS):
            if self._es.stop():
                self.restarts += 1
                self._new_es()
            Z = np.asarray(self._es.ask())
            I = self.codes(Z)
            self._gen = (Z, I)
            new: list[np.ndarray] = []
            keys: set[bytes] = set()
            for row in I:
                key = row.tobytes()
                if key not in self.seen and key not in keys:
                    keys.add(key)
                    new.append(row)
            if new:
                return np.stack(new)
            self._tell_generation()          # every code known: tell CMA-ES and ask the next generation
        return I                               # nothing new for many generations: repeats

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        for row, v in zip(I, y):
            self.seen[row.tobytes()] = float(v)
        self._tell_generation()

    def _tell_generation(self) -> None:
        """Tell CMA-ES the asked generation when every one of its codes has a value (else drop it: the last,
        cut batch of a run)."""
        if self._gen is None:
            return
        Z, I = self._gen
        self._gen = None
        vals = [self.seen.get(row.tobytes()) for row in I]
        if any(v is None for v in vals):
            return
        y = np.asarray(vals, dtype=np.float64)
        # CMA-ES minimises; a non-finite value (a failed evaluation) ranks last
        f = np.where(np.isfinite(y), -y, np.inf)
        if np.isinf(f).all():
            f = np.zeros_like(f)
        else:
            f[np.isinf(f)] = np.nanmax(f[np.isfinite(f)]) + 1.0
        self._es.tell(list(Z), f.tolist())

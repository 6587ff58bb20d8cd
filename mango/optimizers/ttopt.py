"""TT-cross / maxvol maximisation (the TTOpt idea, Sozykin et al. 2022) through ``teneva.cross``.

``teneva.cross`` is a closed loop: it calls a function with index batches. To
drive it through ask/tell (a live rig needs ask/tell) it runs in a worker thread
whose "function" hands each batch to :meth:`TTOpt.ask` and waits for
:meth:`TTOpt.tell`. Large cross requests are served in chunks of ``batch_size``.

The cross approximates ``g(y) = pi/2 + arctan(y - y_best)``, a positive,
increasing map that saturates near the best value seen so far, so the maxvol
pivots (largest-modulus entries) home in on the maximum, as in TTOpt. When a
cross run ends (``nswp`` sweeps), a new one starts from a fresh random rank-``r``
tensor (seed + restart count), until the loop's budget is spent.

Works on the QTT view by default (``qtt=True``: ``d*q`` binary variables keep
the per-sweep cost ``2 r^2`` per variable instead of ``n r^2``).
State is restored by replay (the thread's progress is a deterministic function
of the seed and the told values).
"""
from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np

from ..errors import ConfigError, check_int
from ..spaces import LatentSpace
from .base import Optimizer

__all__ = ["TTOpt"]


class _Stop(Exception):
    pass


class TTOpt(Optimizer):
    """TT-cross maximiser (teneva.cross + maxvol) in ask/tell form.

    Args:
        rank: initial TT rank of each cross run.
        dr_max: rank increase per sweep (teneva's ``dr_max``).
        nswp: sweeps per cross run before a restart.
        qtt: search the QTT view (needs ``n = 2**q``); ``False`` searches the
            ``d`` variables with ``n`` levels directly.
    """

    description = ("TT-cross with maxvol (teneva.cross) on arctan-transformed values; QTT "
                   "binary view by default (codebook and grid alike)")

    def __init__(self, space: LatentSpace, batch_size: int = 100, seed: int = 0, *, rank: int = 2,
                 dr_max: int = 1, nswp: int = 4, qtt: bool = True) -> None:
        super().__init__(space, batch_size, seed)
        if int(rank) < 1:
            raise ConfigError(f"rank must be >= 1, got {rank!r}")
        if int(nswp) < 1:
            raise ConfigError(f"nswp must be >= 1, got {nswp!r}")
        check_int(dr_max, "dr_max", minimum=0)      # teneva refuses a negative one deep in its worker thread
        if not isinstance(qtt, (bool, np.bool_)):
            raise ConfigError(f"qtt must be true or false, got {qtt!r}")
        self.rank, self.dr_max, self.nswp = int(rank), int(dr_max), int(nswp)
        self.view = space.qtt() if qtt else None
        self.dd = self.view.d if self.view else space.d
        self.nn = 2 if self.view else space.n
        self._req: queue.Queue = queue.Queue(maxsize=1)
        self._rep: queue.Queue = queue.Queue(maxsize=1)
        self._chunks: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._need = 0
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.restarts = 0

    # -- worker thread -------------------------------------------------------
    def _f(self, J: np.ndarray) -> np.ndarray:
        self._req.put(np.asarray(J, dtype=np.int64))
        y = self._rep.get()
        if y is None:
            raise _Stop
        return np.pi / 2 + np.arctan(y - (self.best_y if np.isfinite(self.best_y) else y.max()))

    def _worker(self) -> None:
        import teneva

        try:
            while True:
                Y0 = teneva.rand([self.nn] * self.dd, self.rank, seed=self.seed + 7919 * self.restarts)
                teneva.cross(self._f, Y0, nswp=self.nswp, dr_max=self.dr_max, info={})
                self.restarts += 1
        except _Stop:
            return
        except Exception as exc:  # surface worker failures in ask()
            self._req.put(exc)

    def _next_request(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, daemon=True, name="mango-ttopt")
            self._thread.start()
        J = self._req.get()
        if isinstance(J, Exception):
            raise RuntimeError(f"ttopt worker failed: {J!r}") from J
        self._need = len(J)
        self._chunks = [J[s:s + self.k] for s in range(0, len(J), self.k)]
        self._vals = []

    def _ask(self) -> np.ndarray:
        if not self._chunks:
            self._next_request()
        J = self._chunks[0]
        return self.view.from_bits(J) if self.view else J

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        if not self._chunks:
            raise RuntimeError("ttopt: tell without a pending ask")
        head = self._chunks.pop(0)
        if len(y) < len(head):  # the loop ran out of budget mid-chunk: nothing more will come
            self._chunks = []
            return
        self._vals.append(y)
        if not self._chunks:
            self._rep.put(np.concatenate(self._vals))

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive() and not self._stopped:
            self._stopped = True
            # unblock the worker whether it waits for a reply or is about to put a request
            try:
                self._req.get_nowait()
            except queue.Empty:
                pass
            self._rep.put(None)
            self._thread.join(timeout=5)

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def state_dict(self) -> dict[str, Any] | None:
        return None

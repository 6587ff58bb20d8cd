"""Run artifacts written while a run goes: ``best.png``, ``history.npz`` and a ``running`` ``result.json``.

:class:`LiveArtifacts` is a callback of the loop kernel (:func:`mango.loop.maximize`
installs it when a run folder is given). At an improvement of the best value it
writes, each atomically (a hidden temporary file in the folder, then
:func:`os.replace`, so a reader sees the old or the new file, never half of one):

* ``history.npz``: ``values``, ``times``, ``query_index``, ``best_so_far``, ``best_code``,
  ``reported`` of every query so far (``float64 [N]`` / ``int64 [N]`` / ``int64 [d]``);
* ``best.png``: the best image so far (image objectives only);
* ``result.json``: ``{"status": "running", "best_value", "best_code", "reported", "n_queries",
  "batches", "seconds", "config", ...}``, the same keys as the final one where known.

So ``mango report`` and ``mango watch`` read a running folder like a finished one. At the
end of the run :meth:`mango.results.Result.save` writes the final files (no ``status``
key, a ``finished`` time stamp) after every callback, so the finished files always win.

Throttle: writing costs time (an image decode, a PNG, fsyncs). An improvement is written
at once only while the time spent writing stays under ``max_share`` (default 2 %) of the
run's wall time so far; otherwise it is kept pending and written at the first later batch
where the share allows it. The first improvement is always written.
"""
from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .journal import atomic_write

__all__ = ["LiveArtifacts", "RUNNING"]

log = logging.getLogger(__name__)

#: the ``status`` a running run's ``result.json`` carries (a finished one has no ``status`` key)
RUNNING = "running"


def _atomic_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, data)


class LiveArtifacts:
    """Loop callback writing a run folder's artifacts at improvements (see the module doc).

    Args:
        folder: the run folder (created if missing).
        config: the run's config, stored in ``result.json``.
        max_share: most share of wall time (0..1) spent writing; ``0`` writes only the first improvement
            until the end, ``1`` writes at every improvement.

    Attributes:
        writes: files sets written so far; write_seconds: time spent writing them.
    """

    def __init__(self, folder: str | Path, config: dict[str, Any] | None = None, max_share: float = 0.02) -> None:
        if not 0.0 <= float(max_share) <= 1.0:
            raise ValueError(f"max_share must be in [0, 1], got {max_share!r}")
        self.folder = Path(folder)
        self.config = dict(config or {})
        self.max_share = float(max_share)
        self.writes = 0
        self.write_seconds = 0.0
        self._last_cost = 0.0
        self._t0 = time.perf_counter()
        self._values: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._qidx: list[np.ndarray] = []
        self._best = -np.inf
        self._pending = False
        self._failed = False

    # -- the callback --------------------------------------------------------------------------------
    def __call__(self, ev: Any) -> None:
        """Record the batch of a :class:`mango.loop.BatchEvent`; write the files when due."""
        y = np.asarray(getattr(ev, "y", ()), dtype=np.float64).reshape(-1)
        if len(y):
            n = int(ev.n_queries)
            self._values.append(y)
            self._times.append(np.full(len(y), float(ev.elapsed)))
            self._qidx.append(n - len(y) + 1 + np.arange(len(y), dtype=np.int64))
        best = float(getattr(ev, "best_value", np.nan))
        if np.isfinite(best) and best > self._best:
            self._best = best
            self._pending = True
        if not self._pending or getattr(ev, "replayed", False) or self._failed:
            return
        spent = time.perf_counter() - self._t0
        if self.writes and self.write_seconds + self._last_cost > self.max_share * spent:
            return  # over the share: keep it pending
        t0 = time.perf_counter()
        try:
            self.write(ev)
        except Exception as exc:  # noqa: BLE001 - a full disk must not end the search; the end-of-run save retries
            log.warning("could not write the live artifacts into %s: %s", self.folder, exc)
            self._failed = True
        self._last_cost = time.perf_counter() - t0
        self.write_seconds += self._last_cost
        self._pending = False

    # -- writing ---------------------------------------------------------------------------------------
    def history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values float64 [N], times float64 [N], query_index int64 [N])`` recorded so far."""
        if not self._values:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
        return np.concatenate(self._values), np.concatenate(self._times), np.concatenate(self._qidx)

    def write(self, ev: Any) -> None:
        """Write ``history.npz``, ``best.png`` (image objectives) and then ``result.json`` (status running)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        obj = getattr(ev, "objective", None)
        values, times, qidx = self.history()
        reported = values
        rep_name = "value"
        if obj is not None and hasattr(obj, "reported"):
            reported = np.asarray(obj.reported(values), dtype=np.float64)
            rep_name = str(getattr(obj, "reported_name", "value"))
        code = getattr(ev, "best_code", None)
        code = np.zeros(0, dtype=np.int64) if code is None else np.asarray(code, dtype=np.int64)
        buf = io.BytesIO()
        np.savez(buf, values=values, times=times, query_index=qidx,
                 best_so_far=np.maximum.accumulate(values) if len(values) else values, best_code=code,
                 reported=reported)
        _atomic_bytes(self.folder / "history.npz", buf.getvalue())
        images = getattr(obj, "images", None)
        if callable(images) and code.size:
            from .imaging import display_uint8, save_png

            import torch

            with torch.no_grad():
                x = images(code[None])
            arr = display_uint8(x, getattr(obj, "generator", None))[0]
            tmp = self.folder / ".best.live.png"
            save_png(arr, tmp)
            os.replace(tmp, self.folder / "best.png")
        best_value = float(ev.best_value)
        at_best = float(obj.reported(np.array([best_value]))[0]) if obj is not None and hasattr(obj, "reported") \
            else best_value
        summary = {"status": RUNNING, "best_value": best_value, "best_code": code.tolist(),
                   "reported": {"name": rep_name, "best": float(reported.max()) if len(reported) else None,
                                "at_best_score": at_best},
                   "n_queries": int(ev.n_queries), "budget": int(getattr(ev, "budget", 0) or 0),
                   "batches": int(getattr(ev, "batch", -1)) + 1, "seconds": float(ev.elapsed),
                   "seed": self.config.get("seed"), "config": self.config,
                   "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        info = getattr(obj, "info", None)
        if callable(info):
            summary["objective"] = info()
        summary["known_max"] = getattr(obj, "known_max", None)
        atomic_write(self.folder / "result.json", json.dumps(summary, indent=2, default=str).encode())
        self.writes += 1

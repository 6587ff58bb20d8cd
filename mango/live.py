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

A run that ends without its final files (Ctrl-C, SIGTERM, an error) gets a last, unthrottled write
with ``"status": "interrupted"`` (or ``"failed"``) through :meth:`LiveArtifacts.stop`: the folder then
shows the best the run reached, not the last throttled write. Its journal resumes the run.

So ``mango report`` and ``mango watch`` read a running folder like a finished one. At the
end of the run :meth:`mango.results.Result.save` writes the final files (no ``status``
key, a ``finished`` time stamp) after every callback, so the finished files always win.

Throttle: writing costs time (above all the generator decode of the best image). An
improvement is written at once only while the time spent writing stays under ``max_share``
(default 2 %) of the run's wall time so far; otherwise it is kept pending and written at
the first later batch where the share allows it. The numbers (``history.npz`` and
``result.json``, about a millisecond) and the image are budgeted apart, so the numbers keep
up while a dear image waits. The first improvement is always written in full.
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
import torch

from .imaging import display_uint8, save_png
from .results import FAILED, INTERRUPTED, finished_result

__all__ = ["LiveArtifacts", "RUNNING", "INTERRUPTED", "FAILED"]

log = logging.getLogger(__name__)

#: the ``status`` a running run's ``result.json`` carries (a finished one says ``"finished"``)
RUNNING = "running"


def _atomic_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a hidden temporary file and :func:`os.replace` (atomic, not fsynced:
    these files are rewritten soon, and the end-of-run save writes the durable ones)."""
    tmp = path.with_name("." + path.name + ".live")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class LiveArtifacts:
    """Loop callback writing a run folder's artifacts at improvements (see the module doc).

    Args:
        folder: the run folder (created if missing).
        config: the run's config, stored in ``result.json``.
        max_share: most share of wall time (0..1) spent writing; ``0`` writes only the first improvement
            until the end, ``1`` writes at every improvement.

    Attributes:
        writes: ``result.json`` writes so far; image_writes: ``best.png`` writes so far;
        write_seconds: time spent writing (both kinds).
    """

    def __init__(self, folder: str | Path, config: dict[str, Any] | None = None, max_share: float = 0.02) -> None:
        if not 0.0 <= float(max_share) <= 1.0:
            raise ValueError(f"max_share must be in [0, 1], got {max_share!r}")
        self.folder = Path(folder)
        self.config = dict(config or {})
        self.max_share = float(max_share)
        self.writes = 0
        self.write_seconds = 0.0
        self._cost = {"data": 0.0, "image": 0.0}  # the last cost of each kind of write
        self._t0 = time.perf_counter()
        self._values: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._qidx: list[np.ndarray] = []
        self._best = -np.inf
        self._pending = {"data": False, "image": False}
        self._failed = False
        self._last: Any = None   # the latest event, for stop()
        self.image_writes = 0

    # -- the callback --------------------------------------------------------------------------------
    def __call__(self, ev: Any) -> None:
        """Record the batch of a :class:`mango.loop.BatchEvent`; write the files when due."""
        y = np.asarray(getattr(ev, "y", ()), dtype=np.float64).reshape(-1)
        self._last = ev
        if len(y):
            n = int(ev.n_queries)
            self._values.append(y)
            self._times.append(np.full(len(y), float(ev.elapsed)))
            self._qidx.append(n - len(y) + 1 + np.arange(len(y), dtype=np.int64))
        best = float(getattr(ev, "best_value", np.nan))
        if np.isfinite(best) and best > self._best:
            self._best = best
            self._pending = {"data": True, "image": True}
        if not (self._pending["data"] or self._pending["image"]) or getattr(ev, "replayed", False) or self._failed:
            return
        allowed = self.max_share * (time.perf_counter() - self._t0)
        if self.writes and self.write_seconds + self._cost["data"] > allowed:
            return  # over the share: keep it pending
        # the image (a generator decode) is the dear part: it waits longer than the numbers when it must
        image = self._pending["image"] and (
            not self.writes or self.write_seconds + self._cost["data"] + self._cost["image"] <= allowed)
        if not (self._pending["data"] or image):
            return
        try:
            self.write(ev, image=image)
        except Exception as exc:  # noqa: BLE001 - a full disk must not end the search; the end-of-run save retries
            log.warning("could not write the live artifacts into %s: %s", self.folder, exc)
            self._failed = True
        self._pending["data"] = False

    def stop(self, status: str) -> None:
        """The run ended without its final files (``status``: ``"interrupted"`` by Ctrl-C or a signal,
        ``"failed"`` by an error): write what it reached, unthrottled, with that status, so the folder
        shows the run's last best rather than the last throttled write (the journal resumes the run).
        A folder that already holds a finished result is left as it is."""
        if self._last is None or self._failed or finished_result(self.folder) is not None:
            return
        try:
            self.write(self._last, image=self._pending["image"], status=status)
        except Exception as exc:  # noqa: BLE001 - the run is ending with its own error; say why this failed
            log.warning("could not write the live artifacts into %s: %s", self.folder, exc)

    # -- writing ---------------------------------------------------------------------------------------
    def history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values float64 [N], times float64 [N], query_index int64 [N])`` recorded so far."""
        if not self._values:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
        return np.concatenate(self._values), np.concatenate(self._times), np.concatenate(self._qidx)

    def write(self, ev: Any, image: bool = True, status: str = RUNNING) -> None:
        """Write ``history.npz``, ``best.png`` (image objectives, with ``image``) and then ``result.json``
        (with ``status``, ``"running"`` while the run goes); the time each part took is added to
        :attr:`write_seconds`."""
        t0 = time.perf_counter()
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
        img_cost = 0.0
        if image and callable(images) and code.size:
            t1 = time.perf_counter()
            with torch.no_grad():
                x = images(code[None])
            arr = display_uint8(x, getattr(obj, "generator", None))[0]
            tmp = self.folder / ".best.live.png"
            save_png(arr, tmp)
            os.replace(tmp, self.folder / "best.png")
            self._pending["image"] = False
            self.image_writes += 1
            img_cost = self._cost["image"] = time.perf_counter() - t1
            t0 += img_cost  # the rest is the data part
        best_value = float(ev.best_value)
        at_best = float(obj.reported(np.array([best_value]))[0]) if obj is not None and hasattr(obj, "reported") \
            else best_value
        summary = {"status": status, "best_value": best_value, "best_code": code.tolist(),
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
        _atomic_bytes(self.folder / "result.json", json.dumps(summary, indent=2, default=str).encode())
        self.writes += 1
        self._cost["data"] = time.perf_counter() - t0
        self.write_seconds += self._cost["data"] + img_cost

"""Read a run, rig, compare or scan folder *without writing to it*, incrementally, for the live view.

Everything here opens files for reading only. A journal line torn by a kill (no newline yet, or
not valid JSON) is skipped, never cut: the run that owns the folder repairs it when it resumes.
Files are re-read when their size, modification time or inode changes, so a crash, a resume
(which truncates the torn line and appends) and a finished run are all followed.

:class:`FolderWatcher` is the entry point: ``FolderWatcher(folder).state()`` returns one JSON-able
dict describing the folder now (see :meth:`FolderWatcher.state` for its keys).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

__all__ = ["FolderWatcher", "JsonlTail", "JsonFile", "expected_best_of_n", "detect_kind"]

log = logging.getLogger(__name__)

#: a run whose files have not changed for this many seconds (and at least STALE_BATCHES typical
#: batch intervals) and that has no final result.json is shown as "stalled" (crashed or paused)
STALE_SECONDS = 60.0
STALE_BATCHES = 20
#: most points of a curve sent to the page (curves are thinned beyond this)
MAX_POINTS = 1500


def _num(x: Any) -> float | None:
    """A finite float, or None (JSON has no NaN/inf)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _running(res: Any) -> bool:
    """True for a result.json the run marks as still running (written at an improvement)."""
    return isinstance(res, dict) and (res.get("status") == "running" or res.get("running") is True)


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class JsonFile:
    """A small JSON file re-read when its size/mtime/inode change; a half-written file keeps the last
    good value (files written with ``write_text`` are not atomic)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key: tuple[int, int, int] | None = None
        self.value: Any = None

    def poll(self) -> Any:
        key = _stat_key(self.path)
        if key is None:
            self.key, self.value = None, None
        elif key != self.key:
            try:
                with open(self.path, "rb") as fh:
                    value = json.loads(fh.read())
                self.key, self.value = key, value
            except (OSError, ValueError):
                pass  # being written: keep the previous value, try again next poll
        return self.value

    @property
    def mtime(self) -> float | None:
        return None if self.key is None else self.key[2] / 1e9


class JsonlTail:
    """An append-only JSON-lines file read incrementally and read-only.

    Only complete lines (ending in a newline) are parsed; the offset stays at the end of the last
    complete line, so a torn last line is re-read once it is completed, and the bytes after it are
    never touched. When the file shrinks (a resume cut a torn line) or is replaced (another inode),
    it is read again from the start.

    Args:
        path: the file.
        parse: ``record -> item`` (or None to drop the record); items land in :attr:`items`.
    """

    def __init__(self, path: Path, parse: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.path = path
        self.parse = parse or (lambda rec: rec)
        self.items: list[Any] = []
        self.offset = 0
        self.key: tuple[int, int, int] | None = None
        self.torn_bytes = 0
        self.bad_lines = 0
        self.resets = 0
        self.generation = 0  # bumps on every change (so dependants can recompute)

    def reset(self) -> None:
        self.items, self.offset, self.torn_bytes, self.bad_lines = [], 0, 0, 0
        self.resets += 1

    def poll(self) -> bool:
        """Read what was appended since the last poll; True when anything changed."""
        key = _stat_key(self.path)
        if key == self.key:
            return False
        if key is None:
            changed = bool(self.items) or self.key is not None
            self.reset()
            self.key = None
            if changed:
                self.generation += 1
            return changed
        ino, size, _ = key
        if self.key is not None and (ino != self.key[0] or size < self.offset):
            self.reset()
        elif self.key is None and self.offset:
            self.reset()
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(max(0, size - self.offset))
        except OSError:
            return False
        pos = 0
        while True:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            line = data[pos:end]
            pos = end + 1
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                self.bad_lines += 1  # a torn line that was followed by more lines: skip it
                continue
            try:
                item = self.parse(rec)
            except (KeyError, TypeError, ValueError) as exc:
                log.debug("%s: unusable record skipped (%s)", self.path, exc)
                self.bad_lines += 1
                continue
            if item is not None:
                self.items.append(item)
        self.offset += pos
        self.torn_bytes = len(data) - pos
        self.key = key
        self.generation += 1
        return True

    @property
    def mtime(self) -> float | None:
        return None if self.key is None else self.key[2] / 1e9


# -- journal rows --------------------------------------------------------------------------------
@dataclass
class Row:
    """What the live view keeps of one journal line (codes only for the latest row)."""

    batch: int
    y: np.ndarray
    t: float
    time: float
    external: int
    reported: np.ndarray | None
    codes: list[list[int]] | None
    extra: dict[str, Any] | None


def _parse_row(rec: dict[str, Any]) -> Row:
    y = np.asarray(rec["y"], dtype=np.float64).reshape(-1)
    extra = rec.get("extra") if isinstance(rec.get("extra"), dict) else None
    rep = rec.get("reported")
    if rep is None and extra is not None:
        rep = extra.get("reported")
    reported = None
    if isinstance(rep, list) and len(rep) == len(y):
        reported = np.asarray(rep, dtype=np.float64)
    extra_small = None
    if extra:
        extra_small = {k: v for k, v in extra.items() if k != "reported"}
    return Row(int(rec.get("batch", -1)), y, float(rec.get("t", 0.0)), float(rec.get("time", 0.0)),
               int(rec.get("external", 0) or 0), reported, rec.get("I"), extra_small)


def expected_best_of_n(values: np.ndarray, ns: np.ndarray) -> np.ndarray:
    """Expected maximum of ``n`` draws (with replacement) from the empirical distribution of ``values``.

    With the ``m`` values sorted, ``P(max <= v_(i)) = (i / m) ** n``, so
    ``E[max] = sum_i v_(i) * ((i / m) ** n - ((i - 1) / m) ** n)``.

    Args:
        values: ``float [m]`` observed values of random queries (m >= 1; non-finite ones are dropped).
        ns: ``int [p]`` numbers of queries (>= 1).

    Returns:
        ``float64 [p]`` the expected best-so-far of random search after each ``n``.
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.full(len(ns), np.nan)
    if v.size > 4000:  # quantiles keep the estimate and bound the work
        v = np.quantile(v, (np.arange(4000) + 0.5) / 4000)
    m = v.size
    n = np.maximum(np.asarray(ns, dtype=np.float64), 1.0)[:, None]
    cdf = (np.arange(0, m + 1, dtype=np.float64) / m)[None, :] ** n  # [p, m + 1]
    return np.diff(cdf, axis=1) @ v


def _thin(x: list[float], y: list[float], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    if len(x) <= limit:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, limit).round().astype(int))
    return [x[i] for i in idx], [y[i] for i in idx]


def _baseline_grid(xmax: int) -> np.ndarray:
    xmax = max(int(xmax), 1)
    grid = np.unique(np.concatenate([np.arange(1, min(xmax, 20) + 1),
                                     np.linspace(1, xmax, 200).round(),
                                     np.geomspace(1, xmax, 60).round()]))
    return grid.astype(np.int64)


def _budget(cfg: Any) -> int | None:
    if isinstance(cfg, dict):
        b = cfg.get("budget")
        if isinstance(b, int) and not isinstance(b, bool) and b > 0:
            return b
    return None


def _opt_name(cfg: Any) -> str | None:
    if not isinstance(cfg, dict):
        return None
    o = cfg.get("optimizer")
    if isinstance(o, dict):
        return str(o.get("name"))
    return None if o is None else str(o)


def _describe(cfg: Any) -> dict[str, Any]:
    """Short labels of a run config: objective (generator -> target[layer/unit] or problem), optimizer, seed."""
    if not isinstance(cfg, dict):
        return {}
    out: dict[str, Any] = {"optimizer": _opt_name(cfg), "seed": cfg.get("seed"), "budget": _budget(cfg)}

    def name(t: Any) -> str | None:
        return t.get("name") if isinstance(t, dict) else (None if t is None else str(t))

    if "problem" in cfg:
        out["objective"] = name(cfg["problem"])
    else:
        tgt = cfg.get("target") if isinstance(cfg.get("target"), dict) else {"name": name(cfg.get("target"))}
        # the unit searched: layer/unit of a registered target, or the objective string of a user's model
        where = ",".join(f"{k}={tgt[k]}" for k in ("layer", "unit", "objective") if tgt.get(k) is not None)
        if tgt.get("model") is not None and tgt.get("name") in ("model", None):
            tgt = {**tgt, "name": str(tgt["model"])}
        gen = name(cfg.get("generator"))
        out["objective"] = " -> ".join(x for x in (gen, (tgt.get("name") or "") + (f" [{where}]" if where else ""))
                                      if x)
    return out


# -- one run folder ------------------------------------------------------------------------------
class RunReader:
    """A single run folder (``run.json``, ``journal.jsonl``, ``result.json``, ``history.npz``, ``best.png``)."""

    def __init__(self, folder: Path, root: Path) -> None:
        self.folder = folder
        self.root = root
        self.run_json = JsonFile(folder / "run.json")
        self.result = JsonFile(folder / "result.json")
        self.journal = JsonlTail(folder / "journal.jsonl", _parse_row)
        self._hist_key: tuple[int, int, int] | None = None
        self._hist: dict[str, np.ndarray] | None = None
        self._cache_key: Any = None
        self._cache: dict[str, Any] | None = None
        self.spec_config: dict[str, Any] | None = None  # the run's config from a compare manifest
        self.render = False  # whether the page may ask for images drawn from the journal's codes
        self._seen = 0
        self._best: tuple[float, list[int]] | None = None

    # files ---------------------------------------------------------------------------------------
    def poll(self) -> None:
        self.run_json.poll()
        self.result.poll()
        self.journal.poll()
        rows = self.journal.items
        if len(rows) < self._seen:  # read again from the start (a resume cut the file, or a new file)
            self._seen, self._best = 0, None
        for r in rows[self._seen:]:
            if len(r.y) and r.codes is not None:
                j = int(np.argmax(r.y))
                if self._best is None or r.y[j] > self._best[0]:
                    self._best = (float(r.y[j]), list(r.codes[j]) if j < len(r.codes) else [])
        for r in rows[max(0, self._seen - 1): len(rows) - 1]:
            r.codes = None  # keep the codes of the latest row only
        self._seen = len(rows)
        if not rows:
            key = _stat_key(self.folder / "history.npz")
            if key != self._hist_key:
                self._hist_key = key
                self._hist = None
                if key is not None:
                    try:
                        with np.load(self.folder / "history.npz", allow_pickle=False) as h:
                            self._hist = {k: np.asarray(h[k]) for k in h.files}
                    except Exception:  # noqa: BLE001 - being written: next poll
                        self._hist_key = None

    @property
    def config(self) -> dict[str, Any]:
        cfg = self.run_json.value
        if not isinstance(cfg, dict):
            res = self.result.value
            cfg = res.get("config") if isinstance(res, dict) else None
        if not isinstance(cfg, dict):
            cfg = self.spec_config
        return cfg if isinstance(cfg, dict) else {}

    def last_write(self) -> float | None:
        times = [t for t in (self.journal.mtime, self.result.mtime, self.run_json.mtime) if t is not None]
        return max(times) if times else None

    def values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values [N], query_index [N], times [N])`` of every query so far."""
        rows = self.journal.items
        if rows:
            vals, qs, ts = [], [], []
            q = 0
            for r in rows:
                q += r.external
                k = len(r.y)
                vals.append(r.y)
                qs.append(q + 1 + np.arange(k))
                ts.append(np.full(k, r.t))
                q += k
            return np.concatenate(vals), np.concatenate(qs), np.concatenate(ts)
        h = self._hist
        if h is not None and "values" in h:
            v = h["values"].astype(np.float64)
            qi = h.get("query_index", np.arange(1, len(v) + 1))
            ts = h.get("times", np.full(len(v), np.nan))
            return v, np.asarray(qi, dtype=np.int64), np.asarray(ts, dtype=np.float64)
        z = np.zeros(0)
        return z, z.astype(np.int64), z

    def first_values(self, min_count: int = 8) -> np.ndarray:
        """Values of the first batch(es) (at least ``min_count`` values when there are that many)."""
        out: list[np.ndarray] = []
        count = 0
        for r in self.journal.items:
            out.append(r.y)
            count += len(r.y)
            if count >= min_count:
                break
        if not out:
            v, _, _ = self.values()
            return v[:min_count]
        return np.concatenate(out)

    def status(self, failed: bool = False) -> str:
        res = self.result.value
        if isinstance(res, dict) and res.get("status") in ("failed", "error"):
            return "failed"
        if isinstance(res, dict) and res.get("status") == "interrupted":   # Ctrl-C or SIGTERM: resumable
            return "interrupted"
        if isinstance(res, dict) and not _running(res):
            return "finished"
        if failed:
            return "failed"
        from ..journal import lock_holder_alive

        rows = self.journal.items
        if (rows or isinstance(res, dict)) and lock_holder_alive(self.folder) is False:
            return "interrupted"        # its process is gone (SIGKILL, out of memory): the journal resumes it
        if not rows and not isinstance(res, dict):
            return "pending"
        last = self.last_write() or 0.0
        stale = STALE_SECONDS
        if len(rows) >= 3:
            gaps = np.diff([r.time for r in rows[-50:]])
            gaps = gaps[gaps > 0]
            if gaps.size:
                stale = max(stale, STALE_BATCHES * float(np.median(gaps)))
        return "running" if time.time() - last < stale else "stalled"

    def generator_table(self) -> dict[str, Any] | None:
        """The run's generator table (``{"name": ..., params}``) when its images can be drawn."""
        g = self.config.get("generator")
        if isinstance(g, str):
            g = {"name": g}
        return g if isinstance(g, dict) and g.get("name") else None

    def best_codes(self) -> list[list[int]] | None:
        """``[[code]]`` of the best query so far (from the journal), or None."""
        return [self._best[1]] if self._best is not None and self._best[1] else None

    def latest_codes(self) -> list[list[int]] | None:
        """The latest batch's codes, best value first, or None."""
        rows = self.journal.items
        if not rows or rows[-1].codes is None or not len(rows[-1].y):
            return None
        order = np.argsort(-rows[-1].y, kind="stable")
        codes = rows[-1].codes
        return [codes[i] for i in order if i < len(codes)]

    def _render_url(self, what: str) -> str | None:
        if not self.render or self.generator_table() is None:
            return None
        codes = self.best_codes() if what == "best" else self.latest_codes()
        if not codes:
            return None
        rel = self.folder.relative_to(self.root).as_posix()
        tag = hashlib.sha1(json.dumps([self.generator_table(), codes], default=str).encode()).hexdigest()[:16]
        return f"render/{what}.png?run={quote(rel)}&v={tag}"

    def image_url(self, name: str = "best.png") -> str | None:
        key = _stat_key(self.folder / name)
        if key is None:
            return None
        rel = (self.folder / name).relative_to(self.root).as_posix()
        return f"files/{rel}?v={key[2]}-{key[1]}"

    # summary ---------------------------------------------------------------------------------------
    def summary(self, failed: bool = False, baseline_values: tuple[np.ndarray, str] | None = None,
                detail: bool = True) -> dict[str, Any]:
        """The run's state for the page (see :meth:`FolderWatcher.state`)."""
        status = self.status(failed)
        key = (self.journal.generation, self.result.key, self.run_json.key, self._hist_key,
               _stat_key(self.folder / "best.png"), failed, detail, status,
               None if baseline_values is None else (len(baseline_values[0]), baseline_values[1]))
        if key == self._cache_key and self._cache is not None:
            return self._cache
        cfg = self.config
        res = self.result.value if isinstance(self.result.value, dict) else {}
        values, qidx, times = self.values()
        budget = _budget(cfg)
        rows = self.journal.items
        n_queries = int(qidx[-1]) if len(qidx) else 0
        if rows:
            n_queries = int(sum(len(r.y) + r.external for r in rows))
        n_queries = max(n_queries, int(res.get("n_queries", 0) or 0)) if not _running(res) else n_queries
        out: dict[str, Any] = {"kind": "run", "status": status, "budget": budget, "n_queries": n_queries,
                               "batches": len(rows) if rows else res.get("batches"), **_describe(cfg)}
        # best value and where it was reached
        best = None
        best_q = None
        if len(values):
            j = int(np.argmax(values))
            best, best_q = _num(values[j]), int(qidx[j])
        if best is None and _num(res.get("best_value")) is not None:
            best = _num(res.get("best_value"))
        out["best"], out["best_query"] = best, best_q
        out["known_max"] = _num(res.get("known_max"))
        # a running run's result.json and best.png are written throttled: they may hold an older best than the
        # journal's (the query they were written at, when the journal's best came after it; else None)
        files_q = int(res["n_queries"]) if _running(res) and _num(res.get("n_queries")) is not None else None
        behind = files_q if files_q is not None and best_q is not None and best_q > files_q else None
        # the quantity the user asked for (e.g. the firing rate of a spiking unit)
        out["reported"] = self._reported(res, values, behind)
        # a finished spiking run: how close its best image came to firing (result.json's "approach")
        near = res.get("approach") if isinstance(res, dict) and not _running(res) else None
        out["approach"] = near if isinstance(near, dict) else None
        # curve: running best at each improvement (+ the last query), and the per-batch maximum
        cx: list[float] = []
        cy: list[float] = []
        if len(values):
            run = np.maximum.accumulate(values)
            imp = np.flatnonzero(np.r_[True, run[1:] > run[:-1]])
            cx = [float(qidx[i]) for i in imp]
            cy = [float(run[i]) for i in imp]
            if cx[-1] != float(qidx[-1]):
                cx.append(float(qidx[-1]))
                cy.append(float(run[-1]))
        cx, cy = _thin(cx, cy)
        out["curve"] = {"x": cx, "y": [_num(v) for v in cy]}
        if rows and detail:
            bx, by = [], []
            q = 0
            for r in rows:
                q += r.external + len(r.y)
                if len(r.y):
                    bx.append(float(q))
                    by.append(_num(r.y.max()))
            bx, by = _thin(bx, by, 600)
            out["batch_max"] = {"x": bx, "y": by}
        # random-search baseline
        out["baseline"] = None
        if baseline_values is not None and len(baseline_values[0]) and (len(values) or budget):
            xmax = max(budget or 0, n_queries, 1)
            grid = _baseline_grid(xmax)
            yb = expected_best_of_n(baseline_values[0], grid)
            out["baseline"] = {"x": grid.astype(float).tolist(), "y": [_num(v) for v in yb],
                               "source": baseline_values[1], "m": int(len(baseline_values[0]))}
            if n_queries:
                out["baseline_now"] = _num(expected_best_of_n(baseline_values[0], np.array([n_queries]))[0])
        # speed and time left
        out.update(self._speed(rows, times, n_queries, budget, res, status))
        out["image"] = self.image_url()
        out["image_source"] = "best.png" if out["image"] else None
        if out["image"] is None or behind is not None:
            drawn = self._render_url("best")
            if drawn:
                out["image"] = drawn
                out["image_source"] = ("drawn from the best code in the journal (best.png not written yet)"
                                       if behind is None else
                                       f"drawn from the best code in the journal (best.png is from query {behind})")
            elif out["image"] is not None:
                out["image_source"] = (f"best.png as of query {behind}: the best score above was reached at "
                                       f"query {best_q}, after it")
        out["last_write"] = self.last_write()
        if rows and detail:
            last = rows[-1]
            out["latest_batch"] = {"batch": last.batch, "size": int(len(last.y)),
                                   "values": [_num(v) for v in last.y[:512]],
                                   "max": _num(last.y.max()) if len(last.y) else None,
                                   "mean": _num(last.y.mean()) if len(last.y) else None,
                                   "image": self._render_url("latest")}
        out["torn_bytes"] = self.journal.torn_bytes
        out["skipped_lines"] = self.journal.bad_lines
        self._cache_key, self._cache = key, out
        return out

    def _reported(self, res: dict[str, Any], values: np.ndarray, behind: int | None = None) -> dict[str, Any] | None:
        """``{name, best, at_best_score}`` of the quantity the user asked for: from the journal when every row
        carries it, else from ``result.json``; ``as_of`` (a query) when that file's values are older than the
        journal's best (``behind``)."""
        rep = res.get("reported")
        if isinstance(rep, dict) and rep.get("name") and not _running(res):
            return {"name": str(rep["name"]), "best": _num(rep.get("best")),
                    "at_best_score": _num(rep.get("at_best_score"))}
        rows = self.journal.items
        if rows and all(r.reported is not None for r in rows) and len(values):
            rv = np.concatenate([r.reported for r in rows])
            name = None
            for r in rows:
                if r.extra and r.extra.get("reported_name"):
                    name = str(r.extra["reported_name"])
            if name is None and isinstance(rep, dict):
                name = rep.get("name")
            return {"name": name or "reported", "best": _num(rv.max()),
                    "at_best_score": _num(rv[int(np.argmax(values))])}
        if isinstance(rep, dict) and rep.get("name"):
            out = {"name": str(rep["name"]), "best": _num(rep.get("best")),
                   "at_best_score": _num(rep.get("at_best_score"))}
            if behind is not None:      # set only for a running run's files
                out["as_of"] = int(behind)
            return out
        return None

    @staticmethod
    def _speed(rows: list[Row], times: np.ndarray, n: int, budget: int | None, res: dict[str, Any],
               status: str) -> dict[str, Any]:
        out: dict[str, Any] = {"elapsed_s": None, "qps": None, "qps_recent": None, "eta_s": None,
                               "optimizer_share": None}
        elapsed = None
        if rows:
            elapsed = rows[-1].t
        elif len(times) and np.isfinite(times[-1]):
            elapsed = float(times[-1])
        if _num(res.get("seconds")) and not _running(res):
            elapsed = float(res["seconds"])
        out["elapsed_s"] = _num(elapsed)
        if elapsed and n:
            out["qps"] = n / elapsed
        if len(rows) >= 2:
            tail = rows[-min(len(rows), 20):]
            dq = sum(len(r.y) + r.external for r in tail[1:])
            dt = tail[-1].t - tail[0].t
            if dt > 0:
                out["qps_recent"] = dq / dt
        rate = out["qps_recent"] or out["qps"]
        if budget and rate and status == "running":
            out["eta_s"] = max(0.0, (budget - n) / rate)
        elif status == "finished":
            out["eta_s"] = 0.0
        osec, sec = _num(res.get("optimizer_seconds")), _num(res.get("seconds"))
        if osec is not None and sec:
            out["optimizer_share"] = osec / sec
        return out


# -- a rig folder (presentations.jsonl) ---------------------------------------------------------------
def _select(resp: np.ndarray, select: Any) -> np.ndarray:
    """The run's channel selection applied to ``[P, channels]`` responses (mean of all when unusable)."""
    r = np.asarray(resp, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.size == 0:
        return np.zeros(len(r))
    ch = r.shape[1]
    if isinstance(select, bool):
        select = None
    if select is None:
        return r[:, 0] if ch == 1 else r.mean(axis=1)
    if select == "mean":
        return r.mean(axis=1)
    idx = [select] if isinstance(select, int) else list(select) if isinstance(select, list) else []
    idx = [int(c) for c in idx if isinstance(c, int) and 0 <= c < ch]
    return r[:, idx].mean(axis=1) if idx else r.mean(axis=1)


@dataclass
class _Block:
    block: int
    sent: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    others: list[dict[str, Any]] = field(default_factory=list)


class RigReader(RunReader):
    """A rig-run folder: the run files plus ``presentations.jsonl`` (sent blocks and responses)."""

    def __init__(self, folder: Path, root: Path) -> None:
        super().__init__(folder, root)
        self.plog = JsonlTail(folder / "presentations.jsonl", self._keep)
        self._rig_key: Any = None
        self._rig: dict[str, Any] | None = None

    @staticmethod
    def _keep(rec: dict[str, Any]) -> dict[str, Any]:
        if "block" not in rec and rec.get("ev") in ("sent", "response"):
            raise KeyError("block")
        return rec

    def poll(self) -> None:
        super().poll()
        self.plog.poll()

    def last_write(self) -> float | None:
        times = [t for t in (super().last_write(), self.plog.mtime) if t is not None]
        return max(times) if times else None

    def rig_summary(self) -> dict[str, Any]:
        """Per-block health and drift: latency, retries, drops, rejected replies, reference means."""
        key = (self.plog.generation, self.result.key, self.run_json.key)
        if key == self._rig_key and self._rig is not None:
            return self._rig
        cfg = self.config
        select = cfg.get("select")
        blocks: dict[int, _Block] = {}
        rejected_events = 0
        for rec in self.plog.items:
            ev = rec.get("ev")
            if ev in ("sent", "response"):
                b = blocks.setdefault(int(rec["block"]), _Block(int(rec["block"])))
                if ev == "sent":
                    b.sent = rec
                else:
                    b.response = rec
            elif ev in ("ignored", "rejected"):
                rejected_events += 1
        stats_s: dict[bytes, list[float]] = {}
        best_n = None
        table = []
        best_x: list[float] = []
        best_y: list[float | None] = []
        ref_series: list[list[float | None]] = []
        used = 0
        rejected_total = rejected_events
        for g in sorted(blocks):
            b = blocks[g]
            row: dict[str, Any] = {"block": g, "status": "sent" if b.response is None else "answered"}
            sent = b.sent or {}
            kinds = sent.get("kinds") or []
            codes = sent.get("codes") or []
            order = sent.get("order") or []
            row["images"] = len(sent.get("image_ids") or [])
            row["expected"] = len(order)
            row["candidates"] = sum(1 for k in kinds if k == "cand")
            row["confirm"] = any(k == "confirm" for k in kinds)
            if b.response is not None:
                resp = b.response
                ids = np.asarray(resp.get("image_ids") or [], dtype=np.int64)
                y = _select(np.asarray(resp.get("responses") or [], dtype=np.float64), select)
                row["received"] = int(len(ids))
                row["dropped"] = max(0, len(order) - len(ids)) if order else 0
                row["attempt"] = int(resp.get("attempt", 0) or 0)
                rej = resp.get("rejected", resp.get("ignored", 0))
                rej = len(rej) if isinstance(rej, list) else int(rej or 0)
                row["rejected"] = rej
                rejected_total += rej
                if sent.get("time") is not None and resp.get("time") is not None:
                    row["latency_s"] = _num(float(resp["time"]) - float(sent["time"]))
                index = {int(v): i for i, v in enumerate(sent.get("image_ids") or [])}
                k = min(len(ids), len(y))
                j = np.asarray([index.get(int(v), -1) for v in ids[:k]], dtype=np.int64)
                y = y[:k]
                n_img = max(len(kinds), len(index))
                ok = j >= 0
                j, y = j[ok], y[ok]
                cnt = np.bincount(j, minlength=n_img) if len(j) else np.zeros(n_img, dtype=np.int64)
                sums = np.bincount(j, weights=y, minlength=n_img) if len(j) else np.zeros(n_img)
                means = sums / np.maximum(cnt, 1)
                refs = [(_num(means[i]) if cnt[i] else None) for i, k in enumerate(kinds)
                        if str(k).startswith("ref") and i < n_img]
                row["reference_means"] = refs
                if refs and not row["confirm"]:
                    ref_series.append(refs)
                for i, k in enumerate(kinds):
                    if k in ("cand", "retest", "confirm") and i < len(codes) and i < n_img and cnt[i]:
                        kb = json.dumps(codes[i]).encode()
                        s = stats_s.setdefault(kb, [0.0, 0.0])
                        s[0] += float(sums[i])
                        s[1] += float(cnt[i])
                used += int(len(y))
                if stats_s:
                    best_s = max((s for s in stats_s.values() if s[1]), key=lambda s: s[0] / s[1])
                    best_mean, best_n = best_s[0] / best_s[1], int(best_s[1])
                    row["best_mean"] = _num(best_mean)
                    best_x.append(float(used))
                    best_y.append(_num(best_mean))
            table.append(row)
        answered = [r for r in table if r["status"] == "answered"]
        lat = [r["latency_s"] for r in answered if r.get("latency_s") is not None]
        res = self.result.value if isinstance(self.result.value, dict) else {}
        if res and not _running(res) and isinstance(res.get("ignored_messages"), int):
            rejected_total = max(rejected_total, int(res["ignored_messages"]))
        n_ref = max((len(r) for r in ref_series), default=0)
        out = {
            "blocks": len(answered), "sent_unanswered": len(table) - len(answered),
            "presentations": used,
            "retries": int(sum(r.get("attempt", 0) for r in answered)),
            "retried_blocks": int(sum(1 for r in answered if r.get("attempt", 0) > 0)),
            "dropped": int(sum(r.get("dropped", 0) for r in answered)),
            "rejected": int(rejected_total),
            "latency_median_s": _num(np.median(lat)) if lat else None,
            "latency_max_s": _num(max(lat)) if lat else None,
            "latency": {"x": [float(r["block"]) for r in answered if r.get("latency_s") is not None], "y": lat},
            "reference": {"x": [float(i) for i in range(len(ref_series))],
                          "series": [[(s[j] if j < len(s) else None) for s in ref_series] for j in range(n_ref)]},
            "best_curve": {"x": best_x, "y": best_y}, "best_n": best_n,
            "table": table[-12:],
        }
        if n_ref and len(ref_series) >= 2:
            t = np.arange(len(ref_series), dtype=np.float64)
            slopes = []
            for j in range(n_ref):
                col = np.array([np.nan if (j >= len(s) or s[j] is None) else s[j] for s in ref_series], dtype=float)
                ok = np.isfinite(col)
                slopes.append(_num(np.polyfit(t[ok], col[ok], 1)[0]) if ok.sum() >= 2 else None)
            out["reference"]["slope_per_block"] = slopes
        self._rig_key, self._rig = key, out
        return out

    def summary(self, failed: bool = False, baseline_values: tuple[np.ndarray, str] | None = None,
                detail: bool = True) -> dict[str, Any]:
        out = dict(super().summary(failed, None, detail))
        rig = self.rig_summary()
        out["kind"] = "rig"
        out["rig"] = rig
        budget = out.get("budget")
        out["n_presentations"] = rig["presentations"]
        # the rig's budget counts presentations: best mean over presentations is its curve
        if rig["best_curve"]["x"]:
            out["curve"] = rig["best_curve"]
            out["best"] = rig["best_curve"]["y"][-1]
            out["best_query"] = None  # a mean over presentations, not one query
            out["best_n"] = rig.get("best_n")
            out["curve_unit"] = "presentations"
        cfg = self.config
        sel = cfg.get("select")
        out["objective"] = (out.get("objective") or "generator") + " -> rig" + (
            f" (channel {sel})" if sel is not None else "")
        res = self.result.value if isinstance(self.result.value, dict) else {}
        if not _running(res) and _num(res.get("best_mean")) is not None:
            out["best"] = _num(res["best_mean"])
            out["best_n"] = res.get("best_n")
        if budget and rig["presentations"]:
            rate = None
            answered = [r for r in self.plog.items if r.get("ev") == "response" and r.get("time") is not None]
            sent = [r for r in self.plog.items if r.get("ev") == "sent" and r.get("time") is not None]
            if answered and sent:
                span = float(answered[-1]["time"]) - float(sent[0]["time"])
                if span > 0:
                    rate = rig["presentations"] / span
            out["qps"] = rate
            out["qps_recent"] = None
            out["eta_s"] = (max(0.0, (budget - rig["presentations"]) / rate) if rate and out["status"] == "running"
                            else (0.0 if out["status"] == "finished" else None))
            out["n_queries"] = rig["presentations"]
        return out


# -- folders of many runs (compare, scan, demo) -----------------------------------------------------------
def detect_kind(folder: Path) -> str:
    """``"rig"``, ``"compare"``, ``"run"``, ``"multi"`` (run folders below, no manifest) or ``"empty"``."""
    if (folder / "presentations.jsonl").exists():
        return "rig"
    if (folder / "compare.json").exists():
        return "compare"
    if any((folder / f).exists() for f in ("run.json", "journal.jsonl", "result.json")):
        return "run"
    if _find_runs(folder, limit=1):
        return "multi"
    return "empty"


def _find_runs(folder: Path, depth: int = 4, limit: int = 500) -> list[Path]:
    """Run folders (holding run.json or result.json) below ``folder``, breadth first, hidden folders skipped."""
    found: list[Path] = []
    level = [folder]
    for _ in range(depth):
        nxt: list[Path] = []
        for d in level:
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for s in subs:
                if (s / "run.json").exists() or (s / "result.json").exists() or (s / "journal.jsonl").exists():
                    found.append(s)
                    if len(found) >= limit:
                        return found
                else:
                    nxt.append(s)
        level = nxt
    return found


class FolderWatcher:
    """Follows one folder (run, rig-run, compare/scan, or a folder of run folders such as the demo's).

    Args:
        folder: the folder to watch (it may not exist yet: the state says so until it does).
        render: offer images drawn from the journal's codes with the run's generator (the latest
            batch as a grid; the best image before ``best.png`` exists) at ``render/...`` URLs.
    """

    def __init__(self, folder: str | os.PathLike, render: bool = False) -> None:
        self.folder = Path(folder).resolve()
        self.render = render
        self._runs: dict[Path, RunReader] = {}
        self.manifest = JsonFile(self.folder / "compare.json")
        self.compare_status = JsonFile(self.folder / "compare_status.json")
        self.scan_json = JsonFile(self.folder / "scan.json")
        self._parents: dict[Path, JsonFile] = {}

    def _reader(self, folder: Path, rig: bool = False) -> RunReader:
        r = self._runs.get(folder)
        if r is None or (rig and not isinstance(r, RigReader)):
            r = RigReader(folder, self.folder) if rig else RunReader(folder, self.folder)
            self._runs[folder] = r
        r.poll()
        return r

    def fingerprint(self) -> tuple[Any, ...]:
        """Cheap summary of the watched files' (inode, size, mtime): the state changes only when it does."""
        keys: list[Any] = [detect_kind(self.folder) if self.folder.exists() else "missing"]
        for f in ("compare.json", "compare_status.json", "scan.json", "presentations.jsonl", "run.json",
                  "journal.jsonl", "result.json", "best.png"):
            keys.append(_stat_key(self.folder / f))
        for path in self._runs:
            if path != self.folder:
                for f in ("journal.jsonl", "result.json", "best.png", "run.json"):
                    keys.append(_stat_key(path / f))
        return tuple(keys)

    def state(self) -> dict[str, Any]:
        """The folder's state now, JSON-able.

        Keys: ``folder``, ``kind`` (``run``, ``rig``, ``compare``, ``scan``, ``multi``, ``empty``, ``missing``),
        ``now`` (server time, s since the epoch), and for runs (``run``/``rig``) the run's fields at the top
        level: ``status`` (pending, running, stalled, finished, failed), ``objective``, ``optimizer``, ``seed``,
        ``budget``, ``n_queries``, ``best``, ``best_query``, ``reported`` ({name, best, at_best_score} or
        None), ``image`` (URL of best.png or None), ``curve`` ({x: queries, y: best so far}), ``baseline``
        ({x, y, source, m}: expected best-of-n of random search, or None), ``qps``, ``qps_recent``, ``eta_s``,
        ``elapsed_s``, ``optimizer_share``, ``latest_batch``; rigs add ``rig`` (per-block health and drift);
        compare/scan/multi folders give ``runs`` (one reduced run state each, with ``unit``, ``id`` and
        ``folder``), ``counts`` (runs per status), ``units`` and per-unit ``baselines``.
        """
        base = {"folder": str(self.folder), "now": time.time()}
        if not self.folder.exists():
            return {**base, "kind": "missing", "message": f"{self.folder} does not exist yet; waiting for it"}
        kind = detect_kind(self.folder)
        if kind in ("run", "rig"):
            r = self._reader(self.folder, rig=(kind == "rig"))
            r.render = self.render
            bl = self._single_baseline(r) if kind == "run" else None
            return {**base, **r.summary(baseline_values=bl), "kind": kind}
        if kind in ("compare", "multi"):
            return {**base, **self._multi(kind)}
        return {**base, "kind": "empty", "message": "no run files yet (run.json, journal.jsonl, result.json, "
                                                    "presentations.jsonl or compare.json); waiting"}

    def run_reader(self, rel: str) -> RunReader | None:
        """The reader of the run folder ``rel`` (relative to the watched folder) when it is being followed."""
        return self._runs.get((self.folder / rel).resolve())

    # baselines -----------------------------------------------------------------------------------------
    def _single_baseline(self, r: RunReader) -> tuple[np.ndarray, str] | None:
        if _opt_name(r.config) == "random":
            v, _, _ = r.values()
            return (v, f"this random-search run's own {len(v)} values") if len(v) else None
        # a random-search run of the same objective in an enclosing compare folder
        unit_cfg = {k: r.config.get(k) for k in ("generator", "target", "problem")}
        for parent in list(r.folder.parents)[:5]:
            man = self._parents.setdefault(parent, JsonFile(parent / "compare.json")).poll()
            if not isinstance(man, dict):
                continue
            rel = r.folder.relative_to(parent).as_posix()
            mine = next((sp for sp in man.get("runs", []) if sp.get("folder") == rel), None)
            for spec in man.get("runs", []):
                cfg = spec.get("config", {})
                same = (spec.get("unit") == mine.get("unit") if mine is not None
                        else {k: cfg.get(k) for k in unit_cfg} == unit_cfg)
                if spec is not mine and (_opt_name(cfg) == "random" or spec.get("optimizer") == "random") and same:
                    other = self._reader((parent / spec["folder"]).resolve())
                    v, _, _ = other.values()
                    if len(v):
                        return v, f"random-search run {spec['folder']} of the same objective in {parent.name}"
            break
        first = r.first_values()
        if len(first):
            return first, (f"empirical: the {len(first)} values of this run's first batch(es), "
                           "asked before the optimizer had learned anything")
        return None

    def _multi(self, kind: str) -> dict[str, Any]:
        man = self.manifest.poll() if kind == "compare" else None
        status_file = self.compare_status.poll() if kind == "compare" else None
        errors = status_file.get("errors", {}) if isinstance(status_file, dict) else {}
        specs: list[dict[str, Any]] = []
        if isinstance(man, dict):
            for s in man.get("runs", []):
                specs.append({"id": s.get("id"), "unit": s.get("unit"), "optimizer": s.get("optimizer"),
                              "seed": s.get("seed"), "folder": s.get("folder"), "config": s.get("config")})
        else:
            for p in _find_runs(self.folder):
                rel = p.relative_to(self.folder).as_posix()
                specs.append({"id": rel, "unit": None, "optimizer": None, "seed": None, "folder": rel, "config": None})
        # per-unit baselines: pooled random-search runs of the unit, else pooled first batches
        readers = []
        for s in specs:
            r = self._reader((self.folder / str(s["folder"])).resolve())
            if isinstance(s["config"], dict):
                r.spec_config = s["config"]
            if s["config"] is None:
                d = _describe(r.config)
                s["unit"] = d.get("objective") or s["folder"].split("/")[0]
                s["optimizer"] = d.get("optimizer")
                s["seed"] = d.get("seed")
            readers.append(r)
        units: dict[str, list[int]] = {}
        for i, s in enumerate(specs):
            units.setdefault(str(s["unit"]), []).append(i)
        baselines: dict[str, tuple[np.ndarray, str]] = {}
        for u, idx in units.items():
            rand = [readers[i].values()[0] for i in idx if _opt_name(readers[i].config) == "random"
                    or specs[i]["optimizer"] == "random"]
            rand = [v for v in rand if len(v)]
            if rand:
                baselines[u] = (np.concatenate(rand), f"pooled values of the {len(rand)} random-search run(s) of "
                                                      "this unit in this folder")
            else:
                first = [readers[i].first_values() for i in idx]
                first = [v for v in first if len(v)]
                if first:
                    baselines[u] = (np.concatenate(first), "empirical: pooled first batches of this unit's runs")
        runs = []
        counts: dict[str, int] = {}
        total_q = done_q = 0
        for s, r in zip(specs, readers):
            st = r.summary(failed=s["id"] in errors, baseline_values=None, detail=False)
            row = {k: st.get(k) for k in ("status", "n_queries", "budget", "best", "best_query", "reported",
                                          "image", "curve", "qps", "qps_recent", "eta_s", "elapsed_s",
                                          "optimizer_share", "last_write")}
            row.update(id=s["id"], unit=s["unit"], optimizer=s["optimizer"] or st.get("optimizer"), seed=s["seed"],
                       folder=s["folder"], error=errors.get(s["id"]))
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            if row["budget"]:
                total_q += int(row["budget"])
                done_q += min(int(row["n_queries"] or 0), int(row["budget"]))
            runs.append(row)
        bl_out = {}
        for u, (vals, src) in baselines.items():
            xmax = max([r["budget"] or r["n_queries"] or 1 for r in runs if str(r["unit"]) == u] + [1])
            grid = _baseline_grid(xmax)
            bl_out[u] = {"x": grid.astype(float).tolist(), "y": [_num(v) for v in expected_best_of_n(vals, grid)],
                         "source": src, "m": int(len(vals))}
        rates = [r["qps_recent"] or r["qps"] for r in runs if r["status"] == "running" and (r["qps_recent"] or r["qps"])]
        rate = float(sum(rates)) if rates else None
        out: dict[str, Any] = {"kind": "scan" if (self.scan_json.poll() is not None or
                                                  str((man or {}).get("name", "")).startswith("scan")) and kind == "compare"
                               else kind,
                               "name": (man or {}).get("name", self.folder.name), "runs": runs, "counts": counts,
                               "units": list(units), "baselines": bl_out, "queries_done": done_q,
                               "queries_total": total_q or None, "qps": rate,
                               "eta_s": (total_q - done_q) / rate if rate and total_q else None}
        if errors:
            out["errors"] = errors
        return out

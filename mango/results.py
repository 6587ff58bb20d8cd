"""What a finished run is, and the run folder files written from it.

:class:`Result` is what :func:`mango.loop.maximize` returns; :meth:`Result.save`
writes the same run folder files the command line writes (``result.json``,
``history.npz``, ``best.png``), so a run started from Python and one started
with ``mango run --out`` leave the same folder (PNGs through :func:`mango.imaging.save_png`).

"Finished" is only ever seen with every final file complete: :func:`write_final_files`
writes ``history.npz`` and ``best.png`` atomically first and ``result.json`` (with
``"status": "finished"``) last, and :func:`finished_result` treats a folder as finished
only when its ``result.json`` says so.
"""
from __future__ import annotations

import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .imaging import save_png
from .journal import atomic_write, same_run_config

__all__ = ["Result", "versions", "write_final_files", "finished_result", "FINISHED", "INTERRUPTED", "FAILED"]

#: ``result.json``'s ``status`` of a finished run (the live view may write ``"running"`` before)
FINISHED = "finished"
#: ``result.json``'s ``status`` of a run stopped by Ctrl-C or a signal (a partial result), and of one ended
#: by an error (both resumable from their journal)
INTERRUPTED = "interrupted"
FAILED = "failed"


@dataclass
class Result:
    """Outcome of :func:`mango.loop.maximize`.

    Attributes:
        best_code: ``int64 [d]`` indices of the recommended query (``Optimizer.recommend()``:
            the best evaluated code for every MANGO optimizer).
        best_value: its search score.
        values: ``float64 [N]`` every query's score in order (N = queries evaluated by the loop).
        times: ``float64 [N]`` elapsed run seconds when each query's batch finished.
        query_index: ``int64 [N]`` the budget counter after each query (counts
            external queries, e.g. gradient forward passes).
        n_queries: queries spent in all (``== budget`` unless the optimizer stopped early).
        n_external: of those, queries the optimizer evaluated itself (gradient AM forward passes).
        seconds, optimizer_seconds, eval_seconds: wall-time totals.
        best_image: ``[C, H, W]`` float tensor of the best image (None for function objectives).
        best_uint8: ``uint8 [H, W, C]`` of the best image as ``best.png`` shows it (None likewise).
        config: the run's config (``run.json``).
        batches: optimizer batches (asks) of the run.
        batch_size: the batch size the optimizer actually used (its ``k``: queries per ask).
        reported_name: what :attr:`reported` holds (``"value"``: the scores themselves; ``"rate"``
            for a spiking unit with a graded readout).
        reported: ``float64 [N]`` the quantity the user asked for, per query (``objective.reported(values)``).
        best_reported: that quantity at :attr:`best_value`.
        objective_info: ``objective.info()`` (for ``result.json``); known_max: the problem's known maximum.
        approach: for a spiking unit, how close the best image brought it to firing (its spikes, the
            membrane's late peak against threshold and where: :meth:`mango.objective.Objective.approach`);
            None for other targets.
        interrupted: the run was stopped by the user (Ctrl-C) before its budget was spent: a partial
            result (its folder's journal resumes the run; ``result.json`` saved from it is not a
            finished run).
    """

    best_code: np.ndarray
    best_value: float
    values: np.ndarray
    times: np.ndarray
    query_index: np.ndarray
    n_queries: int
    seconds: float
    optimizer_seconds: float
    eval_seconds: float
    best_image: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    batches: int = 0
    batch_size: int | None = None
    n_external: int = 0
    reported_name: str = "value"
    reported: np.ndarray | None = None
    best_reported: float | None = None
    best_uint8: np.ndarray | None = None
    approach: dict[str, Any] | None = None
    objective_info: dict[str, Any] = field(default_factory=dict)
    known_max: float | None = None
    interrupted: bool = False

    @property
    def best_so_far(self) -> np.ndarray:
        """``float64 [N]`` running maximum of :attr:`values`."""
        return np.maximum.accumulate(self.values) if len(self.values) else self.values

    @property
    def best_query(self) -> int | None:
        """The query count (:attr:`query_index`: an optimizer's own forward passes count too) at which
        :attr:`best_value` was first reached; None when no evaluated value reaches it (e.g. a noisy run's
        recommended code, ranked by a mean)."""
        hit = np.nonzero(self.values >= self.best_value)[0]
        return int(self.query_index[hit[0]]) if len(hit) else None

    def _headline(self) -> str:
        """``"<score> (<reported> <value>) at query q of N, <optimizer> seed s, t s"``: what a repr shows."""
        opt = self.config.get("optimizer")
        opt = opt.get("name") if isinstance(opt, dict) else opt
        q = self.best_query
        at = "" if q is None else f" at query {q}"
        rep = ("" if self.best_reported is None or self.reported_name == "value"
               else f" ({self.reported_name} {self.best_reported:.6g})")
        stop = ""
        if self.interrupted:
            budget = self.config.get("budget")
            stop = f" (interrupted: {self.n_queries} of {budget} queries)" if budget else " (interrupted)"
        return (f"{self.best_value:.6g}{rep}{at} of {self.n_queries}{stop}, optimizer {opt!r}, seed "
                f"{self.config.get('seed')}, {self.seconds:.1f} s")

    def __repr__(self) -> str:   # the dataclass repr would print every array in full
        return (f"Result(best_value {self._headline()}; best_code int64[{self.best_code.size}], values, trace "
                f"of {len(self.values)} queries, save(folder))")

    def reported_summary(self) -> dict[str, Any]:
        """``{"name", "best", "at_best_score"}``: the reported quantity's maximum over the run's queries and
        its value at the best score (they differ when the score breaks ties the reported quantity cannot see)."""
        rep = self.values if self.reported is None else self.reported
        at = self.best_value if self.best_reported is None else self.best_reported
        return {"name": self.reported_name, "best": float(rep.max()) if len(rep) else float("nan"),
                "at_best_score": float(at)}

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: what ``result.json`` holds (plus ``versions``, ``finished`` and ``status`` on save)."""
        extra = {} if self.approach is None else {"approach": self.approach}
        if self.interrupted:
            extra["interrupted"] = True
        return {"best_value": self.best_value, "best_code": self.best_code.tolist(),
                "reported": self.reported_summary(), **extra,
                "n_queries": self.n_queries, "n_external": self.n_external, "batches": self.batches,
                "batch_size": self.batch_size, "seconds": self.seconds,
                "optimizer_seconds": self.optimizer_seconds, "eval_seconds": self.eval_seconds,
                "seed": self.config.get("seed"), "objective": self.objective_info, "known_max": self.known_max,
                "config": self.config}

    def history_arrays(self) -> dict[str, np.ndarray]:
        """The arrays ``history.npz`` holds: values, times, query_index, best_so_far, best_code, reported."""
        rep = self.values if self.reported is None else self.reported
        return {"values": self.values, "times": self.times, "query_index": self.query_index,
                "best_so_far": self.best_so_far, "best_code": self.best_code, "reported": rep}

    def save(self, folder: str | Path) -> None:
        """Write ``history.npz``, (for image objectives) ``best.png`` and, last, ``result.json`` into ``folder``
        (see :func:`write_final_files`)."""
        summary = self.summary()
        summary.update(optimizer_settings=optimizer_settings(self.config), versions=versions(),
                       finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_final_files(folder, summary, self.history_arrays(), self.best_uint8)

    def restore_missing(self, folder: str | Path) -> list[str]:
        """For a finished run folder whose ``history.npz`` or ``best.png`` was deleted: write them again from
        this (replayed) result, leaving ``result.json`` as it is. Returns the names written."""
        out, written = Path(folder), []
        if not (out / "history.npz").exists():
            _write_history(out, self.history_arrays())
            written.append("history.npz")
        if self.best_uint8 is not None and not (out / "best.png").exists():
            _write_png(out, self.best_uint8)
            written.append("best.png")
        return written


def _write_history(out: Path, history: dict[str, np.ndarray]) -> None:
    """``history.npz`` in ``out``, written to a temporary file and renamed into place."""
    buf = io.BytesIO()
    np.savez(buf, **history)
    atomic_write(out / "history.npz", buf.getvalue())


def _write_png(out: Path, best_uint8: np.ndarray) -> None:
    """``best.png`` in ``out``, written to a hidden temporary file, synced and renamed into place."""
    tmp = out / ".best.tmp.png"
    save_png(best_uint8, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out / "best.png")


def write_final_files(folder: str | Path, summary: dict[str, Any], history: dict[str, np.ndarray],
                      best_uint8: np.ndarray | None) -> None:
    """Write a run's final files so that a folder is only ever seen finished with all of them complete.

    ``history.npz`` (the arrays of ``history``) and ``best.png`` (``uint8 [H, W, C]`` or ``[k, H, W, C]``;
    skipped when None) are each written to a hidden temporary file and renamed into place; ``result.json``
    (``summary`` plus ``"status": "finished"``, or ``"interrupted"`` for a summary marked ``interrupted``)
    is renamed into place last. A kill at any point leaves either no finished ``result.json`` (the run
    resumes) or every file complete.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    _write_history(out, history)
    if best_uint8 is not None:
        _write_png(out, best_uint8)
    status = INTERRUPTED if summary.get("interrupted") is True else FINISHED   # a partial Result saved by hand
    atomic_write(out / "result.json", json.dumps({**summary, "status": status}, indent=2, default=str).encode())


def finished_result(folder: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``result.json`` of ``folder`` if it marks a finished run, else None (missing, unreadable, written
    while running, or saved from an interrupted run's partial result). A ``result.json`` without
    ``status`` (written before it existed) counts as finished. With ``config``, only a result of that
    config counts (a ``run.json`` edited by hand to a larger budget: the run goes on and is saved anew)."""
    path = Path(folder) / "result.json"
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(res, dict) or res.get("status", FINISHED) != FINISHED or res.get("running") is True
            or res.get("interrupted") is True):
        return None
    if config is not None and not same_run_config(res.get("config"), json.loads(json.dumps(config, default=str))):
        return None
    if not _history_readable(Path(folder) / "history.npz"):
        return None     # a damaged history (truncated, overwritten): the run replays its journal and writes it anew
    return res


def _history_readable(path: Path) -> bool:
    """False when ``path`` exists but is not a readable ``.npz`` (a missing one counts as readable: folders
    written before it existed, and results saved without one)."""
    if not path.exists():
        return True
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                z[name]
    except Exception:       # BadZipFile, EOFError, ValueError, OSError: whatever a damaged file raises
        return False
    return True


def versions() -> dict[str, Any]:
    """What produced a result (for result.json): Python, the platform and CPU, MANGO and the libraries
    whose arithmetic or random streams decide the values, MANGO's source commit when it runs from a git
    checkout (with ``"dirty": true`` when tracked files differ from it), and torch's thread count (sums
    over a batch, and so the last bits of a value, may differ between thread counts)."""
    from importlib import metadata

    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": _cpu_model()}
    for pkg in ("mango-am", "torch", "numpy", "scipy", "jax", "jaxlib", "optax", "teneva", "nevergrad", "cma",
                "snntorch", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out.update(_source_commit())
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_threads"] = int(torch.get_num_threads())
    return out


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _source_commit() -> dict[str, Any]:
    """``{"mango_commit": sha, "mango_dirty": bool}`` when MANGO's source is a git checkout, else ``{}``."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {}
    # the checkout's own repository (an inherited GIT_DIR, e.g. inside a git hook, would name another), and no
    # optional index lock (a user's git command running at the same time must not be disturbed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
                                  check=True, env=env).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    sha = git("rev-parse", "HEAD")
    if not sha:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"mango_commit": sha, **({} if status is None else {"mango_dirty": status != ""})}


def optimizer_settings(config: Any) -> dict[str, Any] | None:
    """Every setting of the run's registered optimizer: its defaults with the given ``config["optimizer"]``
    values laid over them (result.json's ``config`` keeps only what was given). None when the config names
    no registered optimizer (an Optimizer object passed to ``maximize``)."""
    from . import registry

    opt = config.get("optimizer") if isinstance(config, dict) else None
    name = opt.get("name") if isinstance(opt, dict) else None
    if not isinstance(name, str):
        return None
    try:
        params = registry.describe_params(registry.get("optimizer", name))
    except Exception:           # an unregistered name: nothing to describe
        return None
    out = {k: v for k, v in params.items() if k not in ("space", "seed", "budget", "batch_size")}
    out.update({k: v for k, v in opt.items() if k != "name"})
    return {k: v if isinstance(v, (bool, int, float, str, type(None), list, dict)) else
            (list(v) if isinstance(v, tuple) else repr(v)) for k, v in out.items()}
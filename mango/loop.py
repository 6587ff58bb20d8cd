"""The optimisation loop: ask -> evaluate -> journal -> tell, until the budget is spent.

:func:`maximize` returns a :class:`Result` with the best code, its value and
image, and the full history (every query's value, best-so-far by query count and
by wall time). With ``run_dir`` every batch is journaled (and fsynced) before the
optimizer is told, and a run restarted with the same arguments continues from the
journal: the last checkpointed optimizer state is loaded and the later journal
rows are replayed (asked again and told their recorded values, never evaluated
again).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, MangoError
from .journal import Journal
from .objective import BaseObjective
from .optimizers import make_optimizer
from .optimizers.base import Optimizer

__all__ = ["maximize", "Result", "BatchEvent"]

log = logging.getLogger(__name__)


@dataclass
class BatchEvent:
    """What a callback sees after each batch."""

    batch: int
    I: np.ndarray
    y: np.ndarray
    n_queries: int
    budget: int
    best_value: float
    best_code: np.ndarray | None
    improved: bool
    elapsed: float
    replayed: bool
    objective: BaseObjective


Callback = Callable[[BatchEvent], None]


@dataclass
class Result:
    """Outcome of :func:`maximize`.

    Attributes:
        best_code: ``int64 [d]`` indices of the best query.
        best_value: its activation.
        best_image: ``[C, H, W]`` tensor of the best image (None for function objectives).
        values: ``float64 [N]`` every query's value in order (N = queries evaluated by the loop).
        times: ``float64 [N]`` elapsed run seconds when each query's batch finished.
        query_index: ``int64 [N]`` the budget counter after each query (counts
            external queries, e.g. gradient forward passes).
        best_so_far: ``float64 [N]`` running maximum of ``values``.
        n_queries, seconds, optimizer_seconds, eval_seconds: totals.
        config: the run's config (for result.json).
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

    @property
    def best_so_far(self) -> np.ndarray:
        return np.maximum.accumulate(self.values) if len(self.values) else self.values

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (what ``result.json`` holds, with config and versions)."""
        return {"best_value": self.best_value, "best_code": self.best_code.tolist(),
                "n_queries": self.n_queries, "batches": self.batches, "seconds": self.seconds,
                "optimizer_seconds": self.optimizer_seconds, "eval_seconds": self.eval_seconds,
                "config": self.config}


def maximize(objective: BaseObjective, optimizer: Optimizer | str, budget: int, seed: int = 0, *,
             batch_size: int | None = None, params: dict[str, Any] | None = None,
             run_dir: str | Path | None = None, config: dict[str, Any] | None = None,
             callbacks: Sequence[Callback] = (), checkpoint_every: int = 10) -> Result:
    """Maximize ``objective`` over its space with ``optimizer`` for ``budget`` queries.

    Args:
        objective: an :class:`~mango.objective.Objective` or ``FunctionObjective``.
        optimizer: an optimizer instance, or a registered name (built with
            ``seed``, ``batch_size``, ``budget`` and ``params``).
        budget: total queries (> 0); the last batch is cut to fit.
        seed: the run's seed (used when ``optimizer`` is a name).
        run_dir: folder for the journal and checkpoints; an existing journal
            there is resumed.
        config: stored in ``run.json``; a resume with a different config is refused.
        callbacks: called with a :class:`BatchEvent` after every batch.
        checkpoint_every: batches between optimizer checkpoints (for optimizers
            with a ``state_dict``; others resume by replaying the whole journal).
    """
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
        raise ConfigError(f"budget must be a positive integer, got {budget!r}")
    budget = int(budget)
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, objective.space, batch_size=batch_size, seed=seed,
                                   budget=budget, params=params)
    if optimizer.space.d != objective.space.d or optimizer.space.n != objective.space.n:
        raise ConfigError(f"optimizer space (d={optimizer.space.d}, n={optimizer.space.n}) differs from the "
                          f"objective's (d={objective.space.d}, n={objective.space.n})")
    if optimizer.needs_objective:
        optimizer.bind(objective)
    config = dict(config or {})
    config.setdefault("budget", budget)
    config.setdefault("seed", seed)
    config.setdefault("optimizer", optimizer.name)

    journal = Journal.open(run_dir, config) if run_dir is not None else None
    values: list[np.ndarray] = []
    times: list[np.ndarray] = []
    qidx: list[np.ndarray] = []
    opt_seconds = 0.0
    t_offset = 0.0
    best_value, best_code = -np.inf, None
    start = time.perf_counter()
    q_start = objective.n_queries  # the budget counts this run's queries only (objectives may be reused)

    def used() -> int:
        return objective.n_queries - q_start

    def record(I: np.ndarray, y: np.ndarray, t: float, replayed: bool, batch: int) -> None:
        nonlocal best_value, best_code
        values.append(y)
        times.append(np.full(len(y), t))
        qidx.append(used() - len(y) + 1 + np.arange(len(y)))
        improved = False
        if len(y):
            j = int(np.argmax(y))
            if y[j] > best_value:
                best_value, best_code, improved = float(y[j]), I[j].copy(), True
        ev = BatchEvent(batch, I, y, used(), budget, best_value, best_code, improved, t,
                        replayed, objective)
        for cb in callbacks:
            cb(ev)

    try:
        # -- resume: checkpoint + replay -------------------------------------
        if journal is not None and journal.rows:
            ckpt = journal.load_checkpoint() if optimizer.state_dict() is not None else None
            first = 0
            if ckpt is not None and ckpt[0] < len(journal.rows):
                optimizer.load_state_dict(ckpt[1])
                first = ckpt[0] + 1
            for row in journal.rows:
                objective.n_queries += row.external
                if row.batch >= first:
                    t0 = time.perf_counter()
                    q0 = objective.n_queries
                    I = optimizer.ask()[: len(row.y)]
                    objective.n_queries = q0  # external queries of this ask are in the journal already
                    if not np.array_equal(I, row.I):
                        raise MangoError(
                            f"resume: the optimizer asked other codes than journal batch {row.batch} of "
                            f"{journal.folder}; was the seed or an optimizer parameter changed?")
                    optimizer.tell(row.I, row.y)
                    opt_seconds += time.perf_counter() - t0
                _refill(objective, row.I, row.y)
                record(row.I, row.y, row.t, True, row.batch)
            t_offset = journal.rows[-1].t
            log.info("resumed %s: %d batches, %d queries from the journal", journal.folder,
                     len(journal.rows), used())
            start = time.perf_counter()

        # -- main loop -------------------------------------------------------
        while used() < budget:
            t0 = time.perf_counter()
            ext0 = objective.n_queries
            I = optimizer.ask()
            opt_seconds += time.perf_counter() - t0
            external = objective.n_queries - ext0
            remaining = budget - used()
            if remaining <= 0:
                break
            I = I[:remaining]
            y = objective(I)
            t = t_offset + time.perf_counter() - start
            if journal is not None:
                journal.append(I, y, t, external)
            t0 = time.perf_counter()
            optimizer.tell(I, y)
            opt_seconds += time.perf_counter() - t0
            batch = len(values)
            if journal is not None and (batch + 1) % checkpoint_every == 0:
                state = optimizer.state_dict()
                if state is not None:
                    journal.save_checkpoint(batch, state)
            record(I, y, t, False, batch)
    finally:
        optimizer.close()
        if journal is not None:
            journal.close()

    if best_code is None:
        raise MangoError("no query was evaluated")
    vals = np.concatenate(values)
    best_image = None
    images = getattr(objective, "images", None)
    if callable(images):
        best_image = images(best_code[None])[0].detach().cpu()
    return Result(best_code=best_code, best_value=best_value, values=vals, times=np.concatenate(times),
                  query_index=np.concatenate(qidx), n_queries=used(),
                  seconds=t_offset + time.perf_counter() - start, optimizer_seconds=opt_seconds,
                  eval_seconds=objective.eval_seconds, best_image=best_image, config=config,
                  batches=len(values))


def _refill(objective: BaseObjective, I: np.ndarray, y: np.ndarray) -> None:
    """Put journaled values back into the objective's counters and cache."""
    objective.n_queries += len(y)
    if objective.cache_enabled:
        for row, v in zip(I, y):
            objective._cache[row.tobytes()] = float(v)

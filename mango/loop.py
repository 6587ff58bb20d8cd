"""The one optimisation loop: ask -> evaluate -> journal -> tell, until the budget is spent.

Every run goes through :func:`run_loop`, the loop kernel. It alone owns the
budget: each step it asks the optimizer for at most the budget left
(``optimizer.ask(limit)``), counts the queries the optimizer spent itself
(``optimizer.take_spent()``, gradient AM's forward passes) and what the
evaluation cost, journals the batch (fsynced) *before* the optimizer is told,
checkpoints, and calls the callbacks.

What differs between runs is the *evaluation policy* (:class:`Policy`) plugged
into the kernel: how many codes to ask for, how they are evaluated, what the
optimizer is told, what a step costs, when a final step without asking is due,
and what the run recommends. :class:`EvaluateOnce` (every asked code evaluated
once through the objective) is the policy of :func:`maximize`; the noise-aware
rig policy (repeats, re-tests, reference images, a confirmation block) is
:class:`mango.rig.closedloop.RigPolicy`.

Resume: with ``run_dir``, a run restarted with the same arguments continues from
the journal. The last checkpointed optimizer state is loaded (for policies that
allow it) and every later journal row is replayed: the optimizer is asked again
with the same limit, must return the same codes and spend the same queries, and
is told the recorded values; nothing journaled is evaluated again (the policy's
``replay`` puts the values back, e.g. :meth:`~mango.objective.BaseObjective.restore`).

Run folder safety: the kernel holds the folder's OS lock (:class:`mango.journal.RunLock`)
from before the journal is read until the final files are written, so a second
process on the same folder is refused at once; ``run.json`` (the config) and
``identity.json`` (:func:`run_identity`: optimizer and objective, derived even when the
caller gives no config) must match for a resume; and a folder whose ``result.json``
marks it finished is left untouched: the run is replayed from its journal (nothing
evaluated) and its stored result returned, with the stored timings.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ConfigError, MangoError, check_int, check_seed
from .journal import Journal, JournalRow, RunLock
from .live import FAILED, INTERRUPTED, LiveArtifacts
from .objective import BaseObjective
from .optimizers import make_optimizer
from .optimizers.base import Optimizer
from .results import Result, finished_result
from .imaging import display_uint8

__all__ = ["maximize", "run_loop", "Result", "BatchEvent", "Policy", "Step", "LoopState", "EvaluateOnce",
           "check_budget", "build_optimizer", "run_identity", "objective_identity"]

log = logging.getLogger(__name__)


@dataclass
class BatchEvent:
    """What a callback of :func:`maximize` sees after each batch."""

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


Callback = Callable[[Any], None]


@dataclass
class Step:
    """One evaluated step, as a policy reports it to the kernel.

    Attributes:
        y: ``float64 [k]`` the values the optimizer is told for the asked codes ``I [k, d]``
            (``k = 0`` for a step without asking, e.g. a confirmation block).
        cost: budget units the evaluation used (queries; presentations for a rig).
        extra: optional JSON-able dict stored with the journal row.
        replayed: the evaluation came from a log rather than a new evaluation.
    """

    y: np.ndarray
    cost: int
    extra: dict[str, Any] | None = None
    replayed: bool = False


@dataclass
class LoopState:
    """The kernel's bookkeeping, readable by policies and events.

    Attributes:
        budget: total budget units; used: units spent so far (the one budget counter).
        external: of ``used``, queries the optimizer spent itself (``take_spent``).
        steps: steps done; batches: optimizer batches (asks) done.
        values, times, query_index: per asked code, its told value, the run time when its step
            finished, and the budget counter after it.
        optimizer_seconds: time inside ask/tell; elapsed: run seconds (replayed time included).
    """

    budget: int
    used: int = 0
    external: int = 0
    steps: int = 0
    batches: int = 0
    values: list[np.ndarray] = field(default_factory=list)
    times: list[np.ndarray] = field(default_factory=list)
    query_index: list[np.ndarray] = field(default_factory=list)
    optimizer_seconds: float = 0.0
    elapsed: float = 0.0

    def history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values float64 [N], times float64 [N], query_index int64 [N])`` over every asked code."""
        if not self.values:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
        return (np.concatenate(self.values), np.concatenate(self.times),
                np.concatenate(self.query_index).astype(np.int64))


class Policy(Protocol):
    """How the loop kernel evaluates what the optimizer asks (see the module doc).

    Per step the kernel calls ``plan(left)``; for ``n >= 1`` it asks the optimizer
    with ``limit = n`` and hands the codes to ``evaluate`` (or ``replay`` when the
    journal already holds the step); it journals, tells, and calls
    ``finish_step``, whose return value goes to the callbacks.
    """

    #: whether the kernel may checkpoint the optimizer and, on resume, skip asking for the
    #: checkpointed steps (``replay`` is still called for each of them)
    checkpoints: bool

    def open(self, run_dir: Path | None, optimizer: Optimizer) -> None:
        """Called once before the first step (open the policy's own logs)."""

    def plan(self, left: int) -> int | None:
        """With ``left`` budget units: the most codes to ask for (``>= 1``, the ask's limit),
        ``0`` for a step without asking (a confirmation block), or ``None`` to stop."""

    def evaluate(self, step: int, I: np.ndarray) -> Step:
        """Evaluate the asked codes ``I int64 [k, d]`` (``k = 0``: a step without asking)."""

    def replay(self, step: int, I: np.ndarray, row: JournalRow) -> Step:
        """Rebuild the policy's state for a journaled step without evaluating (resume)."""

    def finish_step(self, state: LoopState, I: np.ndarray, step: Step) -> Any:
        """After the optimizer was told: record the step; return the event for the callbacks."""

    def result(self, state: LoopState, optimizer: Optimizer, config: dict[str, Any]) -> Any:
        """The run's result (its ``save(folder)`` writes the run folder files)."""

    def close(self) -> None:
        """Release the policy's logs (always called)."""


def check_budget(budget: Any, unit: str = "queries") -> int:
    """``budget`` as a positive int, or :class:`ConfigError` naming the bad value."""
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
        raise ConfigError(f"budget must be a positive integer number of {unit}, got {budget!r}")
    return int(budget)


def check_run_args(optimizer: Any, params: Any, callbacks: Any) -> list[Callback]:
    """Check what a caller gives :func:`maximize` besides the objective: ``optimizer`` a registered name or an
    :class:`Optimizer`, ``params`` a dict (or None), ``callbacks`` an iterable of callables (None: none).

    Returns:
        the callbacks as a list.

    Raises:
        ConfigError: naming the bad value and what is accepted.
    """
    from collections.abc import Mapping

    from .registry import names

    if not isinstance(optimizer, (str, Optimizer)):
        raise ConfigError(f"optimizer must be a registered name ({', '.join(names('optimizer'))}) or an "
                          f"Optimizer instance, got {optimizer!r} ({type(optimizer).__name__})")
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"optimizer params must be a dict {{parameter name: value}}, "
                          f"got {params!r} ({type(params).__name__})")
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, bytes)) or callable(callbacks) or not hasattr(callbacks, "__iter__"):
        raise ConfigError(f"callbacks must be a list of callables (each called with every batch's event), got "
                          f"{callbacks!r}")
    out = list(callbacks)
    for cb in out:
        if not callable(cb):
            raise ConfigError(f"callbacks must be callables (each called with every batch's event); {cb!r} "
                              f"({type(cb).__name__}) is not")
    return out


def build_optimizer(optimizer: Optimizer | str, space: Any, *, seed: int, batch_size: int | None,
                    budget: int, params: dict[str, Any] | None) -> Optimizer:
    """An optimizer instance as given, or the registered one named ``optimizer`` built for ``space``."""
    if isinstance(optimizer, str):
        return make_optimizer(optimizer, space, batch_size=batch_size, seed=seed, budget=budget, params=params)
    if optimizer.space.d != space.d or optimizer.space.n != space.n:
        raise ConfigError(f"optimizer space (d={optimizer.space.d}, n={optimizer.space.n}) differs from the "
                          f"objective's (d={space.d}, n={space.n})")
    return optimizer


def run_loop(optimizer: Optimizer, budget: int, policy: Policy, *, run_dir: str | Path | None = None,
             config: dict[str, Any] | None = None, callbacks: Sequence[Callback] = (),
             checkpoint_every: int = 10, stop: Callable[[], bool] | None = None,
             on_stop: Callable[[str], None] | None = None,
             on_open: Callable[[int, bool], None] | None = None) -> Any:
    """The loop kernel: ask -> evaluate -> journal -> tell under ``policy`` until it stops.

    Args:
        optimizer: an ask/tell optimizer (closed here at the end).
        budget: total budget units (``> 0``), counted here only.
        policy: the evaluation policy (:class:`EvaluateOnce`, the rig policy, ...).
        run_dir: folder for the journal, checkpoints and results; an existing journal is resumed,
            a finished run is returned as stored (nothing rewritten).
        config: stored in ``run.json``; a resume with a different config is refused (so is one whose
            :func:`run_identity` differs from ``identity.json``).
        callbacks: called with the policy's event after every step.
        checkpoint_every: batches between optimizer checkpoints (policies with ``checkpoints``).
        stop: asked before every new batch; when it returns True the loop ends there, between two
            batches (a graceful Ctrl-C): the result is marked ``interrupted``, its final files are
            not written (the journal resumes the run), and a stop before any query raises
            ``KeyboardInterrupt``.
        on_stop: called with ``"interrupted"`` (a ``stop``, Ctrl-C, SIGTERM) or ``"failed"`` (an error)
            when the run ends without its final files, while ``run_dir``'s lock is still held (e.g.
            :meth:`mango.live.LiveArtifacts.stop`).
        on_open: called once the run may go ahead (``run_dir``'s lock held, its config and identity
            accepted), before anything is replayed or evaluated, with the queries its journal holds and
            whether it holds a finished run: the place to say "resuming" or start a live view, so that
            a call that is refused says nothing else.

    Returns:
        ``policy.result(...)``, also saved into ``run_dir`` (``result.save(run_dir)``) when given,
        the folder was not finished before and the run was not stopped.

    Raises:
        ConfigError: another process holds ``run_dir``; or it holds another run (config or identity).
        MangoError: the journal is damaged other than by a torn last line, or the optimizer does not
            reproduce it.
    """
    budget = check_budget(budget)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=1)  # before anything is journaled
    folder = None if run_dir is None else Path(run_dir)
    lock = journal = stored = None
    if folder is not None:
        lock = RunLock.acquire(folder)  # one writer per folder, held until the final files are written
    try:
        if folder is not None:
            journal = Journal.open(folder, config, run_identity(optimizer, policy),
                                   free_keys=getattr(policy, "free_keys", ()))
            stored = finished_result(folder, config)  # a finished run: replayed, returned as stored, not rewritten
        st = LoopState(budget=budget)
        empty = np.zeros((0, optimizer.space.d), dtype=np.int64)
        interrupted = False
        try:
            if on_open is not None:     # inside: whatever it raises, the optimizer, journal and policy are closed
                on_open(sum(len(r.y) + r.external for r in journal.rows) if journal is not None else 0,
                        stored is not None)
            policy.open(folder, optimizer)
            rows = journal.rows if journal is not None else []
            n_rows, first = len(rows), 0
            if rows and policy.checkpoints and optimizer.state_dict() is not None:
                ckpt = journal.load_checkpoint()
                if ckpt is not None and ckpt[0] < n_rows:
                    optimizer.load_state_dict(ckpt[1])
                    first = ckpt[0] + 1
            t_offset, start = 0.0, time.perf_counter()
            while True:
                jb = st.batches  # the journal row this step's batch is (or becomes)
                if jb < first:  # inside the checkpoint: the optimizer's state holds this batch already
                    row = rows[jb]
                    I, external = row.I, row.external
                    step = policy.replay(st.steps, I, row)
                else:
                    if stop is not None and st.used < budget and stop():   # a stop during the last batch
                        interrupted = True                                    # leaves a whole run
                        break
                    n = policy.plan(budget - st.used)
                    if n is None:
                        break
                    I, external, row = empty, 0, None
                    if n > 0:
                        t0 = time.perf_counter()
                        I = optimizer.ask(n)
                        external = optimizer.take_spent()
                        st.optimizer_seconds += time.perf_counter() - t0
                        row = rows[jb] if jb < n_rows else None
                    if row is not None:
                        if not np.array_equal(I, row.I) or external != row.external:
                            raise MangoError(
                                f"resume: the optimizer asked other codes (or spent other queries) than journal "
                                f"batch {row.batch} of {journal.folder}; was the seed or an optimizer parameter "
                                "changed?")
                        step = policy.replay(st.steps, I, row)
                    else:
                        step = policy.evaluate(st.steps, I)
                if len(I) and step.y.shape != (len(I),):
                    raise MangoError(f"policy returned {step.y.shape} values for {len(I)} asked codes")
                if row is not None:
                    t = t_offset = row.t
                else:
                    t = t_offset + time.perf_counter() - start
                    if journal is not None and len(I):
                        journal.append(I, step.y, t, external, step.extra)
                if len(I) and jb >= first:
                    t0 = time.perf_counter()
                    optimizer.tell(I, row.y if row is not None else step.y)
                    st.optimizer_seconds += time.perf_counter() - t0
                    if (row is None and journal is not None and policy.checkpoints
                            and (jb + 1) % checkpoint_every == 0):
                        state = optimizer.state_dict()
                        if state is not None:
                            journal.save_checkpoint(jb, state)
                st.used += external + step.cost
                st.external += external
                if len(I):
                    st.values.append(np.asarray(step.y, dtype=np.float64))
                    st.times.append(np.full(len(I), t))
                    st.query_index.append(st.used - len(I) + 1 + np.arange(len(I)))
                    st.batches += 1
                st.elapsed = t
                if row is not None:
                    start = time.perf_counter()  # replaying takes no run time
                ev = policy.finish_step(st, I, step)
                st.steps += 1
                for cb in callbacks:
                    cb(ev)
            if n_rows:
                log.info("resumed %s: %d journal rows replayed", folder, n_rows)
            st.elapsed = t_offset + time.perf_counter() - start
        finally:
            optimizer.close()
            if journal is not None:
                journal.close()
            policy.close()
        if interrupted and not st.values:
            raise KeyboardInterrupt
        result = policy.result(st, optimizer, dict(config or {}))
        if interrupted:
            result.interrupted = True   # a partial result; the journal resumes the run
            if on_stop is not None:
                on_stop(INTERRUPTED)
        elif folder is not None:
            _finish_folder(folder, result, stored)
        return result
    except BaseException as exc:   # Ctrl-C, SIGTERM (as an interrupt), an error: said while the lock is held
        if on_stop is not None and not isinstance(exc, ConfigError):
            on_stop(INTERRUPTED if isinstance(exc, (KeyboardInterrupt, SystemExit)) else FAILED)
        raise
    finally:
        if lock is not None:
            lock.release()


def _finish_folder(folder: Path, result: Any, stored: dict[str, Any] | None) -> None:
    """Write the run's final files, or, for a run that was finished before (``stored``: its ``result.json``),
    leave the folder untouched and give ``result`` the stored timings."""
    if stored is None:
        result.save(folder)
        return
    log.info("%s is a finished run: returning its stored result (nothing rewritten)", folder)
    for key in ("seconds", "optimizer_seconds", "eval_seconds"):
        if hasattr(result, key) and isinstance(stored.get(key), (int, float)):
            setattr(result, key, float(stored[key]))
    restore = getattr(result, "restore_missing", None)
    written = restore(folder) if callable(restore) else []
    if written:     # deleted by hand: the replayed journal gives them back (result.json stays as it was)
        log.warning("%s: %s %s missing; written again from the journal", folder, " and ".join(written),
                    "was" if len(written) == 1 else "were")


def run_identity(optimizer: Optimizer, policy: Any) -> dict[str, Any]:
    """What identifies a run beyond its config (kept in ``identity.json``; a resume of another run is refused).

    ``{"optimizer": {"name", "class", "k", "seed", <scalar hyperparameters>}, **policy.identity()}``:
    the optimizer's registered name, class, batch size, seed and its scalar settings as built
    (e.g. protes ``k_top``, ``lr``; and what its ``identity_params()`` returns, if it has one), and what the policy evaluates (the objective's generator, target,
    unit and selection for :class:`EvaluateOnce`; the generator for the rig policy). Built before the
    first ask, so it is the same on every resume of the same run.
    """
    runtime = {"best_x", "best_y", "n_told", "ask_limit", "name"}
    opt: dict[str, Any] = {"name": getattr(optimizer, "name", None),
                           "class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"}
    for key, value in sorted(vars(optimizer).items()):
        if key.startswith("_") or key in runtime:
            continue
        if isinstance(value, (bool, int, str)) or (isinstance(value, float) and np.isfinite(value)):
            opt[key] = value
        elif isinstance(value, np.generic) and np.ndim(value) == 0:
            opt[key] = value.item()
    extra = getattr(optimizer, "identity_params", None)    # settings an optimizer keeps elsewhere (a dict)
    if callable(extra):
        opt.update(extra())
    ident = getattr(policy, "identity", None)
    return {"optimizer": opt, **(ident() if callable(ident) else {})}


def objective_identity(objective: Any) -> dict[str, Any]:
    """What a run's objective is, for :func:`run_identity`: ``objective.info()`` without what may change
    between a run and its resume (device, evaluation micro-batch, cache), plus the channel selection and,
    for a function objective, the function's qualified name."""
    try:
        info = dict(objective.info())
    except Exception as exc:  # a custom objective without a usable info(): identify it by its class
        log.debug("objective.info() failed (%s); identifying the objective by its class", exc)
        info = {}
    for key in ("device", "batch_size", "cache"):
        info.pop(key, None)
    info["class"] = f"{type(objective).__module__}.{type(objective).__qualname__}"
    select = getattr(objective, "select", None)
    if select is not None:
        info["select"] = getattr(select, "spec", None) or getattr(select, "__name__", None) or repr(select)
    fn = getattr(objective, "fn", None)
    if callable(fn):
        info["fn"] = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    return json.loads(json.dumps(info, default=str))




class EvaluateOnce:
    """The default policy: every asked code is evaluated once through ``objective``.

    The recommendation is ``optimizer.recommend()`` (the best evaluated code).
    """

    checkpoints = True

    def __init__(self, objective: BaseObjective) -> None:
        self.objective = objective
        self.optimizer: Optimizer | None = None
        self._best = -np.inf

    def open(self, run_dir: Path | None, optimizer: Optimizer) -> None:
        self.optimizer = optimizer

    def identity(self) -> dict[str, Any]:
        """``{"objective": ...}`` for :func:`run_identity` (see :func:`objective_identity`)."""
        return {"objective": objective_identity(self.objective)}

    def plan(self, left: int) -> int | None:
        return left if left > 0 else None

    def evaluate(self, step: int, I: np.ndarray) -> Step:
        return Step(self.objective(I), len(I))

    def replay(self, step: int, I: np.ndarray, row: JournalRow) -> Step:
        self.objective.restore(row.I, row.y)
        return Step(row.y, len(row.y), replayed=True)

    def finish_step(self, state: LoopState, I: np.ndarray, step: Step) -> BatchEvent:
        code, value = self.optimizer.recommend()
        improved = value > self._best
        self._best = max(self._best, value)
        return BatchEvent(state.batches - 1, I, step.y, state.used, state.budget, value, code, improved,
                          state.elapsed, step.replayed, self.objective)

    def result(self, state: LoopState, optimizer: Optimizer, config: dict[str, Any]) -> Result:
        code, value = optimizer.recommend()
        if code is None:
            raise MangoError("no query was evaluated")
        code = np.asarray(code, dtype=np.int64)
        values, times, qidx = state.history()
        obj = self.objective
        best_image = best_uint8 = x = None
        images = getattr(obj, "images", None)
        if callable(images):
            x = images(code[None])
            best_image = x[0].detach().cpu()
            best_uint8 = display_uint8(x, getattr(obj, "generator", None))[0]
        approach = getattr(obj, "approach", None)
        near = approach(code[None], images=x) if callable(approach) else None   # the image decoded once
        return Result(best_code=code, best_value=float(value), values=values, times=times, query_index=qidx,
                      n_queries=state.used, seconds=state.elapsed, optimizer_seconds=state.optimizer_seconds,
                      eval_seconds=obj.eval_seconds, best_image=best_image, config=config, batches=state.batches,
                      batch_size=optimizer.k, n_external=state.external, reported_name=obj.reported_name,
                      reported=obj.reported(values), best_reported=float(obj.reported(np.array([value]))[0]),
                      best_uint8=best_uint8, objective_info=obj.info(), known_max=getattr(obj, "known_max", None),
                      approach=near[0] if near else None)

    def close(self) -> None:
        pass


def maximize(objective: BaseObjective, optimizer: Optimizer | str, budget: int, seed: int = 0, *,
             batch_size: int | None = None, params: dict[str, Any] | None = None,
             run_dir: str | Path | None = None, config: dict[str, Any] | None = None,
             callbacks: Sequence[Callback] = (), checkpoint_every: int = 10,
             stop: Callable[[], bool] | None = None,
             on_open: Callable[[int, bool], None] | None = None) -> Result:
    """Maximize ``objective`` over its space with ``optimizer`` for ``budget`` queries.

    Args:
        objective: an :class:`~mango.objective.Objective` or ``FunctionObjective``.
        optimizer: an optimizer instance, or a registered name (built with
            ``seed``, ``batch_size``, ``budget`` and ``params``).
        budget: total queries (> 0), the optimizer's own (gradient forward passes) included;
            the last batch is cut to fit.
        seed: the run's seed (used when ``optimizer`` is a name).
        run_dir: the run folder: journal and checkpoints while running (an existing journal
            there is resumed), then ``result.json``, ``history.npz`` and ``best.png``, as the
            command line writes them.
        config: stored in ``run.json``; a resume with a different config is refused.
        callbacks: called with a :class:`BatchEvent` after every batch.
        checkpoint_every: batches between optimizer checkpoints (for optimizers
            with a ``state_dict``; others resume by replaying the whole journal).
        stop: asked before every new batch; True ends the run there with a partial result marked
            ``interrupted`` (see :func:`run_loop`).
        on_open: see :func:`run_loop` (called once the run folder is accepted, before anything runs).
    """
    budget = check_budget(budget)
    seed = check_seed(seed)
    callbacks = check_run_args(optimizer, params, callbacks)
    optimizer = build_optimizer(optimizer, objective.space, seed=seed, batch_size=batch_size, budget=budget,
                                params=params)
    if optimizer.needs_objective:
        optimizer.bind(objective)
    config = dict(config or {})
    config.setdefault("budget", budget)
    config.setdefault("seed", seed)
    config.setdefault("optimizer", optimizer.name)
    # -- live artifacts (mango.live): best.png / history.npz / a "running" result.json at improvements;
    # the kernel's final Result.save still writes the finished files last.
    live = None
    if run_dir is not None:
        live = LiveArtifacts(run_dir, config)
        callbacks = [*callbacks, live]
    # -- end live artifacts (a run ending without its final files: live.stop shows how far it got)
    return run_loop(optimizer, budget, EvaluateOnce(objective), run_dir=run_dir, config=config,
                    callbacks=callbacks, checkpoint_every=checkpoint_every, stop=stop,
                    on_stop=None if live is None else live.stop, on_open=on_open)

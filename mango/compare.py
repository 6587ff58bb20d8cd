"""``mango compare``: a grid of objectives x optimizers x seeds, run as independent, resumable runs.

A compare config (TOML) expands into single-run configs (see :mod:`mango.config`);
each run is exactly one :func:`mango.config.run_config` call into its own run
folder, so every run is journaled and resumable on its own::

    name = "my-comparison"
    budget = 1000
    seeds = [0, 1, 2]           # or: seeds = 3  (-> 0, 1, 2)
    batch_size = 50             # optional: queries per ask for optimizers without their own (see below)
    eval_batch_size = 64        # optional; also device, select, checkpoint_every
    workers = 2                 # local processes (default 2); 1 runs in this process
    budgets = [100, 300, 1000]  # optional: budgets at which the report gives the best value

    [ray]                       # optional: run on a Ray cluster instead of local processes
    address = "auto"            # ray.init(address=...); "local" starts a local Ray with `workers` CPUs

    [[generators]]              # generators x targets ...
    name = "vqvae-digits"
    [[targets]]
    name = "snn-digits"
    layer = "spiking_out"
    units = [0, 3, 7]           # expands to one target per unit (param `unit`)
    label = "out"               # optional: label prefix of these units
    [[problems]]                # ... and/or index-space problems (each is one "unit")
    name = "separable"
    d = 8
    n = 16

    [[optimizers]]
    name = "protes"
    label = "protes-k5"         # optional: to compare settings of one optimizer
    k_top = 5

Batch size (queries per ask) of each run, first that applies: the optimizer entry's own
``batch_size``; else the top-level ``batch_size``; else the optimizer's default (e.g. 10
for ``random``, 100 for ``protes``). A top-level value therefore replaces the defaults
of every optimizer entry that does not set one: to compare optimizers at their own
defaults, leave it out, or set it per entry. Each run's ``result.json`` records the
effective ``batch_size``, and the report shows it per row.

Run folders: ``OUT/runs/<unit>/<optimizer>/seed<k>/``; ``OUT/compare.json`` lists
the expanded grid (what :mod:`mango.report` reads). A run whose ``result.json``
exists and holds the same config is finished and never repeated; an interrupted
one resumes from its journal. Runs are deterministic given config and seed, so
the local and the Ray path give identical results.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import registry, report
from .clitools import GridProgress, check_out_dir, slug
from .config import RunConfig, build_objective, load_toml, positive_int, run_config
from .errors import ConfigError, MangoError, choices_hint
from .journal import config_conflict, default_change_hint, same_run_config
from .watch import add_watch_option, check_watch_option, serve_option
from .results import finished_result

__all__ = ["RunSpec", "COMPARE_KEYS", "expand", "load_compare_config", "run_compare", "is_finished",
           "add_arguments"]

log = logging.getLogger(__name__)

COMPARE_KEYS = ("name", "budget", "seeds", "batch_size", "eval_batch_size", "device", "select",
                "checkpoint_every", "workers", "budgets", "ray", "generators", "targets", "problems",
                "optimizers", "out")
_PASS_THROUGH = ("budget", "batch_size", "eval_batch_size", "device", "select", "checkpoint_every")


@dataclass
class RunSpec:
    """One run of the grid: its id, labels and its validated single-run config."""

    id: str
    unit: str
    optimizer: str
    seed: int
    run: RunConfig
    folder: str  # relative to the compare output folder
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        """The run's plain config (what its ``run.json`` / ``result.json`` hold)."""
        return self.run.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry in ``compare.json``."""
        return {"id": self.id, "unit": self.unit, "optimizer": self.optimizer, "seed": self.seed,
                "config": self.config, "folder": self.folder, "meta": self.meta}


def _as_list(value: Any, key: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"compare config {key!r} must be a list of tables ([[{key}]]), got {value!r}")
    out = []
    for v in value:
        if isinstance(v, str):
            v = {"name": v}
        if not isinstance(v, dict) or "name" not in v:
            raise ConfigError(f"every [[{key}]] entry needs a 'name', got {v!r}")
        out.append(dict(v))
    return out


def _seeds(value: Any) -> list[int]:
    if value is None:
        return [0]
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"seeds must be a positive count or a list of integers, got {value!r}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"seeds has duplicates: {value!r}")
        return list(value)
    raise ConfigError(f"seeds must be a positive count or a non-empty list of integers, got {value!r}")


def _param_label(params: dict[str, Any], skip: Sequence[str] = ()) -> str:
    parts = [f"{k}={v}" for k, v in params.items() if k not in skip and k not in ("name", "label")
             and not isinstance(v, (dict, list))]
    return ",".join(parts)


def _units(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Expand one [[targets]] entry with ``units = [...]`` into (label, target table) pairs."""
    spec = dict(spec)
    label = spec.pop("label", None)
    units = spec.pop("units", None)
    base_label = label or "-".join(str(x) for x in (spec["name"], spec.get("layer")) if x is not None)
    if units is None:
        unit = spec.get("unit")
        lab = label or (base_label + (f"[{unit}]" if unit is not None else ""))
        return [(lab, spec)]
    if not isinstance(units, list) or not units:
        raise ConfigError(f"target {spec['name']!r}: units must be a non-empty list, got {units!r}")
    if "unit" in spec:
        raise ConfigError(f"target {spec['name']!r}: give either 'unit' or 'units', not both")
    return [(f"{base_label}[{u}]", {**spec, "unit": u}) for u in units]


def _objectives(gens: list[dict[str, Any]], targets: list[dict[str, Any]], problems: list[dict[str, Any]]
                ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The unit axis: ``(label, run-config part, meta)`` for generators x target units, then problems."""
    out: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for g in gens:
        g = dict(g)
        glabel = g.pop("label", None) or g["name"]
        for t in targets:
            for tlabel, ttable in _units(t):
                label = tlabel if len(gens) == 1 else f"{glabel}:{tlabel}"
                meta = {"generator": g["name"], "target": ttable["name"], "layer": ttable.get("layer"),
                        "unit": ttable.get("unit")}
                out.append((label, {"generator": g, "target": ttable}, meta))
    for p in problems:
        p = dict(p)
        label = p.pop("label", None) or f"{p['name']}({_param_label(p)})"
        out.append((label, {"problem": p}, {"problem": p["name"]}))
    return out


def _optimizer_entries(opts: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The optimizer axis: ``(label, [optimizer] table, run-config overrides)``; an entry's own
    ``batch_size`` is an override of the top-level one (see the module docstring)."""
    out = []
    for o in opts:
        o = dict(o)
        bs = o.pop("batch_size", None)
        label = o.pop("label", None) or o["name"]
        out.append((label, o, {} if bs is None else {"batch_size": bs}))
    return out


def _check_labels(kind: str, labels: list[str]) -> None:
    """Labels of one axis must be distinct, also as folder names."""
    for what, names in (("duplicate {} labels {}; give the entries distinct 'label's", labels),
                        ("{} labels map to the same folder name {}; give distinct 'label's", [slug(x) for x in labels])):
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            raise ConfigError(what.format(kind, dup))


def expand(cfg: dict[str, Any]) -> list[RunSpec]:
    """Expand a compare config into its runs, validating every run config (once: the runs carry
    typed :class:`~mango.config.RunConfig` values from here on).

    Raises:
        ConfigError: an unknown key, an empty axis, duplicate labels, or a run
            config that :meth:`RunConfig.from_dict` refuses (the message names the run).
    """
    for key in cfg:
        if key not in COMPARE_KEYS:
            raise ConfigError(f"unknown compare config key {key!r}; {choices_hint(key, COMPARE_KEYS)}")
    if "budget" not in cfg:
        raise ConfigError("compare config needs a budget (queries per run)")
    gens, targets, problems, opts = (_as_list(cfg.get(k), k) for k in ("generators", "targets", "problems",
                                                                        "optimizers"))
    if not opts:
        raise ConfigError("compare config needs at least one [[optimizers]] entry")
    if bool(gens) != bool(targets):
        raise ConfigError("compare config needs both [[generators]] and [[targets]] (or only [[problems]])")
    if not (gens or problems):
        raise ConfigError("compare config needs [[generators]] + [[targets]] or [[problems]]")
    seeds = _seeds(cfg.get("seeds"))
    base = {k: cfg[k] for k in _PASS_THROUGH if k in cfg}
    objectives = _objectives(gens, targets, problems)
    opt_entries = _optimizer_entries(opts)
    _check_labels("unit", [x[0] for x in objectives])
    _check_labels("optimizer", [x[0] for x in opt_entries])

    runs: list[RunSpec] = []
    for ulabel, part, meta in objectives:
        for olabel, otable, overrides in opt_entries:
            for seed in seeds:
                try:
                    run = RunConfig.from_dict({**base, **part, "optimizer": otable, "seed": seed, **overrides})
                except ConfigError as exc:
                    raise ConfigError(f"run {ulabel} / {olabel} / seed {seed}: {exc}") from None
                runs.append(RunSpec(id=f"{ulabel}|{olabel}|{seed}", unit=ulabel, optimizer=olabel, seed=seed,
                                    run=run, folder=f"runs/{slug(ulabel)}/{slug(olabel)}/seed{seed}", meta=meta))
    return runs


def load_compare_config(path: str | Path) -> dict[str, Any]:
    """Read a compare config TOML file."""
    return load_toml(path)


def is_finished(cfg: RunConfig | dict[str, Any], folder: str | Path) -> bool:
    """True when ``folder/result.json`` exists and was written for this exact (validated) config."""
    if isinstance(cfg, RunConfig):
        cfg = cfg.to_dict()
    path = Path(folder) / "result.json"
    if not path.exists():
        return False
    try:
        saved = (finished_result(folder) or {}).get("config")  # only a result.json marked finished counts
    except (OSError, json.JSONDecodeError):
        return False
    return same_run_config(saved, json.loads(json.dumps(cfg, default=str)))   # a spelled-out default is the same run


# -- workers ------------------------------------------------------------------------------
#: in a worker process: the grid's stop event (set by the parent when the grid is interrupted)
_STOP: Any = None
#: in a worker process: SIGTERM reached it (set by its handler; see :func:`_on_sigterm`)
_TERMINATED = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """A grid worker's SIGTERM handler: only sets a flag of this process.

    It used to call the shared event's ``set()``. A handler runs in the main thread between two bytecodes,
    and there it could interrupt ``stop.is_set()`` while that held the event's (non-reentrant) lock:
    ``set()`` then waited for that lock forever, and so did the parent's own ``set()``. A whole grid hung
    after a SIGTERM to its process group.
    """
    global _TERMINATED
    _TERMINATED = True


def _stopped() -> bool:
    """In a worker: the grid is being stopped (this process got SIGTERM, or the parent set the event)."""
    return _TERMINATED or (_STOP is not None and _STOP.is_set())


def _init_worker(stop: Any = None) -> None:
    """A grid worker: one torch thread; its runs stop through the grid's ``stop`` event, between batches
    (the parent sets it on Ctrl-C or SIGTERM; SIGTERM to the worker itself, e.g. a scheduler stopping the
    whole process group, stops its runs through a flag of its own, :func:`_on_sigterm`). SIGINT is
    ignored here: a terminal's Ctrl-C reaches every process of the group, and a worker interrupted
    mid-write would leave its folder without the interrupted mark."""
    global _STOP
    import signal

    import torch  # third-party, in the worker process only

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    _STOP = stop
    if stop is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _on_sigterm)


def _run_one(cfg: RunConfig, folder: str) -> dict[str, Any]:
    """Run one validated config into ``folder`` (in a worker); returns its summary."""
    import torch  # third-party, in the worker

    if _STOP is not None and _stopped():   # queued before the grid was interrupted: not started
        raise KeyboardInterrupt
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res = run_config(cfg, folder, stop=None if _STOP is None else _stopped)
    return {"best_value": res.best_value, "reported_name": res.reported_name, "best_reported": res.best_reported,
            "n_queries": res.n_queries, "seconds": res.seconds,
            "optimizer_seconds": res.optimizer_seconds, "wall": time.perf_counter() - t0}


def _run_local(todo: list[tuple[RunSpec, Path]], workers: int, done: Callable[[RunSpec, Any], None]) -> None:
    if workers <= 1:
        import torch  # third-party

        threads = torch.get_num_threads()
        try:
            for spec, folder in todo:
                try:
                    done(spec, _run_one(spec.run, str(folder)))
                except Exception as exc:  # noqa: BLE001 - recorded, the grid goes on
                    done(spec, exc)
        finally:
            torch.set_num_threads(threads)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(stop,))
    try:
        futs = {pool.submit(_run_one, spec.run, str(folder)): spec for spec, folder in todo}
        for fut in as_completed(futs):
            spec = futs[fut]
            try:
                done(spec, fut.result())
            except Exception as exc:  # noqa: BLE001
                done(spec, exc)
    except BaseException:
        _stop_workers(pool, stop)
        raise
    pool.shutdown(wait=True)


def _stop_workers(pool: Any, stop: Any, grace: float = 10.0) -> None:
    """Stop a grid that is being interrupted (Ctrl-C, SIGTERM): set ``stop``, so each worker's run ends
    after its batch in progress (journal complete, the run folder marked interrupted) and no worker starts
    a run already handed to it; drop the queued runs; terminate any worker still alive after ``grace``
    seconds. Without this the pool's exit waited for every queued run, and after a SIGTERM to the parent
    the workers outlived it."""
    stop.set()
    procs = list(getattr(pool, "_processes", {}).values())   # the executor has no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    end = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
        if p.is_alive():
            p.terminate()
            p.join(2.0)


def _run_ray(todo: list[tuple[RunSpec, Path]], ray_cfg: dict[str, Any], workers: int,
             done: Callable[[RunSpec, Any], None]) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("the compare config names a [ray] cluster but Ray is not installed; "
                          "pip install 'mango-am[ray]' or remove the [ray] table") from None
    unknown_keys = [k for k in ray_cfg if k not in ("address", "num_cpus")]
    if unknown_keys:
        raise ConfigError(f"unknown [ray] keys {unknown_keys}; valid keys: address, num_cpus")
    started = False
    if not ray.is_initialized():
        address = ray_cfg.get("address", "local")
        if address in (None, "local"):
            ray.init(num_cpus=int(ray_cfg.get("num_cpus", workers)), include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_run_one)
        refs = {remote.remote(spec.run, str(folder)): spec for spec, folder in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    done(refs[ref], ray.get(ref))
                except Exception as exc:  # noqa: BLE001
                    done(refs[ref], exc)
    finally:
        if started:
            ray.shutdown()


def _backend(cfg: dict[str, Any], workers: int | None, ray: dict[str, Any] | bool | None
             ) -> tuple[int, dict[str, Any] | None]:
    """``(workers, ray table or None)`` from the arguments, else the config (workers default 2).

    Raises:
        ConfigError: workers not a positive integer, ``[ray]`` not a table, ``budgets`` not
            positive integers up to ``budget``.
    """
    workers = positive_int(workers if workers is not None else cfg.get("workers", 2), "workers")
    total = cfg.get("budget")
    budgets = cfg.get("budgets")
    if budgets is not None and not isinstance(budgets, list):     # a string was walked one character at a time
        raise ConfigError(f"budgets must be a list of positive integers (e.g. [100, 300, 1000]), got {budgets!r}")
    for b in budgets or []:
        positive_int(b, "every entry of budgets")
        if isinstance(total, int) and not isinstance(total, bool) and b > total:
            raise ConfigError(f"budgets entry {b} is above the runs' budget {total}: the report would show a value "
                              f"at a query count no run reaches (valid: 1..{total})")
    ray_cfg = cfg.get("ray") if ray is None else (ray or None)
    if ray_cfg is True:
        ray_cfg = {}
    if ray_cfg is not None and not isinstance(ray_cfg, dict):
        raise ConfigError(f"[ray] must be a table (e.g. address = \"auto\"), got {ray_cfg!r}")
    unknown_keys = [k for k in (ray_cfg or {}) if k not in ("address", "num_cpus")]
    if unknown_keys:            # before the output folder is made (was found only when the grid started)
        raise ConfigError(f"unknown [ray] keys {unknown_keys}; valid keys: address, num_cpus")
    return workers, ray_cfg


def check_components(runs: Sequence[RunConfig]) -> None:
    """Build every distinct objective (generator + target whatever the unit, or problem; on the CPU) and
    optimizer of ``runs`` once, so that a bad layer or optimizer value ends the grid with its one-line
    error before any run starts (before, it failed only when its run came up, after the earlier runs had
    spent their time). A unit out of range fails its own run, as before (scan checks its units first).

    Raises:
        MangoError: the first component that cannot be built (a :class:`ConfigError` names the value).
    """
    from .loop import build_optimizer
    from .optimizers.gradient import GradientAM

    spaces: dict[str, Any] = {}
    objectives: dict[str, Any] = {}
    sizes: dict[str, tuple[int, str] | None] = {}
    seen: set[str] = set()
    for run in runs:
        d = run.to_dict()
        # one build per generator + target whatever the unit (a scan's units share them), on the CPU (the
        # parent takes no GPU memory the workers need); each run's unit is then checked against the layer's size
        cpu = {k: ({p: v for p, v in d[k].items() if p not in ("unit", "device")} if isinstance(d.get(k), dict)
                   else d.get(k)) for k in ("generator", "target", "problem")}
        key = json.dumps(cpu, sort_keys=True, default=str)
        if key not in spaces:
            obj = build_objective(RunConfig.from_dict({**d, **{k: v for k, v in cpu.items() if v}, "device": "cpu"}))
            spaces[key], sizes[key] = obj.space, _layer_units(getattr(obj, "target", None))
            objectives[key] = obj
        unit = (d.get("target") or {}).get("unit") if isinstance(d.get("target"), dict) else None
        first = unit[0] if isinstance(unit, list) and unit else unit
        size = sizes[key]
        if size is not None and isinstance(first, int) and not isinstance(first, bool) and not 0 <= first < size[0]:
            raise ConfigError(f"unit {first} is out of range for layer {size[1]!r} of target "
                              f"{d['target'].get('name')!r}: valid units 0..{size[0] - 1} (every run of the grid is "
                              "checked before any starts)")
        okey = json.dumps([key, d.get("optimizer"), d.get("batch_size"), d.get("budget")], sort_keys=True,
                          default=str)
        if okey not in seen:
            seen.add(okey)
            opt = build_optimizer(run.optimizer.name, spaces[key], seed=run.seed, batch_size=run.batch_size,
                                  budget=run.budget, params=dict(run.optimizer.params))
            try:
                if isinstance(opt, GradientAM):   # its pipeline must be differentiable: known before any run
                    try:
                        opt.bind(objectives[key])
                        opt.check_differentiable()    # a model that breaks the graph: one forward pass, no query
                    except ConfigError as exc:
                        where = ", ".join(f"{k} {json.dumps(v, default=str)}" for k, v in cpu.items() if v)
                        raise ConfigError(f"optimizer {run.optimizer.name!r} cannot run on {where}: {exc} (every "
                                          "run of the grid is checked before any starts)") from None
            finally:
                close = getattr(opt, "close", None)
                if callable(close):
                    close()


def _layer_units(target: Any) -> tuple[int, str] | None:
    """How many units (channels or neurons) the layer a built target reads has, with the layer's name, when
    the target can list its layers."""
    layers, name = getattr(target, "layers", None), getattr(target, "layer", None)
    if not callable(layers) or name is None:
        return None
    try:
        rows = list(layers())
    except MangoError:          # no input shape known: the unit is checked by its own run, as before
        return None
    for n, shape in rows:
        if str(n) == str(name) and len(tuple(shape)):
            return int(tuple(shape)[0]), str(name)
    return None


def _check_not_orphaning(runs: Sequence[RunSpec], out: Path) -> None:
    """Refuse a grid that would replace ``out/compare.json`` while leaving out runs of the grid recorded there
    (a second grid given the same ``--out``, or two configs of one name): the report reads the manifest, so
    those runs would silently drop out of it. A grid that includes every recorded run that still exists
    (the same grid, or one extended with more seeds, units or optimizers) goes on.

    Raises:
        ConfigError: naming the recorded grid, how many of its runs would be left out, and the ways out.
    """
    try:
        old = json.loads((out / "compare.json").read_text())
        folders = [r["folder"] for r in old["runs"] if isinstance(r, dict) and isinstance(r.get("folder"), str)]
    except (OSError, ValueError, KeyError, TypeError):
        return          # no manifest (or an unreadable one, which this run rewrites)
    mine = {spec.folder for spec in runs}
    left = [f for f in folders if f not in mine and (out / f).exists()]
    if left:
        raise ConfigError(f"{out} holds the grid {old.get('name')!r} ({len(folders)} runs), and this grid leaves "
                          f"out {len(left)} of them (e.g. {left[0]}): its report would no longer list them. Use a "
                          f"new output folder, or a grid that includes those runs (the recorded grid's config is "
                          f"in {out / 'compare.json'}, key \"config\")")


def _adopt_relabelled(runs: Sequence[RunSpec], out: Path) -> None:
    """A unit's label, so its folder, carries a ``generator:`` prefix only while the grid has several generators:
    adding a generator to a finished grid moved every unit to a new folder, and its finished runs were run
    again (their old folders orphaned). A run whose folder does not exist, while the folder of its label with
    (or without) that prefix holds a run of exactly its config, takes that folder over (renamed, with a
    warning)."""
    for spec in runs:
        new = out / spec.folder
        gen = spec.meta.get("generator")
        if new.exists() or not gen:
            continue
        head, sep, rest = spec.unit.partition(":")
        alts = [rest] if sep else []
        alts.append(f"{gen}:{spec.unit}")
        for alt in alts:
            old = out / spec.folder.replace(f"runs/{slug(spec.unit)}/", f"runs/{slug(alt)}/", 1)
            try:
                recorded = json.loads((old / "run.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if recorded == json.loads(json.dumps(spec.run.to_dict(), default=str)):
                new.parent.mkdir(parents=True, exist_ok=True)
                os.replace(old, new)
                log.warning("%s holds this grid's run %r under its earlier label: moved to %s", old, spec.id, new)
                break


def _check_reachable(configs: list[RunConfig], ray: bool, workers: int) -> None:
    """Components registered in this process only (``mango.registry.register`` in a script or notebook) and the
    processes that run the grid: a Ray task, or a local worker of a session without a script file (a notebook,
    the REPL, ``python -c``), starts without them and would fail every run with "unknown ...": refused. A local
    worker of a script re-imports that script, so a registration at its top level reaches it: a warning then
    says where the registration must be."""
    import __main__

    script = getattr(__main__, "__file__", None)
    for cfg in configs:
        for kind, spec in (("generator", cfg.generator), ("target", cfg.target), ("problem", cfg.problem),
                           ("optimizer", cfg.optimizer)):
            if spec is None or not registry.in_process_only(kind, spec.name):
                continue
            entry = (f"install the {kind} through an entry point (the [project.entry-points.\"mango.{kind}s\"] "
                     "table of a package's pyproject.toml, as MANGO's own)")
            if ray or not script:
                where = "a Ray cluster" if ray else f"worker processes (workers = {workers})"
                raise ConfigError(f"{kind} {spec.name!r} was registered in this process (mango.registry.register), "
                                  f"and the grid's runs go to {where}, which start without it: "
                                  + ("" if ray else "run the grid with workers = 1 (in this process), or ") + entry)
            log.warning("%s %r was registered in this process; the grid's %d worker processes re-import %s and "
                        "see it only if it is registered at the script's top level (not under "
                        "if __name__ == '__main__'), else every run fails with 'unknown %s': use workers = 1, or %s",
                        kind, spec.name, workers, script, kind, entry)
            return


def run_compare(cfg: dict[str, Any], out: str | Path, workers: int | None = None,
                ray: dict[str, Any] | bool | None = None,
                progress: Callable[[RunSpec, str, Any], None] | None = None,
                runs: list[RunSpec] | None = None, on_open: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run (or resume) every run of a compare config into ``out``.

    Args:
        cfg: the compare config (see the module docstring).
        out: output folder (``compare.json`` and ``runs/``).
        workers: local processes (overrides ``cfg["workers"]``, default 2).
        ray: a ``[ray]`` table (overrides ``cfg["ray"]``); ``False`` forces local processes.
        progress: called as ``progress(spec, status, info)`` with status ``"skip"``,
            ``"done"`` or ``"error"``.
        runs: ``expand(cfg)`` when the caller has it already (the grid is expanded once).
        on_open: called once the grid has passed its checks and ``out`` holds its ``compare.json``, before
            any run starts (the command line draws its bar and starts the live view there, so that a refused
            grid starts neither).

    Returns:
        ``{"runs": n, "skipped": [...ids], "ran": [...ids], "errors": {id: message}}``.

    Raises:
        ConfigError: a bad compare config (before anything runs).
    """
    runs = expand(cfg) if runs is None else runs
    workers, ray_cfg = _backend(cfg, workers, ray)
    out = Path(out)
    _adopt_relabelled(runs, out)
    skipped, todo = [], []
    for spec in runs:
        folder = out / spec.folder
        if is_finished(spec.run, folder):
            skipped.append(spec.id)
        else:
            todo.append((spec, folder))
    for spec, folder in todo:   # a grid re-run with other settings: refused before compare.json changes
        keys = config_conflict(folder, spec.run.to_dict())
        if keys:
            raise ConfigError(f"run folder {folder} was started with another config (differs in: {', '.join(keys)})"
                              f"{default_change_hint(keys)}; "
                              f"{out} holds a grid run with other settings: use a new output folder, or the same "
                              "settings to resume it")
    _check_not_orphaning(runs, out)
    if ray_cfg is None:   # a Ray grid's components may exist only on the cluster (a GPU, a model path)
        check_components([spec.run for spec, _ in todo])   # before the folder is made or anything runs
    if ray_cfg is not None or workers > 1:
        _check_reachable([spec.run for spec, _ in todo], ray_cfg is not None, workers)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"name": cfg.get("name", out.name), "budget": cfg["budget"], "budgets": cfg.get("budgets"),
                "config": cfg, "runs": [r.to_dict() for r in runs]}
    (out / "compare.json").write_text(json.dumps(manifest, indent=2, default=str))
    # the last invocation's errors are about to be retried: a report read while (or after) this one runs or is
    # interrupted must not call those runs failed
    (out / "compare_status.json").unlink(missing_ok=True)
    if on_open is not None:
        on_open()
    if progress:
        finished = set(skipped)
        for spec in runs:
            if spec.id in finished:
                progress(spec, "skip", None)
    ran: list[str] = []
    errors: dict[str, str] = {}

    def done(spec: RunSpec, info: Any) -> None:
        if isinstance(info, BaseException):
            errors[spec.id] = f"{type(info).__name__}: {info}"
            log.error("run %s failed: %s", spec.id, errors[spec.id])
            if progress:
                progress(spec, "error", errors[spec.id])
        else:
            ran.append(spec.id)
            if progress:
                progress(spec, "done", info)

    t0 = time.perf_counter()
    if todo:
        if ray_cfg is not None:
            _run_ray(todo, ray_cfg, workers, done)
        else:
            _run_local(todo, workers, done)
    summary = {"runs": len(runs), "skipped": skipped, "ran": ran, "errors": errors,
               "seconds": time.perf_counter() - t0, "backend": "ray" if ray_cfg is not None else f"local:{workers}"}
    (out / "compare_status.json").write_text(json.dumps(summary, indent=2))
    return summary


# -- command line -------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    """``mango compare CONFIG``."""
    cfg = load_compare_config(args.config)
    for key in ("out", "name"):     # `out = 5` ended in a TypeError from Path()
        if key in cfg and not (isinstance(cfg[key], str) and cfg[key].strip()):
            raise ConfigError(f"compare config key {key!r} must be a non-empty string"
                              f"{' (an output folder)' if key == 'out' else ''}, got {cfg[key]!r}")
    check_watch_option(args.watch)           # a bad --watch: refused before anything is built or written
    out = check_out_dir(Path(args.out or cfg.get("out") or Path("runs") / slug(cfg.get("name", Path(args.config).stem))))
    if args.workers is not None:
        positive_int(args.workers, "--workers")
    ray_cfg: Any = None
    if args.local:
        ray_cfg = False
    elif args.ray_address:
        ray_cfg = {"address": args.ray_address}
    runs = expand(cfg)
    _backend(cfg, args.workers, ray_cfg)     # a bad `workers` or [ray] table: refused before a bar is drawn
    t0 = time.perf_counter()
    # a bar over all queries, and the live view, once the grid's checks have passed
    with GridProgress([(r, out / r.folder, r.run.budget) for r in runs], start=False) as progress:
        def start() -> None:
            serve_option(args.watch, out)
            progress.open()

        status = run_compare(cfg, out, workers=args.workers, ray=ray_cfg, progress=progress, runs=runs,
                             on_open=start)
    wall = time.perf_counter() - t0
    print(f"{status['runs']} runs: {len(status['ran'])} ran, {len(status['skipped'])} skipped, "
          f"{len(status['errors'])} failed; {wall:.1f} s ({status['backend']}); results in {out}")
    if not args.no_report and not status["errors"]:
        paths = report.write_report(out)
        print("report: " + ", ".join(str(p) for p in paths))
    elif not args.no_report:
        print(f"no report written: {len(status['errors'])} run(s) failed (their errors are above); fix the cause and "
              f"run the same command to finish them, or `mango report {out}` for a report of the runs that have "
              "results")
    return 1 if status["errors"] else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``mango compare``."""
    p.add_argument("config", help="compare config (TOML): generators x targets/units x optimizers x seeds")
    add_watch_option(p)
    p.add_argument("--out", help="output folder (default: the config's 'out', else runs/<name>)")
    p.add_argument("--workers", type=int, help="local worker processes (default: the config's, else 2)")
    p.add_argument("--ray-address", help="run on this Ray cluster (overrides the config's [ray])")
    p.add_argument("--local", action="store_true", help="ignore the config's [ray] table, run locally")
    p.add_argument("--no-report", action="store_true", help="do not write the report afterwards")
    p.set_defaults(func=cmd_compare)

"""``mango scan``: maximize every unit of a layer (or a list of units), one run each.

A scan is a compare grid with one target axis (the units of one layer), run
through the same machinery (:func:`mango.compare.run_compare`: local processes
or Ray, finished runs skipped, interrupted ones resumed)::

    mango scan --generator vqvae-digits --target snn-digits --layer spiking1 --units all \\
        --optimizer protes --budget 500 --out runs/scan-spiking1

or with a TOML file holding the same keys (``generator``, ``target`` tables,
``layer``, ``units``, ``optimizer`` table, ``budget``, ``seeds``, ``workers``, ...).
Writes the compare folder plus ``report/`` with a grid of every unit's best
stimulus and a per-unit table; prints the table.
"""
from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .clitools import GridProgress, check_out_dir, merge_table, parse_value, slug
from .compare import expand, run_compare
from .config import integer, load_toml
from .errors import ConfigError, choices_hint
from .optimizers import DEFAULT_OPTIMIZER
from .report import load_traces, write_report
from .watch import add_watch_option, check_watch_option, serve_option

__all__ = ["parse_units", "layer_size", "scan_config", "run_scan", "add_arguments"]

log = logging.getLogger(__name__)

#: the most units one ``units`` range may select (a layer this wide would be a typo or a scan of days)
MAX_UNITS = 100_000

SCAN_KEYS = ("name", "generator", "target", "layer", "units", "optimizer", "budget", "seeds", "batch_size",
             "eval_batch_size", "device", "workers", "ray", "checkpoint_every", "out")


def parse_units(text: str | list[int] | int, size: int | None = None) -> list[int]:
    """Units from ``"all"``, ``"0-9"``, ``"0,3,5"``, ``"0-3,8"``, an int or a list.

    Raises:
        ConfigError: bad syntax, or a unit outside ``[0, size)`` when ``size`` is known.
    """
    if isinstance(text, bool):
        raise ConfigError(f"units must be 'all', a range like '0-9', a list or an int, got {text!r}")
    if isinstance(text, int):
        units = [text]
    elif isinstance(text, list):
        units = [integer(u, "every entry of units") for u in text]
    elif str(text).strip() == "all":
        if size is None:
            raise ConfigError("units='all' needs the layer's size (the target could not report it)")
        units = list(range(size))
    else:
        units = []
        for part in str(text).split(","):
            part = part.strip()
            try:
                lo, hi = (int(x) for x in part.split("-", 1)) if "-" in part else (int(part),) * 2
            except ValueError:
                if not part:
                    continue
                raise ConfigError(f"bad units {text!r}: use 'all', '0-9', '0,3,5' or '0-3,8'") from None
            if lo > hi:
                raise ConfigError(f"units {part!r} is a range from {lo} down to {hi}, which selects no unit; "
                                  f"ranges go up: {hi}-{lo}")
            if size is not None and lo < hi and (hi >= size or lo < 0):   # a typo such as 0-100000000:
                raise ConfigError(f"units {part!r} reach outside the layer's {size} units "  # said, not built
                                  f"(valid: 0..{size - 1})")
            if hi - lo >= MAX_UNITS:
                raise ConfigError(f"units {part!r} select {hi - lo + 1} units; a scan takes at most {MAX_UNITS} "
                                  "(split it into several scans)")
            units.extend(range(lo, hi + 1))
    if not units:
        raise ConfigError(f"units {text!r} selects no unit")
    if size is not None:
        bad = [u for u in units if not 0 <= u < size]
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (f", ... ({len(bad)} in all)" if len(bad) > 10 else "")
            raise ConfigError(f"units [{shown}] are outside the layer's {size} units (valid: 0..{size - 1})")
    return list(dict.fromkeys(units))


def layer_size(target: dict[str, Any], layer: str | None) -> int | None:
    """Number of units (channels, or neurons) of ``layer`` of a registered target, or None if unknown."""
    params = {k: v for k, v in target.items() if k != "name"}
    if layer is not None:
        params["layer"] = layer
    tgt = registry.create("target", target["name"], params)
    layers = getattr(tgt, "layers", None)
    if not callable(layers):
        return None
    rows = list(layers())
    names = [str(n) for n, _ in rows]
    want = layer if layer is not None else getattr(tgt, "layer", None)
    for name, shape in rows:
        if str(name) == str(want):
            return int(tuple(shape)[0])
    raise ConfigError(f"target {target['name']!r} has no layer {want!r}; valid layers: {', '.join(names)}")


def scan_config(scan: dict[str, Any]) -> dict[str, Any]:
    """The compare config (see :mod:`mango.compare`) of a scan config."""
    for key in scan:
        if key not in SCAN_KEYS:
            raise ConfigError(f"unknown scan config key {key!r}; {choices_hint(key, SCAN_KEYS)}")
    for key in ("generator", "target", "optimizer", "budget"):
        if key not in scan:
            raise ConfigError(f"scan config needs {key!r}")
    tables = {}
    for key in ("generator", "target", "optimizer"):
        v = scan[key]
        tables[key] = {"name": v} if isinstance(v, str) else dict(v)
    target = tables["target"]
    layer = scan.get("layer", target.pop("layer", None))
    if "unit" in target:
        raise ConfigError("a scan's target table must not set 'unit'; use units = [...] or 'all'")
    units_spec = scan.get("units", "all")
    size = None
    if units_spec == "all" or isinstance(units_spec, str):
        try:
            size = layer_size(target, layer)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a target without layer listing
            log.info("cannot size layer %s of %s: %s", layer, target["name"], exc)
    units = parse_units(units_spec, size)
    ttable = {**target, "units": units, "label": layer or target["name"]}
    if layer is not None:
        ttable["layer"] = layer
    cfg: dict[str, Any] = {"name": scan.get("name", f"scan-{target['name']}-{layer}"), "budget": scan["budget"],
                           "seeds": scan.get("seeds", [0]), "generators": [tables["generator"]],
                           "targets": [ttable], "optimizers": [tables["optimizer"]]}
    for key in ("batch_size", "eval_batch_size", "device", "workers", "ray", "checkpoint_every"):
        if key in scan:
            cfg[key] = scan[key]
    return cfg


def run_scan(scan: dict[str, Any], out: str | Path, workers: int | None = None,
             ray: dict[str, Any] | bool | None = None, report: bool = True,
             progress: Any = None, compare_cfg: dict[str, Any] | None = None,
             on_open: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a scan into ``out``; returns run_compare's status plus the per-unit ``table``.

    ``progress``: a ``progress(spec, status, info)`` callback (see :func:`mango.compare.run_compare`),
    or ``"print"`` for one printed line per run.
    ``compare_cfg``: ``scan_config(scan)`` when the caller has it already (it may build the
    target to size the layer, so it is made once).
    ``on_open``: called once the scan's grid has passed its checks, before any run starts
    (see :func:`mango.compare.run_compare`).
    """
    cfg = scan_config(scan) if compare_cfg is None else compare_cfg
    runs = expand(cfg)
    # "print": a bar over all queries of the scan, with the per-run lines above it, once the grid is accepted
    bar = (GridProgress([(r, Path(out) / r.folder, r.run.budget) for r in runs], start=False)
           if progress == "print" else None)
    def start() -> None:
        if on_open is not None:
            on_open()
        if bar is not None:
            bar.open()

    try:
        status = run_compare(cfg, out, workers=workers, ray=ray, progress=bar or progress, runs=runs,
                             on_open=start)
    finally:
        if bar is not None:
            bar.close()
    _, traces = load_traces(out)
    table = []
    for t in traces:
        first = int(t.queries[int(np.argmax(t.values >= t.best))])
        table.append({"unit": t.extra["meta"].get("unit"), "seed": t.seed, "best": t.best,   # the reported rate
                      "best_score": t.extra.get("best_score", t.best),
                      "found_at_query": first, "seconds": t.seconds})
    table.sort(key=lambda r: (r["unit"], r["seed"]))
    (Path(out) / "scan.json").write_text(json.dumps(table, indent=1))
    status["table"] = table
    if report and traces and not status["errors"]:
        status["report"] = [str(p) for p in write_report(out, title=f"MANGO layer scan: {cfg['name']}")]
    return status


def cmd_scan(args: argparse.Namespace) -> int:
    """``mango scan``."""
    scan: dict[str, Any] = load_toml(args.config) if args.config else {}
    if args.opt_param and not args.optimizer and "optimizer" not in scan:   # parameters of the default optimizer
        scan["optimizer"] = {"name": DEFAULT_OPTIMIZER}
    for key, flag, params in (("generator", "gen", args.gen_param), ("target", "target", args.target_param),
                              ("optimizer", "opt", args.opt_param)):
        merge_table(scan, key, getattr(args, key) or None, params, flag)
    scan.setdefault("optimizer", {"name": DEFAULT_OPTIMIZER})
    for key, val in (("layer", args.layer), ("units", args.units), ("budget", args.budget),
                     ("batch_size", args.batch_size), ("device", args.device)):
        if val is not None:
            scan[key] = val
    if args.seeds is not None:   # --seeds "" meant seed 0, silently
        seeds = parse_value(args.seeds) if str(args.seeds).strip() else []
        seeds = seeds if isinstance(seeds, list) else [seeds]
        if not seeds or any(isinstance(v, bool) or not isinstance(v, int) for v in seeds):
            raise ConfigError(f"--seeds must be integers separated by commas (e.g. 0,1,2), got {args.seeds!r}")
        scan["seeds"] = seeds
    out = check_out_dir(Path(args.out or scan.pop("out", None) or Path("runs") / slug(
        f"scan-{(scan.get('target') or {}).get('name', 'target')}-{scan.get('layer')}")))
    scan.pop("out", None)
    ray: Any = False if args.local else ({"address": args.ray_address} if args.ray_address else None)
    check_watch_option(args.watch)           # a bad --watch: refused before the target is built or anything written
    status = run_scan(scan, out, workers=args.workers, ray=ray, progress="print", report=not args.no_report,
                      on_open=lambda: serve_option(args.watch, out))
    print(f"{'unit':>6} {'seed':>4} {'best':>10} {'at query':>9} {'seconds':>8}")
    for r in status["table"]:
        print(f"{r['unit']!s:>6} {r['seed']:>4} {r['best']:>10.5g} {r['found_at_query']:>9} {r['seconds']:>8.1f}")
    if status.get("report"):
        print("report: " + ", ".join(status["report"]))
    return 1 if status["errors"] else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``mango scan``."""
    p.add_argument("--config", help="scan config (TOML): generator, target, layer, units, optimizer, budget, ...")
    add_watch_option(p)
    p.add_argument("--generator", help="registered generator")
    p.add_argument("--target", help="registered target")
    p.add_argument("--layer", help="layer to scan (see `mango layers TARGET`)")
    p.add_argument("--units", help="'all' (default), '0-9', '0,3,5'")
    p.add_argument("--optimizer", help=f"registered optimizer (default {DEFAULT_OPTIMIZER})")
    p.add_argument("--budget", type=int, help="queries per unit")
    p.add_argument("--seeds", help="comma-separated seeds (default 0)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    for name in ("gen", "target", "opt"):
        p.add_argument(f"--{name}-param", action="append", metavar="KEY=VALUE")
    p.add_argument("--out", help="output folder (default runs/scan-<target>-<layer>)")
    p.add_argument("--workers", type=int, help="local worker processes (default 2)")
    p.add_argument("--ray-address", help="run on this Ray cluster")
    p.add_argument("--local", action="store_true", help="ignore the config's [ray] table, run locally (as compare)")
    p.add_argument("--no-report", action="store_true", help="do not write the report afterwards (as compare)")
    p.set_defaults(func=cmd_scan)

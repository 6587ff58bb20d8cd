"""Run configs (TOML or flags) -> objective + optimizer -> run folder.

A config is a table like::

    seed = 0
    budget = 1000
    batch_size = 100          # optional: queries per ask (else the optimizer's default)
    device = "cpu"            # optional
    eval_batch_size = 64      # optional: micro-batch of the objective
    [generator]               # a registered generator and its parameters ...
    name = "vqvae-digits"
    [target]                  # ... with a registered target,
    name = "snn-digits"
    unit = 3
    [problem]                 # ... or instead a registered index-space problem
    name = "separable"
    [optimizer]
    name = "protes"
    k_top = 10

Unknown keys raise :class:`~mango.errors.ConfigError` naming the key and the valid ones.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import registry
from .errors import ConfigError
from .loop import Callback, Result, maximize
from .objective import BaseObjective, Objective

__all__ = ["TOP_KEYS", "validate_config", "build_objective", "run_config", "load_toml"]

TOP_KEYS = ("seed", "budget", "batch_size", "device", "eval_batch_size", "select", "generator", "target",
            "problem", "optimizer", "checkpoint_every", "name")
_TABLES = ("generator", "target", "problem", "optimizer")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; a syntax error names the file."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check keys and values; return a normalised copy (tables always present as dicts)."""
    cfg = json.loads(json.dumps(cfg))  # deep copy, JSON-able
    for key in cfg:
        if key not in TOP_KEYS:
            from .errors import choices_hint

            raise ConfigError(f"unknown config key {key!r}; {choices_hint(key, TOP_KEYS)}")
    for key in _TABLES:
        val = cfg.get(key)
        if val is None:
            continue
        if isinstance(val, str):
            cfg[key] = {"name": val}
        elif not isinstance(val, dict) or "name" not in val:
            raise ConfigError(f"config [{key}] must be a table with a 'name' (or a plain name string), got {val!r}")
    budget = cfg.get("budget")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise ConfigError(f"budget must be a positive integer, got {budget!r}")
    seed = cfg.setdefault("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if "optimizer" not in cfg:
        raise ConfigError("config needs an [optimizer] (see `mango optimizers`)")
    factory = registry.get("optimizer", cfg["optimizer"]["name"])
    valid = [k for k in registry.describe_params(factory) if k not in ("space", "seed", "budget", "batch_size")]
    for key in cfg["optimizer"]:
        if key != "name" and key not in valid:
            raise ConfigError(f"unknown parameter {key!r} for optimizer {cfg['optimizer']['name']!r}; "
                              f"valid parameters: {', '.join(valid) or '(none)'}")
    has_problem = "problem" in cfg
    has_pipeline = "generator" in cfg or "target" in cfg
    if has_problem == has_pipeline:
        raise ConfigError("config needs either [problem] or both [generator] and [target]")
    if has_pipeline and not ("generator" in cfg and "target" in cfg):
        missing = "target" if "generator" in cfg else "generator"
        raise ConfigError(f"config has no [{missing}] (valid {missing}s: {', '.join(registry.names(missing))})")
    for key in ("batch_size", "eval_batch_size", "checkpoint_every"):
        if key in cfg and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise ConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
    return cfg


def _params(table: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    table = dict(table)
    return table.pop("name"), table


def build_objective(cfg: dict[str, Any]) -> BaseObjective:
    """The objective a validated config describes (problem, or generator + target)."""
    if "problem" in cfg:
        name, params = _params(cfg["problem"])
        return registry.create("problem", name, params)
    gname, gparams = _params(cfg["generator"])
    tname, tparams = _params(cfg["target"])
    device = cfg.get("device")
    for p, n in ((gparams, gname), (tparams, tname)):
        if device is not None and "device" not in p:
            try:
                if "device" in registry.describe_params(registry.get("generator" if p is gparams else "target", n)):
                    p["device"] = device
            except (TypeError, ValueError):
                pass
    generator = registry.create("generator", gname, gparams)
    target = registry.create("target", tname, tparams)
    return Objective(generator, target, device=device, batch_size=cfg.get("eval_batch_size", 64),
                     select=cfg.get("select"))


def run_config(cfg: dict[str, Any], out: str | Path | None, callbacks: Sequence[Callback] = (),
               objective: BaseObjective | None = None) -> Result:
    """Run a config; with ``out``, journal into it (resuming what is there) and write the results.

    Files written to ``out``: ``run.json``, ``journal.jsonl``, ``checkpoint.npz``,
    ``result.json`` (config, versions, seed, best value/code, queries, seconds),
    ``history.npz`` (values, times, query_index, best_so_far) and ``best.png`` for
    image objectives (written by :func:`mango.loop.maximize`, see :meth:`mango.results.Result.save`).
    """
    cfg = validate_config(cfg)
    objective = objective or build_objective(cfg)
    oname, oparams = _params(cfg["optimizer"])
    return maximize(objective, oname, cfg["budget"], cfg["seed"], batch_size=cfg.get("batch_size"),
                    params=oparams, run_dir=out, config=cfg, callbacks=callbacks,
                    checkpoint_every=cfg.get("checkpoint_every", 10))

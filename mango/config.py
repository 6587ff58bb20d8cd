"""Run configs (TOML or flags) -> objective + optimizer -> run folder.

A config is a table like::

    seed = 0
    budget = 1000
    batch_size = 100          # optional: queries per ask (else the optimizer's default)
    device = "cpu"            # optional
    eval_batch_size = 64      # optional: micro-batch width of the objective (default 10 on CPU, 64 on GPUs)
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

A config is validated once, at the edge, by :meth:`RunConfig.from_dict` (TOML file,
command-line flags merged into a dict, or a Python dict): unknown keys, component
names and parameters, and values of the wrong type (``budget = 2.5``, ``seed = true``)
raise :class:`~mango.errors.ConfigError` naming the key and the valid choices.
Everything downstream takes the typed :class:`RunConfig`; :meth:`RunConfig.to_dict`
is the plain dict a run folder stores (``run.json``, ``result.json``) and compares
on resume.
"""
from __future__ import annotations

import inspect
import json
import logging
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import registry
from .registry import split_top
from .channels import check_selection
from .devices import check_device
from .errors import ConfigError, MangoError, check_seed, choices_hint
from .loop import Callback, Result, maximize
from .objective import BaseObjective, Objective
from .optimizers.base import Optimizer

__all__ = ["TOP_KEYS", "ComponentSpec", "GeneratorSpec", "TargetSpec", "ProblemSpec", "OptimizerSpec", "RunConfig",
           "validate_config", "build_objective", "run_config", "load_toml", "load_run_config",
           "positive_int", "integer", "check_device", "value_matches", "create_component"]

TOP_KEYS = ("seed", "budget", "batch_size", "device", "eval_batch_size", "select", "generator", "target",
            "problem", "optimizer", "checkpoint_every", "name")
#: parameters the loop passes to every optimizer itself (never in an [optimizer] table)
OPTIMIZER_FIXED = ("space", "seed", "budget", "batch_size")

log = logging.getLogger(__name__)


def load_run_config(path: str | Path) -> dict[str, Any]:
    """``mango run --config``'s file: a TOML config, or (``.json``) a recorded run's ``run.json`` (the config
    itself) or ``result.json`` (its ``config``), so that a recorded run can be run again."""
    return _load_recorded(Path(path)) if str(path).endswith(".json") else load_toml(path)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; a syntax error names the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; --config takes a TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                          "a TOML config must be UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None


def _load_recorded(path: Path) -> dict[str, Any]:
    """The config of a run folder's ``run.json`` or of a ``result.json`` (under ``config``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "budget" not in data:
        data = data["config"]           # a result.json: the run's config is under "config"
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} holds a JSON {type(data).__name__}, not a run's config "
                          "(a run folder's run.json or result.json)")
    return data


def integer(value: Any, key: str) -> int:
    """``value`` as an int; bools, floats (also ``2.0``) and strings are refused, naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    return int(value)


def positive_int(value: Any, key: str) -> int:
    """``value`` as an int >= 1 (see :func:`integer`)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


_SCALARS: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "None": lambda v: v is None,
}
_LISTS = ("list", "List", "Sequence", "tuple", "Tuple", "typing.Sequence", "collections.abc.Sequence")


def value_matches(value: Any, annotation: str) -> bool:
    """Whether a config value (a TOML/JSON value) fits a parameter annotation written as text.

    Understood: ``int``, ``float`` (ints too), ``str``, ``bool``, ``None``, ``X | Y``,
    ``Optional[X]``, ``Union[X, Y]``, ``list[X]`` / ``Sequence[X]`` / ``tuple[X, ...]``
    (a list whose items fit ``X``) and ``dict[...]``. Any other name (``nn.Module``,
    ``Path``, ``Any``) is not checked here: it matches every value.
    """
    annotation = annotation.strip().strip("'\"")
    if not annotation:
        return True
    alts = split_top(annotation, "|")
    if len(alts) > 1:
        return any(value_matches(value, a) for a in alts)
    a = alts[0]
    if a in _SCALARS:
        return bool(_SCALARS[a](value))
    head, _, inner = a.partition("[")
    inner = inner[:-1] if inner.endswith("]") else inner
    if head in ("Optional", "typing.Optional"):
        return value is None or value_matches(value, inner)
    if head in ("Union", "typing.Union"):
        return any(value_matches(value, x) for x in split_top(inner, ","))
    if head in _LISTS:
        if not isinstance(value, list):
            return False
        items = [x for x in split_top(inner, ",") if x != "..."]
        return len(items) != 1 or all(value_matches(v, items[0]) for v in value)
    if head in ("dict", "Dict", "Mapping", "typing.Mapping", "collections.abc.Mapping"):
        return isinstance(value, dict)
    return True  # a type a config value cannot be checked against here


def _annotation_text(param: inspect.Parameter) -> str:
    ann = param.annotation
    if ann is param.empty:
        return ""
    if isinstance(ann, str):
        return ann
    return ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component by name with its parameters (a config table ``{name = ..., key = value}``)."""

    kind: ClassVar[str] = ""
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> "ComponentSpec":
        """From a table with a ``name`` or a plain name string.

        Raises:
            ConfigError: neither, or a name that is not a string.
        """
        if isinstance(value, str):
            return cls(value, {})
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ConfigError(f"config [{cls.kind}] must be a table with a 'name' (or a plain name string), "
                              f"got {value!r}")
        params = {k: v for k, v in value.items() if k != "name"}
        return cls(value["name"], params)

    def to_dict(self) -> dict[str, Any]:
        """The config table: ``{"name": ..., **params}``."""
        return {"name": self.name, **self.params}

    def factory(self) -> Any:
        """The registered factory (raises :class:`ConfigError` with the valid names)."""
        return registry.get(self.kind, self.name)

    def check_params(self, fixed: Sequence[str] = ()) -> None:
        """Refuse parameter names the factory does not take (``fixed`` ones are set by the engine).

        Raises:
            ConfigError: names the bad key and the valid ones.
        """
        factory = self.factory()
        sig = inspect.signature(factory)
        if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return
        valid = [k for k in sig.parameters if k not in fixed]
        for key, value in self.params.items():
            if key not in valid:
                raise ConfigError(f"unknown parameter {key!r} for {self.kind} {self.name!r}; "
                                  f"valid parameters: {', '.join(valid) or '(none)'}")
            ann = _annotation_text(sig.parameters[key])
            if not value_matches(value, ann):
                raise ConfigError(f"{self.kind} {self.name!r} parameter {key} must be {ann}, got {value!r} "
                                  f"({type(value).__name__}){registry.name_hint(key, value, ann)}")

    def create(self, **fixed: Any) -> Any:
        """Build the component (``fixed`` are engine-set keyword arguments)."""
        return registry.create(self.kind, self.name, dict(self.params), **fixed)


class GeneratorSpec(ComponentSpec):
    """A ``[generator]`` table."""

    kind = "generator"


class TargetSpec(ComponentSpec):
    """A ``[target]`` table."""

    kind = "target"


class ProblemSpec(ComponentSpec):
    """A ``[problem]`` table (an index-space objective instead of generator + target)."""

    kind = "problem"


class OptimizerSpec(ComponentSpec):
    """An ``[optimizer]`` table (``batch_size`` is a top-level key, not an optimizer parameter)."""

    kind = "optimizer"


@dataclass(frozen=True)
class RunConfig:
    """One run, validated: what :func:`run_config` executes and ``run.json`` / ``result.json`` store.

    Build it with :meth:`from_dict` (a TOML table, flags merged into a dict, or a Python
    dict): that is the only validation; everything downstream takes the typed values.
    :meth:`to_dict` gives back the plain config (tables as dicts, absent keys left out),
    which is what a run folder stores and compares on resume.
    """

    budget: int
    optimizer: OptimizerSpec
    seed: int = 0
    generator: GeneratorSpec | None = None
    target: TargetSpec | None = None
    problem: ProblemSpec | None = None
    batch_size: int | None = None          # queries per ask; None = the optimizer's default
    eval_batch_size: int | None = None     # micro-batch width of the objective; None = 10 on CPU, 64 on GPUs
    checkpoint_every: int | None = None    # batches between optimizer checkpoints; None = 10
    device: str | None = None
    select: int | list[int] | str | None = None   # channel selection, see mango.channels
    name: str | None = None

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "RunConfig":
        """Validate a config dict (see the module docstring) into a :class:`RunConfig`.

        Raises:
            ConfigError: an unknown key (with the nearest valid ones), a component parameter
                whose value does not fit the factory's annotation (``T = "abc"`` for an
                ``int``, see :func:`value_matches`), a missing or
                malformed table, an unknown component name or parameter, or a value of
                the wrong type (``budget = 2.5``, ``seed = true``, ``batch_size = 0``).
        """
        if isinstance(cfg, RunConfig):
            return cfg
        try:
            cfg = json.loads(json.dumps(dict(cfg)))  # a deep, JSON-able copy
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config values must be plain JSON/TOML values: {exc}") from None
        for key in cfg:
            if key not in TOP_KEYS:
                raise ConfigError(f"unknown config key {key!r}; {choices_hint(key, TOP_KEYS)}")
        if "budget" not in cfg:
            raise ConfigError("config needs a budget (total queries, a positive integer)")
        if cfg.get("optimizer") is None:    # missing, or None from a Python caller
            raise ConfigError("config needs an [optimizer] (see `mango optimizers`)")
        specs = {key: spec.parse(cfg[key]) for key, spec in
                 (("generator", GeneratorSpec), ("target", TargetSpec), ("problem", ProblemSpec),
                  ("optimizer", OptimizerSpec)) if cfg.get(key) is not None}
        if ("problem" in specs) == ("generator" in specs or "target" in specs):
            raise ConfigError("config needs either [problem] or both [generator] and [target]")
        for have, missing in (("generator", "target"), ("target", "generator")):
            if have in specs and missing not in specs:
                raise ConfigError(f"config has no [{missing}] (valid {missing}s: {', '.join(registry.names(missing))})")
        for spec in specs.values():  # an unknown name or parameter fails here, naming the valid ones
            spec.check_params(OPTIMIZER_FIXED if spec.kind == "optimizer" else ())
        device = cfg.get("device")
        if device is not None and not isinstance(device, str):
            raise ConfigError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
        name = cfg.get("name")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a string, got {name!r}")
        opt = {k: positive_int(cfg[k], k) for k in ("batch_size", "eval_batch_size", "checkpoint_every")
               if cfg.get(k) is not None}
        return cls(budget=positive_int(cfg["budget"], "budget"),
                   seed=check_seed(cfg.get("seed", 0)), device=device,
                   select=check_selection(cfg.get("select")), name=name, **specs, **opt)

    def to_dict(self) -> dict[str, Any]:
        """The plain config: tables as ``{"name", **params}``, ``None`` values left out, JSON types only."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, ComponentSpec):
                v = v.to_dict()
            out[f.name] = v
        return json.loads(json.dumps(out))


def create_component(spec: ComponentSpec, **fixed: Any) -> Any:
    """``spec.create(**fixed)``; a value error of the user's parameters becomes a :class:`ConfigError`.

    The factories check their parameters' values (a layer name, a ``position`` out of
    range) with ``ValueError`` / ``IndexError`` / ``KeyError`` / ``TypeError``; those are
    user errors of the config, reported in one line naming the component and its parameters
    (the traceback is logged at DEBUG level, ``mango -v``).
    """
    try:
        return spec.create(**fixed)
    except MangoError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        log.debug("building %s %r failed", spec.kind, spec.name, exc_info=True)
        shown = ", ".join(f"{k}={v!r}" for k, v in spec.params.items()) or "no parameters"
        raise ConfigError(f"{spec.kind} {spec.name!r} with {shown}: {type(exc).__name__}: {exc} "
                          f"(see `mango {spec.kind}s` for its parameters)") from exc


def validate_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``RunConfig.from_dict(cfg).to_dict()``: the validated, normalised plain config."""
    return RunConfig.from_dict(cfg).to_dict()


def build_objective(cfg: RunConfig | Mapping[str, Any]) -> BaseObjective:
    """The objective a config describes (problem, or generator + target on ``cfg.device``)."""
    cfg = RunConfig.from_dict(cfg)
    if cfg.problem is not None:
        return create_component(cfg.problem)
    assert cfg.generator is not None and cfg.target is not None
    check_device(cfg.device)
    for spec in (cfg.generator, cfg.target):
        if isinstance(spec.params.get("device"), str):
            check_device(spec.params["device"])
    parts = []
    for spec in (cfg.generator, cfg.target):
        fixed = {}
        if cfg.device is not None and "device" not in spec.params and \
                "device" in registry.describe_params(spec.factory()):
            fixed["device"] = cfg.device
        parts.append(create_component(spec, **fixed))
    return Objective(parts[0], parts[1], device=cfg.device, batch_size=cfg.eval_batch_size,
                     select=cfg.select)


def run_config(cfg: RunConfig | Mapping[str, Any], out: str | Path | None, callbacks: Sequence[Callback] = (),
               objective: BaseObjective | None = None, optimizer: Optimizer | None = None,
               stop: Callable[[], bool] | None = None,
               on_open: Callable[[int, bool], None] | None = None) -> Result:
    """Run a config; with ``out``, journal into it (resuming what is there) and write the results.

    ``cfg`` is a :class:`RunConfig` (or a dict, validated here once). Files written to
    ``out``: ``run.json``, ``journal.jsonl``, ``checkpoint.npz``, ``result.json``
    (config, versions, seed, best value/code, queries, seconds), ``history.npz``
    (values, times, query_index, best_so_far) and ``best.png`` for image objectives
    (written by :func:`mango.loop.maximize` through :meth:`mango.results.Result.save`).
    ``objective`` and ``optimizer`` (an instance built from ``cfg``) are built here when not given.
    ``stop``: see :func:`mango.loop.maximize` (a grid's worker stops its run between batches); ``on_open``:
    see :func:`mango.loop.run_loop` (called once ``out`` is accepted, before anything runs).
    """
    cfg = RunConfig.from_dict(cfg)
    objective = objective or build_objective(cfg)
    return maximize(objective, optimizer or cfg.optimizer.name, cfg.budget, cfg.seed, batch_size=cfg.batch_size,
                    params=dict(cfg.optimizer.params), run_dir=out, config=cfg.to_dict(), callbacks=callbacks,
                    checkpoint_every=cfg.checkpoint_every or 10, stop=stop, on_open=on_open)

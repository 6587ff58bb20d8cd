"""One registry through which the command line and configs find components by name.

Kinds: ``generator``, ``target``, ``optimizer``, ``problem``. Components register
in two ways:

* a one-line call: ``mango.registry.register("target", "my-net", factory)``;
* an entry point in the group ``mango.<kind>s`` of any installed package (this
  is how ``mango.generators`` and ``mango.targets`` are found: the engine never
  imports them directly). Entry points are read lazily, on the first lookup.

A factory is any callable returning the component; its keyword arguments are the
component's parameters (config keys).

The registered name (the entry point's name, or ``register``'s ``name``) is the
single source of a component's name: :func:`create` sets it as an optimizer's
``name`` attribute, so optimizer classes need not spell it again.
"""
from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from numbers import Integral, Real
from typing import Any

import numpy as np

from .errors import ConfigError, unknown

__all__ = ["KINDS", "Entry", "register", "get", "names", "entries", "create", "describe_params", "in_process_only",
           "name_hint"]

KINDS = ("generator", "target", "optimizer", "problem")


@dataclass
class Entry:
    """A registered component: its factory and a one-line description."""

    name: str
    kind: str
    factory: Callable[..., Any] | None
    description: str = ""
    entry_point: metadata.EntryPoint | None = None

    def load(self) -> Callable[..., Any]:
        """The factory, importing its module on first use."""
        if self.factory is None and self.entry_point is not None:
            self.factory = self.entry_point.load()
            if not self.description:
                self.description = _first_line(self.factory)
        assert self.factory is not None
        return self.factory


_REG: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
_EP_LOADED: set[str] = set()


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise unknown("component kind", kind, KINDS)


def _load_entry_points(kind: str) -> None:
    if kind in _EP_LOADED:
        return
    _EP_LOADED.add(kind)
    for ep in metadata.entry_points(group=f"mango.{kind}s"):
        _REG[kind].setdefault(ep.name, Entry(ep.name, kind, None, entry_point=ep))


def register(kind: str, name: str, factory: Callable[..., Any], description: str = "",
             overwrite: bool = False) -> Callable[..., Any]:
    """Register ``factory`` under ``name``; returns ``factory`` (usable as a decorator helper)."""
    _check_kind(kind)
    _load_entry_points(kind)
    if name in _REG[kind] and not overwrite and _REG[kind][name].factory is not factory:
        raise ConfigError(f"{kind} {name!r} is already registered; pass overwrite=True to replace it")
    _REG[kind][name] = Entry(name, kind, factory, description or _first_line(factory))
    return factory


def in_process_only(kind: str, name: str) -> bool:
    """Whether ``name`` was registered in this process with :func:`register` (not through an entry point),
    so that another process (a grid's worker, a Ray task) started from scratch does not know it."""
    _check_kind(kind)
    _load_entry_points(kind)
    e = _REG[kind].get(name)
    return e is not None and e.entry_point is None


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind``."""
    _check_kind(kind)
    _load_entry_points(kind)
    return sorted(_REG[kind])


def entries(kind: str) -> list[Entry]:
    """All entries of ``kind`` (entry points loaded), sorted by name."""
    out = []
    for n in names(kind):
        e = _REG[kind][n]
        e.load()
        out.append(e)
    return out


def get(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name``; unknown names raise :class:`ConfigError` with the choices."""
    _check_kind(kind)
    _load_entry_points(kind)
    if name not in _REG[kind]:
        raise unknown(kind, name, _REG[kind])
    return _REG[kind][name].load()


def describe_params(factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword parameters of a factory with their defaults (``inspect.Parameter.empty`` -> required)."""
    out: dict[str, Any] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = "<required>" if p.default is p.empty else p.default
    return out


_SIMPLE = {"int", "float", "bool", "str", "None"}


def split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside brackets (``"dict[str, int | float] | None"`` -> 2 parts); used to read
    annotations written as text, here and in :mod:`mango.config`."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _alternatives(ann: str) -> set[str]:
    """The top-level alternatives of an annotation written as text (``"int | None"``, ``Optional[int]``)."""
    ann = ann.strip().strip("'\"")
    if ann.startswith(("Optional[", "typing.Optional[")) and ann.endswith("]"):
        return {ann[ann.index("[") + 1:-1].strip(), "None"}
    return set(split_top(ann, "|"))


def _check_scalar(kind: str, name: str, key: str, value: Any, param: inspect.Parameter | None) -> None:
    """Refuse a value of the wrong kind for a parameter annotated with plain scalars (``int``, ``float``,
    ``bool``, ``str``, ``None`` and unions of them: numpy numbers are fine, a bool is not a number), a bool
    where a number is meant (``unit=True``), and NaN or infinity for any parameter whose default is not itself
    infinite; as a config file's values are checked (``mango.config``), so a Python caller gets the same
    :class:`ConfigError` instead of a ``ValueError`` from deep inside, or a run on a nonsensical value."""
    import math

    if param is None:
        return
    ann = param.annotation
    ann = ann if isinstance(ann, str) else getattr(ann, "__name__", "") or str(ann)
    alts = _alternatives(ann) if ann and ann != "_empty" else set()
    if (isinstance(value, Real) and not isinstance(value, (bool, np.bool_, Integral))   # a huge int: float() overflows
            and not math.isfinite(float(value))):
        d = param.default
        if not (isinstance(d, Real) and not isinstance(d, bool) and math.isinf(float(d)) and float(value) == float(d)):
            raise ConfigError(f"{kind} {name!r} parameter {key} must be a finite number, got {float(value)!r}")
    is_bool = isinstance(value, (bool, np.bool_))
    if is_bool and "bool" not in alts and alts & {"int", "float"}:
        raise ConfigError(f"{kind} {name!r} parameter {key} must be {ann.strip()}, got {value!r} (bool)")
    if not alts or not alts <= _SIMPLE:
        return      # a sequence, a module, Any: checked by the factory itself
    ok = {"int": lambda v: isinstance(v, Integral) and not is_bool,
          "float": lambda v: isinstance(v, Real) and not is_bool,
          "bool": lambda v: is_bool, "None": lambda v: v is None,
          # a path or a torch.device where a name is annotated: the loaders behind take them
          "str": lambda v: isinstance(v, (str, os.PathLike)) or (type(v).__module__ == "torch"
                                                                  and type(v).__name__ == "device")}
    if not any(ok[a](value) for a in alts):     # worded as a config file's value is refused (mango.config)
        raise ConfigError(f"{kind} {name!r} parameter {key} must be {ann.strip()}, got {value!r} "
                          f"({type(value).__name__}){name_hint(key, value, ann)}")


def name_hint(key: str, value: Any, annotation: str) -> str:
    """For a number given where a name is wanted (``layer=5`` for an ``nn.Sequential`` layer called "5"): how
    to write it as a string; else ``""``. Appended to the type refusals of the registry and of config files."""
    if isinstance(value, bool) or not isinstance(value, Real) or "str" not in re.split(r"[^\w]+", annotation):
        return ""
    v = value if not isinstance(value, float) or not value.is_integer() else int(value)
    return (f"; a number meant as a name (an nn.Sequential layer such as {v}) is written as a string: on the "
            f"command line --target-param {key}='\"{v}\"', in TOML {key} = \"{v}\"")


def create(kind: str, name: str, params: dict[str, Any] | None = None, **fixed: Any) -> Any:
    """Build the component ``name`` with config ``params``.

    Unknown parameter names raise :class:`ConfigError` naming the bad key and the
    valid ones, before anything is built; so does a value of the wrong kind for a
    parameter annotated ``int`` or ``float`` (a string, ``None``, a bool).
    """
    factory = get(kind, name)
    params = dict(params or {})
    sig = inspect.signature(factory)
    accepts_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    if not accepts_kw:
        valid = [p for p in sig.parameters if p not in fixed]
        for key in params:
            if key not in sig.parameters or key in fixed:
                raise ConfigError(
                    f"unknown parameter {key!r} for {kind} {name!r}; "
                    f"valid parameters: {', '.join(valid) or '(none)'}"
                )
    for key, value in params.items():
        _check_scalar(kind, name, key, value, sig.parameters.get(key))
    if isinstance(params.get("device"), str):
        from .devices import check_device

        check_device(params["device"])      # CUDA on a machine without it: one line, not torch's AssertionError
    obj = factory(**fixed, **params)
    if kind == "optimizer":
        obj.name = name  # the registry is the one place optimizer names are written
    return obj

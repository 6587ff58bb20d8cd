"""Bottom-level helpers of the command line, shared by every subcommand module.

``mango.cli``, ``mango.compare``, ``mango.scan``, ``mango.demo``, ``mango.rig.run``
and ``mango.rig.simulator`` import these; this module imports nothing of the
project but :mod:`mango.errors`, so no subcommand module needs another one
(or the command line itself) for its helpers, and no import cycle can form here.

* :func:`parse_kv` -- ``["k=v", ...]`` flags -> dict of TOML/JSON literals.
* :func:`merge_table` -- a component flag (``--target NAME``) and its ``--*-param``
  flags merged into the config's table of that component.
* :class:`Progress` -- the tqdm bar over queries (``mango run``, ``mango demo``).
* :func:`run_progress_printer` -- one line per finished run of a grid (compare, scan).
* :func:`print_rows` -- the two-column summary people read at the end of a command.
* :func:`slug` -- a label as a file-name-safe folder name.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["parse_kv", "merge_table", "Progress", "run_progress_printer", "print_rows", "slug"]


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict; values parsed as JSON literals when possible, ``true``/``false``
    as booleans, anything else kept as a string.

    Raises:
        ConfigError: an item without ``=`` (the message names the flag ``what``).
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r} must look like key=value")
        key, val = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            low = val.strip().lower()
            out[key.strip()] = {"true": True, "false": False}.get(low, val)
    return out


def merge_table(cfg: dict[str, Any], key: str, name: str | None, params: list[str] | None,
                flag: str) -> None:
    """Merge ``--<key> NAME`` and ``--<flag>-param k=v`` flags into ``cfg[key]`` in place.

    A ``NAME`` from the flags replaces the config's whole table (its parameters belong
    to the other component); parameters alone are merged into the config's table
    (a plain string there is read as ``{"name": string}``).

    Raises:
        ConfigError: parameters given for a component that neither the flags nor the
            config name.
    """
    extra = parse_kv(params, f"--{flag}-param")
    if name is not None:
        cfg[key] = {"name": name, **extra}
    elif extra:
        if key not in cfg:
            raise ConfigError(f"--{flag}-param given without a {key} (--{key} or a config table)")
        table = cfg[key]
        cfg[key] = {**table, **extra} if isinstance(table, dict) else {"name": table, **extra}
    elif isinstance(cfg.get(key), str):
        cfg[key] = {"name": cfg[key]}


class Progress:
    """tqdm progress bar over queries (on stderr), showing the best value so far.

    Call it with any event carrying ``n_queries`` and ``best_value`` (the loop's
    callback events); :meth:`close` ends the bar.
    """

    def __init__(self, budget: int, desc: str = "queries") -> None:
        from tqdm import tqdm  # third-party, only when a bar is shown

        self.bar = tqdm(total=budget, desc=desc, unit="q", dynamic_ncols=True, file=sys.stderr)
        self.last = 0

    def __call__(self, ev: Any) -> None:
        self.bar.update(ev.n_queries - self.last)
        self.last = ev.n_queries
        self.bar.set_postfix(best=f"{ev.best_value:.4g}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_progress_printer(total: int) -> Callable[[Any, str, Any], None]:
    """A ``progress(spec, status, info)`` callback for a grid of ``total`` runs printing one line each.

    ``spec`` has ``unit``, ``optimizer`` and ``seed``; ``status`` is ``"done"`` (``info``
    holds ``best_value`` and ``wall`` seconds), ``"skip"`` or ``"error"`` (``info`` is the message).
    """
    count = 0

    def cb(spec: Any, status: str, info: Any) -> None:
        nonlocal count
        count += 1
        if status == "done":
            msg = f"best {info['best_value']:.5g} in {info['wall']:.1f} s"
        elif status == "skip":
            msg = "finished before, skipped"
        else:
            msg = f"ERROR {info}"
        print(f"[{count}/{total}] {spec.unit} | {spec.optimizer} | seed {spec.seed}: {msg}", flush=True)
    return cb


def print_rows(rows: Sequence[tuple[str, Any]]) -> None:
    """Print ``(label, value)`` rows as two aligned columns on stdout."""
    width = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    sys.stdout.flush()


def slug(text: str) -> str:
    """A file-name-safe version of a label: letters, digits, ``-``, ``_``, ``.`` and ``=`` kept,
    every other character a ``-``, runs of ``-`` collapsed, no leading/trailing ``-`` (``"x"`` if empty)."""
    out = "".join(c if (c.isalnum() or c in "-_.=") else "-" for c in str(text))
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "x"

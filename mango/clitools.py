"""Bottom-level helpers of the command line, shared by every subcommand module.

``mango.cli``, ``mango.compare``, ``mango.scan``, ``mango.demo``, ``mango.rig.run``
and ``mango.rig.simulator`` import these; this module imports nothing of the
project but :mod:`mango.errors`, so no subcommand module needs another one
(or the command line itself) for its helpers, and no import cycle can form here.

* :func:`parse_kv` -- ``["k=v", ...]`` flags -> dict of TOML/JSON literals
  (:func:`parse_value`: ``1,16,16`` and ``[1,16,16]`` are the same list).
* :func:`check_out_dir` -- refuse an output folder that cannot be written, before the run.
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
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["parse_kv", "parse_value", "check_out_dir", "merge_table", "Progress", "run_progress_printer", "print_rows", "slug"]


def _number(text: str) -> int | float | None:
    """``text`` as a JSON number (``"3"`` -> 3, ``"-0.5"`` -> -0.5), else ``None``."""
    try:
        v = json.loads(text)
    except ValueError:
        return None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def parse_value(val: str) -> Any:
    """One flag value -> a TOML/JSON value.

    * a JSON literal: ``3``, ``2.5``, ``"x"``, ``[1, 16, 16]``, ``{"a": 1}``, ``null``;
    * ``true`` / ``false`` in any case -> bool;
    * comma-separated numbers -> a list of numbers: ``1,16,16`` -> ``[1, 16, 16]``
      (the same as ``[1,16,16]``; a trailing comma makes a one-item list, ``3,`` -> ``[3]``);
    * anything else stays the string as typed (``layer=conv1``, ``model=a,b.pt``).

    Raises:
        ConfigError: a JSON value nested too deeply to read (``[[[[...]]]]``).
    """
    try:
        return json.loads(val)
    except json.JSONDecodeError:
        pass
    except RecursionError:
        raise ConfigError(f"value {val[:40]!r}... is nested too deeply") from None
    low = val.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if "," in val:
        parts = val.strip().split(",")
        if parts and parts[-1].strip() == "":
            parts = parts[:-1]
        nums = [_number(p.strip()) for p in parts]
        if nums and all(n is not None for n in nums):
            return nums
    return val


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict of keys to values parsed by :func:`parse_value`
    (JSON literals, ``true``/``false``, ``1,16,16`` lists; else the string).

    Raises:
        ConfigError: an item without ``=`` or with an empty key (the message names the
            flag ``what``), or a value nested too deeply.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r} must look like key=value")
        key, val = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"{what} {item!r} has no key; it must look like key=value")
        try:
            out[key.strip()] = parse_value(val)
        except ConfigError as exc:
            raise ConfigError(f"{what} {key.strip()}: {exc}") from None
    return out


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Make sure ``path`` is (or can become) a writable folder; create it.

    Raises:
        ConfigError: ``path`` is a file, lies under a file, is read-only or cannot be
            created (``/proc/x``); the message names the path and the reason.
    """
    import os
    import tempfile

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {str(p)!r} is a file; it must be a folder (new or a run folder to resume)")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mango-write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{flag} {str(p)!r} cannot be used as a run folder: {reason} "
                          f"({exc.filename or p}); choose a writable folder") from None
    return p


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

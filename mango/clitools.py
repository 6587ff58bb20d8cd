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
* :class:`GridProgress` -- a tqdm bar over all queries of a grid with ETA, fed by the run
  folders' journals while the runs go, plus the per-run lines (compare, scan).
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

__all__ = ["parse_kv", "parse_value", "check_out_dir", "merge_table", "Progress", "best_text", "GridProgress",
           "journal_queries", "print_rows", "slug"]


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
        ConfigError: an item without ``=``, with an empty key or an empty value (the message
            names the flag ``what``), or a value nested too deeply.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r} must look like key=value")
        key, val = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"{what} {item!r} has no key; it must look like key=value")
        if not val.strip():   # 'layer=' ran the default layer while the summary printed an empty one
            raise ConfigError(f"{what} {item!r} has no value; give one (key=value), or leave the key out for "
                              "its default")
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


def best_text(ev: Any) -> str:
    """``"best=0.798"``, or for an objective that reports another quantity than its search score (a
    spiking unit's firing rate under the graded readout) ``"rate=0.75 (score 0.7985)"``: what the user
    asked to maximize first. ``ev``: a loop event with ``best_value`` and ``objective``."""
    import math

    obj = getattr(ev, "objective", None)
    name = str(getattr(obj, "reported_name", "value") or "value")
    if name == "value" or not callable(getattr(obj, "reported", None)) or not math.isfinite(ev.best_value):
        return f"best={ev.best_value:.4g}"
    rep = float(obj.reported([float(ev.best_value)])[0])
    return f"{name}={rep:.4g} (score {ev.best_value:.4g})"


class Progress:
    """tqdm progress bar over queries (on stderr), showing the best value so far.

    Call it with any event carrying ``n_queries`` and ``best_value`` (the loop's
    callback events); :meth:`close` ends the bar.
    """

    def __init__(self, budget: int, desc: str = "queries", initial: int = 0) -> None:
        from tqdm import tqdm  # third-party, only when a bar is shown

        # initial: queries a resumed run replays from its journal (the bar starts there, and its rate
        # counts only what is evaluated now)
        self.bar = tqdm(total=budget, desc=desc, unit="q", dynamic_ncols=True, file=sys.stderr, initial=initial)
        self.last = initial

    def __call__(self, ev: Any) -> None:
        # the best value first, then the count: update() is what redraws, so the line drawn shows
        # this batch's best, not the previous one's (a notebook keeps the last line drawn)
        self.bar.set_postfix_str(best_text(ev), refresh=False)
        if ev.n_queries > self.last:
            self.bar.update(ev.n_queries - self.last)
            self.last = ev.n_queries

    def close(self) -> None:
        self.bar.close()


class BarOnOpen:
    """A run's progress bar, and whatever else must wait for its folder, made once the loop accepts the folder.

    Pass :meth:`on_open` as the loop's ``on_open`` hook (:func:`mango.loop.run_loop`) and the instance as a
    loop callback: a call refused for its folder (another process's, other settings) then draws no bar and
    starts nothing. ``bar``: whether to draw one; ``start(done, finished)`` runs first at open (a live view,
    a "resuming" line). :attr:`finished`: the folder held a finished run (nothing runs, no bar).
    """

    def __init__(self, budget: int, *, bar: bool, desc: str = "queries",
                 start: Callable[[int, bool], None] | None = None) -> None:
        self.budget, self.want_bar, self.desc, self.start = budget, bool(bar), desc, start
        self.bar: Progress | None = None
        self.finished = False

    def on_open(self, done: int, finished: bool) -> None:
        """The folder is accepted; ``done``: the queries its journal holds (the bar starts there)."""
        self.finished = finished
        if self.start is not None:
            self.start(done, finished)
        if self.want_bar and not finished:
            self.bar = Progress(self.budget, desc=self.desc, initial=done)

    def __call__(self, ev: Any) -> None:
        if self.bar is not None:
            self.bar(ev)

    def close(self) -> None:
        """End the bar (again: nothing)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def journal_queries(path: Any, state: dict[str, int]) -> int:
    """Queries recorded so far in the journal ``path`` (``journal.jsonl``), read incrementally.

    ``state`` (a dict kept by the caller, ``{}`` at first) holds the byte offset and the count of
    the lines read before, so each call parses only the lines appended since; a file that got
    shorter (a resume cut a torn line) or was replaced is read again from the start. A line's
    queries are ``len(y) + external`` (the optimizer's own forward passes count too).
    """
    import os

    try:
        size = os.path.getsize(path)
    except OSError:
        state.clear()
        return 0
    if size < state.get("offset", 0):
        state.clear()
    with open(path, "rb") as fh:
        fh.seek(state.get("offset", 0))
        data = fh.read(size - state.get("offset", 0))
    end = data.rfind(b"\n") + 1  # only complete lines
    count = state.get("count", 0)
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
            count += len(rec.get("y", ())) + int(rec.get("external", 0) or 0)
        except (ValueError, TypeError, AttributeError):
            continue
    state["offset"] = state.get("offset", 0) + end
    state["count"] = count
    return count


class GridProgress:
    """Progress of a grid of runs (compare, scan): one tqdm bar over all queries, with rate and ETA.

    A background thread polls each run folder's ``journal.jsonl`` every ``interval`` seconds (runs
    go in other processes, so the folders are the only shared state) and moves the bar. Called as
    ``progress(spec, status, info)`` (the callback of :func:`mango.compare.run_compare`) it marks a
    run done and writes its line above the bar (``tqdm.write``, so bar and lines never interleave);
    ``lines=False`` drops those lines, ``bar=False`` the bar (the lines then print plainly).
    Use as a context manager (or call :meth:`close`) to stop the thread.

    Args:
        runs: ``[(spec, folder, budget)]``: spec with ``unit``, ``optimizer``, ``seed``; the run folder;
            its budget (queries).
        start: draw the bar and start polling now; ``False``: at :meth:`open` (or the first call), so that a
            grid refused by its checks (``run_compare``'s ``on_open`` comes after them) draws nothing.
    """

    def __init__(self, runs: Sequence[tuple[Any, Any, int]], interval: float = 0.5, bar: bool = True,
                 lines: bool = True, file: Any = None, start: bool = True) -> None:
        import threading
        from pathlib import Path

        self.runs = [(spec, Path(folder), int(budget)) for spec, folder, budget in runs]
        self.total = sum(b for _, _, b in self.runs)
        self.lines = lines
        self.count = 0
        self._done: dict[int, int] = {}
        self._states: dict[int, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._options = (interval, bar, file)
        self.bar: Any = None
        self._thread: Any = None
        if start:
            self.open()

    def open(self) -> None:
        """Draw the bar and start polling the run folders (once; later calls do nothing)."""
        import threading

        from tqdm import tqdm  # third-party, only when a bar is shown

        if self.bar is not None:
            return
        interval, bar, file = self._options
        self.bar = tqdm(total=self.total, desc=f"{len(self.runs)} runs", unit="q", dynamic_ncols=True,
                        file=file if file is not None else sys.stderr, disable=not bar,
                        smoothing=0.05, mininterval=0.5)
        self._thread = threading.Thread(target=self._poll_loop, args=(interval,), daemon=True,
                                        name="mango-grid-progress")
        self._thread.start()

    def queries(self) -> int:
        """Queries done over the grid now: finished runs count their budget, others their journal."""
        total = 0
        for i, (_, folder, budget) in enumerate(self.runs):
            if i in self._done:
                total += self._done[i]
            else:
                total += min(budget, journal_queries(folder / "journal.jsonl", self._states.setdefault(i, {})))
        return total

    def poll(self) -> int:
        """Read the journals once and move the bar (once opened); returns the queries done."""
        with self._lock:
            if self.bar is None:
                return self.queries()
            n = self.queries()
            if n > self.bar.n:
                self.bar.update(n - self.bar.n)
            return n

    def _poll_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a progress bar must never end the grid
                pass

    def __call__(self, spec: Any, status: str, info: Any) -> None:
        self.open()
        with self._lock:
            self.count += 1
            for i, (s, _, budget) in enumerate(self.runs):
                if s is spec or getattr(s, "id", None) == getattr(spec, "id", object()):
                    self._done[i] = budget
                    break
            if status == "done":
                name, rep = info.get("reported_name", "value"), info.get("best_reported")
                best = (f"best {info['best_value']:.5g}" if name == "value" or rep is None
                        else f"{name} {rep:.5g} (score {info['best_value']:.5g})")
                run_s = info.get("seconds")
                setup = isinstance(run_s, (int, float)) and info["wall"] - run_s >= 0.5
                msg = f"{best} in {info['wall']:.1f} s"
                if setup:
                    msg += (f" ({run_s:.1f} s searching, as the report counts it; the rest is loading models and "
                            "writing files)")
            elif status == "skip":
                msg = "finished before, skipped"
            else:
                msg = f"ERROR {info}"
            if self.lines:
                line = f"[{self.count}/{len(self.runs)}] {spec.unit} | {spec.optimizer} | seed {spec.seed}: {msg}"
                if self.bar.disable:
                    print(line, flush=True)
                else:
                    self.bar.write(line, file=sys.stdout)
        self.poll()

    def close(self) -> None:
        """Stop polling, bring the bar to its final count and close it (nothing when it was never opened)."""
        if self.bar is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()
        self.bar.close()

    def __enter__(self) -> "GridProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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

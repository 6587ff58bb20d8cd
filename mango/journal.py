"""Append-only journal of evaluated batches and optimizer checkpoints, for crash-safe resume.

A run folder holds::

    run.json          the run's config (written once; a resume with another config is refused
                      once a batch is recorded)
    journal.jsonl     one line per evaluated batch, flushed and fsynced *before* the
                      optimizer is told: {"batch", "I", "y", "t", "time", "external"}
    checkpoint.npz    the optimizer's state_dict after batch ``batch`` (atomic replace)
    identity.json     what identifies the run beyond ``run.json`` (objective, optimizer; see
                      :func:`mango.loop.run_identity`); a resume of another run is refused
    .lock             the OS file lock (``flock``) a writing run holds for its whole life

A process killed at any moment leaves at most one torn last line (bytes after the
last newline), which :meth:`Journal.open` cuts off; the batch it belonged to is
asked again (the optimizer is deterministic given its seed) and evaluated once
more, so every recorded query appears exactly once. Damage anywhere else (a bad
line followed by more lines, a row out of order, a row of the wrong shape) is
never cut: reading raises :class:`~mango.errors.MangoError` naming the line and
leaves the file as it is. An unreadable checkpoint is ignored (with a warning):
the run replays from the journal instead.

One writer at a time: :class:`RunLock` (an exclusive ``flock`` on ``.lock``, released
by the OS when the process ends, however it ends) refuses a second process that
would write to the same folder. Readers (reports, the live view) take no lock.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, MangoError

__all__ = ["Journal", "JournalRow", "read_journal", "read_jsonl", "RunLock", "atomic_write", "save_state",
           "load_state", "cut_torn_tail", "config_conflict", "same_run_config", "lock_holder_alive", "LOCK_NAME", "IDENTITY_NAME"]

LOCK_NAME = ".lock"
IDENTITY_NAME = "identity.json"

log = logging.getLogger(__name__)


@dataclass
class JournalRow:
    """One evaluated batch: codes ``I [k, d]``, values ``y [k]``, elapsed run time ``t`` (s)."""

    batch: int
    I: np.ndarray
    y: np.ndarray
    t: float
    time: float
    external: int = 0
    extra: dict[str, Any] | None = None


class RunLock:
    """An exclusive OS lock on a run folder (``flock`` on ``folder/.lock``), held while a run writes there.

    The OS releases it when the holding process ends, however it ends (exit, crash,
    SIGKILL), so a stale lock never blocks a resume. Readers (reports, the live
    view) never take it. Use :meth:`acquire`; :meth:`release` (or the context
    manager) gives it back.
    """

    def __init__(self, folder: Path, fd: int | None) -> None:
        self.folder = folder
        self._fd = fd

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> "RunLock":
        """Lock ``folder`` (created if missing) for this process, without waiting.

        Raises:
            ConfigError: another process holds the folder (the message names the folder and that process).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: no OS lock available
            log.warning("no fcntl on this platform: run folder %s is not locked against a second writer", folder)
            return cls(folder, None)
        path = folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise ConfigError(
                f"run folder {folder} is in use: {who} holds its lock ({path}) and is writing there; "
                "wait for it to finish, or use another output folder") from None
        except OSError as exc:  # a file system without locks (some network mounts): run unlocked, say so
            os.close(fd)
            log.warning("cannot lock run folder %s (%s): it is not protected against a second writer", folder, exc)
            return cls(folder, None)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(folder, fd)

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder_alive(folder: str | os.PathLike) -> bool | None:
    """Whether the process that last took ``folder``'s lock (its pid is in the lock file) still exists on this
    machine; ``None`` when that cannot be told (no lock file, no pid). Reads only: a reader never takes the lock.
    A reused pid reads as alive, so a ``False`` is certain and a ``True`` is not."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) <= 0:
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON values differ (``prefix`` for a non-dict difference at the top)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(name)
            else:
                out.extend(_diff_keys(old[k], new[k], name))
        return out
    return [] if old == new else [prefix or "(value)"]


def _at(d: Any, key: str) -> Any:
    """The value at dotted ``key`` of nested dicts ``d``, or :data:`_MISSING`."""
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


def _shown(old: Any, new: Any, key: str) -> str:
    """``key`` with its recorded and asked values when both are short scalars (``"budget 300 -> 500"``)."""
    a, b = _at(old, key), _at(new, key)
    plain = (int, float, str, bool, type(None))
    if isinstance(a, plain) and isinstance(b, plain) and len(repr(a)) + len(repr(b)) <= 80:
        return f"{key} {a!r} -> {b!r}"
    if (a is _MISSING) != (b is _MISSING) and isinstance(b if a is _MISSING else a, plain):
        shown = lambda v: "not set (its default)" if v is _MISSING else repr(v)   # noqa: E731
        if len(shown(a)) + len(shown(b)) <= 80:
            return f"{key} {shown(a)} -> {shown(b)}"
    return key


_MISSING = object()


#: refusals that come only from a change of a default a run did not spell: the refused key as :func:`_shown`
#: words it -> how to resume such a run (the default optimizer: elite until 2026-11-28, layout-elite since;
#: layout-elite's first layout step: 0.5 until the evening of 2026-11-28, 0.3 since)
_DEFAULT_CHANGES = {
    "optimizer.name 'elite' -> 'layout-elite'":
        "the default optimizer changed from elite to layout-elite: a run started with the old default resumes "
        "with --optimizer elite (optimizer = \"elite\" in a TOML, optimizer=\"elite\" in mango.maximize)",
    "optimizer.sigma 0.5 -> 0.3":
        "the default layout-elite's first layout step changed from 0.5 to 0.3: a run started before resumes "
        "with --opt-param sigma=0.5 (sigma = 0.5 in its TOML's [optimizer], params={'sigma': 0.5} in "
        "mango.maximize)",
}


def default_change_hint(shown: list[str]) -> str:
    """``"; <how to resume>"`` for each refused key in ``shown`` (the keys as :func:`_shown` words them) that
    a change of a default explains (:data:`_DEFAULT_CHANGES`); ``""`` when none does."""
    return "".join(f"; {_DEFAULT_CHANGES[key]}" for key in shown if key in _DEFAULT_CHANGES)


def config_conflict(folder: str | Path, config: dict[str, Any]) -> list[str]:
    """The keys in which ``folder``'s recorded ``run.json`` differs from ``config`` when a run there would be
    refused for it (:meth:`Journal.open`: a folder with a recorded batch), each with its recorded and asked
    values when they are short (``"budget 20 -> 40"``); ``[]`` when it would be taken.
    Reads only (a grid checks every run this way before it writes anything)."""
    folder = Path(folder)
    path = folder / "run.json"
    if not path.exists() or _nothing_recorded(folder):
        return []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []           # Journal.open names an unreadable run.json itself
    canon = json.loads(json.dumps(config, default=str))
    return [] if old == canon else [_shown(old, canon, k) for k in _config_diffs(old, canon)]


#: the run config's component tables, each named as the registry kind whose factory defaults it takes
_COMPONENTS = ("generator", "target", "optimizer", "problem")


def same_run_config(old: Any, new: Any) -> bool:
    """Whether two run configs (as JSON values) describe the same run: equal, or different only in keys one of
    them sets to the component's registered default (see :func:`config_conflict`)."""
    return old == new or (isinstance(old, dict) and isinstance(new, dict) and not _config_diffs(old, new))


def _config_diffs(old: Any, new: Any) -> list[str]:
    """:func:`_diff_keys` of two run configs, less the keys set on one side only to the value the component
    would take anyway (``levels = 16`` for a generator whose default is 16; ``batch_size`` the optimizer's
    default): a resume that spells out a default is the same run."""
    return [k for k in _diff_keys(old, new) if not _spelled_default(old, new, k)]


def _spelled_default(old: Any, new: Any, key: str) -> bool:
    """Whether ``key`` is set in only one of the configs ``old``/``new``, to its component's registered default."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return False
    parts = key.split(".")
    if parts == ["batch_size"]:
        table, param = "optimizer", "batch_size"
    elif len(parts) == 2 and parts[0] in _COMPONENTS and parts[1] != "device":
        table, param = parts     # not device: a config's top-level device fills only a component's unset one
    else:
        return False
    here = [v for v in (_at(old, key), _at(new, key)) if v is not _MISSING and v is not None]
    if len(here) != 1:      # set (to something) on both sides, or on neither
        return False
    value = here[0]
    if parts == ["batch_size"] and any(not isinstance(c.get("budget"), int) or c["budget"] < value
                                       for c in (old, new)):
        return False        # a batch size spelled above the budget is cut to it; the optimizer's own is not
    names = {c[table].get("name") if isinstance(c.get(table), dict) else c.get(table) for c in (old, new)}
    if len(names) != 1 or not isinstance(next(iter(names)), str):
        return False
    from . import registry

    try:
        defaults = registry.describe_params(registry.get(table, next(iter(names))))
    except Exception:  # noqa: BLE001 - a component no longer registered: compare as written
        return False
    return param in defaults and json.loads(json.dumps(defaults[param], default=str)) == value


#: fingerprints of the objective added after folders were first recorded (:mod:`mango.fingerprint`): a folder
#: without one (or with None: weights not readable then, e.g. a lazy module before its first forward pass)
#: is compared without it. ``transform`` is recorded since ``structure`` is: a folder recorded with a structure
#: mark but no transform mark ran without a transform, and is refused for a call with one; a folder older
#: than both marks is compared without them (it cannot tell which transform it ran with).
_LATER_MARKS = ("weights", "structure")


def _unmarked(old: Any, new: Any) -> list[str]:
    """The keys of :data:`_LATER_MARKS` that the identity ``old`` lacks (or holds as None) while ``new`` has
    them, and ``transform`` when ``old`` predates the structure mark too: such a folder is compared without
    them."""
    if not (isinstance(old, dict) and isinstance(old.get("objective"), dict)
            and isinstance(new.get("objective"), dict)):
        return []
    o, n = old["objective"], new["objective"]
    out = [k for k in _LATER_MARKS if o.get(k) is None and k in n]
    if "structure" not in o and "transform" not in o and "transform" in n:
        out.append("transform")
    return out


class Journal:
    """The journal of one run folder. Use :meth:`open`."""

    def __init__(self, folder: Path, rows: list[JournalRow]) -> None:
        self.folder = folder
        self.rows = rows
        self._fh = open(folder / "journal.jsonl", "a", encoding="utf-8")

    @classmethod
    def open(cls, folder: str | os.PathLike, config: dict[str, Any] | None = None,
             identity: dict[str, Any] | None = None, free_keys: Sequence[str] = ()) -> "Journal":
        """Open (or create) the journal in ``folder``; read and repair existing rows.

        The caller should hold the folder's :class:`RunLock` (:func:`mango.loop.run_loop` does).

        Args:
            config: the run's config, kept in ``run.json``.
            identity: what else identifies the run (objective, optimizer), kept in ``identity.json``;
                a folder without one (written before it existed) adopts it.

        Raises:
            ConfigError: ``folder`` holds a saved result (``result.json`` without ``run.json``, e.g. from
                :meth:`mango.results.Result.save`), which a run would overwrite; or ``config`` or
                ``identity`` differs from the one the folder was started with
                (the message names the differing keys), unless the folder holds nothing recorded yet
                (only these two files, an empty journal and its lock): then the new ones replace them.
                Config keys in ``free_keys`` may also change while the journal holds no batch, whatever else
                the folder holds (a rig's channel selection: its presentation log keeps every channel).
            MangoError: the journal is damaged other than by a torn last line (the message names the line).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if config is not None and not (folder / "run.json").exists() and (folder / "result.json").exists():
            # what Result.save / Visualization.save write: a result, not a run to resume; a run here would
            # overwrite it (and, seeing it as finished, never write its own final files)
            raise ConfigError(f"{folder} holds a saved result (result.json without the run.json of a run folder, "
                              "e.g. from res.save()); a run there would overwrite it: use another folder")
        fresh = _nothing_recorded(folder)
        for name, value, what in (("run.json", config, "config"), (IDENTITY_NAME, identity, "objective/optimizer")):
            if value is None:
                continue
            path = folder / name
            canon = json.loads(json.dumps(value, default=str))
            if path.exists():
                try:
                    old = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise MangoError(f"{path} is unreadable ({exc}); cannot tell which run folder {folder} holds") \
                        from None
                cmp = canon
                skip = _unmarked(old, canon) if name == IDENTITY_NAME else []
                if skip:
                    # recorded without a usable fingerprint: compare the rest
                    cmp = {**canon, "objective": {k: v for k, v in canon["objective"].items() if k not in skip}}
                    old = {**old, "objective": {k: v for k, v in old["objective"].items() if k not in skip}}
                keys = _config_diffs(old, cmp) if name == "run.json" else _diff_keys(old, cmp)
                free = (name == "run.json" and keys and set(keys) <= set(free_keys) and not _has_batches(folder))
                if keys and (fresh or free):
                    # a run that stopped before its first batch was recorded (e.g. a target that does not
                    # take the generator's images): nothing to lose, the corrected settings take the folder
                    log.info("run folder %s holds no recorded batch; it is started again with the new %s",
                             folder, what)
                    atomic_write(path, json.dumps(canon, indent=2, sort_keys=True).encode())
                elif keys:
                    why = "".join(text for key, text in (
                        ("objective.weights", "; the generator's or model's weights differ from those the run "
                                              "searched (retrained, or another checkpoint)"),
                        ("objective.structure", "; the generator's or model's layers differ from those the run "
                                                "searched (another activation, pooling or layer)"),
                        ("objective.transform", "; the transform differs from the one the run used (or one of "
                                                "the two calls has none)")) if key in keys)
                    if "budget" in keys:
                        why += ("; a run's budget cannot be changed in its folder (resume replays its asks, and "
                                "some optimizers plan by the budget)")
                    shown = [_shown(old, cmp, k) for k in keys]
                    raise ConfigError(
                        f"run folder {folder} was started with another {what} (differs in: "
                        f"{', '.join(shown)}){why}{default_change_hint(shown)}; "
                        "use a new folder or the same settings to resume")
            else:
                atomic_write(path, json.dumps(canon, indent=2, sort_keys=True).encode())
        rows = _repair_rows(folder / "journal.jsonl")
        return cls(folder, rows)

    def append(self, I: np.ndarray, y: np.ndarray, t: float, external: int = 0,
               extra: dict[str, Any] | None = None) -> JournalRow:
        """Append a batch and make it durable (flush + fsync) before returning."""
        row = JournalRow(len(self.rows), np.asarray(I, dtype=np.int64), np.asarray(y, dtype=np.float64),
                         float(t), time.time(), int(external), extra)
        rec = {"batch": row.batch, "I": row.I.tolist(), "y": row.y.tolist(), "t": row.t, "time": row.time,
               "external": row.external}
        if extra:
            rec["extra"] = extra
        self._fh.write(json.dumps(rec, allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.append(row)
        return row

    def close(self) -> None:
        self._fh.close()

    # -- checkpoints -----------------------------------------------------
    def save_checkpoint(self, batch: int, state: dict[str, Any]) -> None:
        """Write the optimizer state after journal row ``batch`` (atomic)."""
        save_state(self.folder / "checkpoint.npz", {"batch": batch, "state": state})

    def load_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """``(batch, state)`` of the last checkpoint, or ``None`` (none, or unreadable: then a warning is
        logged and the run replays from the journal, which holds everything the checkpoint summarises)."""
        path = self.folder / "checkpoint.npz"
        if not path.exists():
            return None
        try:
            data = load_state(path)
            batch = data["batch"]
            if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0 or not isinstance(
                    data["state"], dict):
                raise ValueError(f"not a checkpoint (batch {batch!r})")
            return batch, data["state"]
        except Exception as exc:  # noqa: BLE001 - any damage: the journal holds everything the checkpoint does
            log.warning("checkpoint %s is unreadable (%s: %s); replaying the run from its journal instead",
                        path, type(exc).__name__, exc)
            return None


def _has_batches(folder: Path) -> bool:
    """Whether ``folder``'s journal holds anything (a batch told to an optimizer)."""
    path = folder / "journal.jsonl"
    return path.exists() and path.stat().st_size > 0


def _nothing_recorded(folder: Path) -> bool:
    """Whether ``folder`` holds only what a run writes before its first batch: its config, identity,
    an empty journal and its lock (no batch, checkpoint, result or presentation log)."""
    for p in folder.iterdir():
        if p.name == "journal.jsonl":
            if p.stat().st_size > 0:
                return False
        elif p.name not in ("run.json", IDENTITY_NAME, ".lock"):
            return False
    return True


def read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], int, int]:
    """``(records, good, size)`` of a JSON-lines log written one fsynced line at a time.

    ``records`` are ``(line number, parsed JSON)`` of every complete line; ``good`` is the
    byte length they fill, ``size`` the file size. Bytes after the last newline are a
    torn last line (a write cut short) and are not parsed, unless they hold a complete
    JSON value followed by more bytes (two lines merged by a lost newline: damage).

    Raises:
        MangoError: a complete line that is not JSON (names the line), or a merged last line.
    """
    if not path.exists():
        return [], 0, 0
    raw = path.read_bytes()
    out: list[tuple[int, Any]] = []
    pos = 0
    lineno = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        lineno += 1
        if end < 0:
            _check_torn(path, raw[pos:], lineno)
            break
        try:
            rec = json.loads(raw[pos:end].decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise MangoError(f"{path} is damaged at line {lineno} (not a JSON record: {_short(exc)}); only a "
                             "torn last line is repaired automatically, so nothing was cut: restore the file "
                             "or start a new run folder") from None
        out.append((lineno, rec))
        pos = end + 1
    return out, pos, len(raw)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_torn(path: Path, tail: bytes, lineno: int) -> None:
    """Raise unless ``tail`` (bytes after the last newline) can be a line whose write was cut short."""
    try:
        text = tail.decode("utf-8")
        _, end = json.JSONDecoder().raw_decode(text.lstrip())
    except (ValueError, RecursionError):
        return  # an incomplete (or garbled) record: what a torn write leaves
    if text.lstrip()[end:].strip():
        raise MangoError(f"{path} is damaged at line {lineno}: a complete record followed by more bytes without "
                         "a newline (two lines merged?); nothing was cut: restore the file or start a new run "
                         "folder")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def _row(path: Path, lineno: int, rec: Any, batch: int) -> JournalRow:
    """A validated :class:`JournalRow` from the parsed line ``lineno`` (expected to hold ``batch``)."""
    def bad(what: str) -> MangoError:
        return MangoError(f"journal {path} is damaged at line {lineno}: {what}; nothing was cut: restore the "
                          "file or start a new run folder")

    if not isinstance(rec, dict):
        raise bad(f"a {type(rec).__name__}, not a journal row")
    if rec.get("batch") != batch or not _is_int(rec.get("batch")):
        raise MangoError(f"journal {path} is out of order at line {lineno}: expected batch {batch}, "
                         f"found {rec.get('batch')!r}")
    y, I = rec.get("y"), rec.get("I")
    if not isinstance(y, list) or not all(_is_num(v) for v in y):
        raise bad("'y' is not a list of finite numbers")
    if (not isinstance(I, list) or len(I) != len(y) or not all(isinstance(r, list) for r in I)
            or len({len(r) for r in I}) > 1 or not all(_is_int(v) and v >= 0 for r in I for v in r)):
        raise bad(f"'I' is not a [{len(y)}, d] list of non-negative integers")
    for key in ("t", "time"):
        if not _is_num(rec.get(key)):
            raise bad(f"{key!r} is not a finite number")
    external = rec.get("external", 0)
    if not _is_int(external) or external < 0:
        raise bad("'external' is not a non-negative integer")
    extra = rec.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise bad("'extra' is not an object")
    try:
        codes = np.asarray(I, dtype=np.int64).reshape(len(y), -1)
    except (OverflowError, ValueError):
        raise bad("'I' holds integers out of range") from None
    return JournalRow(batch, codes, np.asarray(y, dtype=np.float64), float(rec["t"]), float(rec["time"]),
                      external, extra)


def _parse_rows(path: Path) -> tuple[list[JournalRow], int, int]:
    """``(rows, good, size)``: the complete rows of a journal file, the byte length they fill and the file size.

    Raises:
        MangoError: damage other than a torn last line (names the line).
    """
    recs, good, size = read_jsonl(path)
    rows = [_row(path, lineno, rec, i) for i, (lineno, rec) in enumerate(recs)]
    return rows, good, size


def read_journal(folder: str | os.PathLike) -> list[JournalRow]:
    """The complete rows of ``folder/journal.jsonl``, read-only (a report or a viewer uses this).

    A torn last line (a run killed mid-write, or a run still writing) is left out and
    left in place: only :meth:`Journal.open`, which resumes the run, cuts it off.
    A missing journal gives ``[]``.

    Raises:
        MangoError: a damaged journal (a bad line before the last, rows out of order, wrong shapes).
    """
    rows, good, size = _parse_rows(Path(folder) / "journal.jsonl")
    if good < size:
        log.debug("journal in %s: ignoring an incomplete last line (%d bytes)", folder, size - good)
    return rows


def cut_torn_tail(path: Path, good: int, size: int) -> None:
    """Cut the torn last line (bytes ``good..size``) of a JSON-lines log, with a warning (resume only)."""
    if good < size:
        log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write", path, size - good)
        with open(path, "r+b") as fh:
            fh.truncate(good)
            fh.flush()
            os.fsync(fh.fileno())


def _repair_rows(path: Path) -> list[JournalRow]:
    """The rows of ``path``, cutting off a torn last line left by an interrupted write (resume only)."""
    rows, good, size = _parse_rows(path)
    cut_torn_tail(path, good, size)
    return rows


# -- state (de)serialisation: nested dicts/lists of arrays and JSON values -> NPZ ---------
def _split(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` with every array moved into ``arrays`` (replaced by ``{"__array__": key}``)."""
    if isinstance(obj, np.ndarray) or type(obj).__module__.startswith("jax"):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(obj)
        return {"__array__": key}
    if isinstance(obj, dict):
        return {str(k): _split(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save a nested state (arrays + JSON values, no pickle) to ``path`` atomically."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    meta = _split(state, arrays)
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write(path, buf.getvalue())


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Inverse of :func:`save_state` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["__meta__"]).decode())
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
    return _join(meta, arrays)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a hidden temporary file beside it (invisible to a rig
    watching the folder), flushed and fsynced, then renamed over ``path``."""
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

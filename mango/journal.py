"""Append-only journal of evaluated batches and optimizer checkpoints, for crash-safe resume.

A run folder holds::

    run.json          the run's config (written once; a resume with another config is refused)
    journal.jsonl     one line per evaluated batch, flushed and fsynced *before* the
                      optimizer is told: {"batch", "I", "y", "t", "time", "external"}
    checkpoint.npz    the optimizer's state_dict after batch ``batch`` (atomic replace)

A process killed at any moment leaves at most one torn last line, which
:meth:`Journal.open` cuts off; the batch it belonged to is asked again (the
optimizer is deterministic given its seed) and evaluated once more, so every
recorded query appears exactly once.
"""
from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, MangoError

__all__ = ["Journal", "JournalRow", "read_journal", "atomic_write", "save_state", "load_state"]

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


class Journal:
    """The journal of one run folder. Use :meth:`open`."""

    def __init__(self, folder: Path, rows: list[JournalRow]) -> None:
        self.folder = folder
        self.rows = rows
        self._fh = open(folder / "journal.jsonl", "a", encoding="utf-8")

    @classmethod
    def open(cls, folder: str | os.PathLike, config: dict[str, Any] | None = None) -> "Journal":
        """Open (or create) the journal in ``folder``; read and repair existing rows.

        Raises:
            ConfigError: ``config`` differs from the one the folder was started with
                (the message names the differing keys).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg_path = folder / "run.json"
        if config is not None:
            canon = json.loads(json.dumps(config, default=str))
            if cfg_path.exists():
                old = json.loads(cfg_path.read_text())
                if old != canon:
                    keys = sorted(k for k in set(old) | set(canon) if old.get(k) != canon.get(k))
                    raise ConfigError(
                        f"run folder {folder} was started with another config (differs in: {', '.join(keys)}); "
                        "use a new folder or the same config to resume"
                    )
            else:
                atomic_write(cfg_path, json.dumps(canon, indent=2, sort_keys=True).encode())
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
        """``(batch, state)`` of the last checkpoint, or ``None``."""
        path = self.folder / "checkpoint.npz"
        if not path.exists():
            return None
        data = load_state(path)
        return int(data["batch"]), data["state"]


def _parse_rows(path: Path) -> tuple[list[JournalRow], int, int]:
    """``(rows, good, size)``: the complete rows of a journal file, the byte length they fill and the file size."""
    if not path.exists():
        return [], 0, 0
    raw = path.read_bytes()
    rows: list[JournalRow] = []
    good = pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        if end < 0:
            break  # torn last line (no newline): written partly before a kill
        try:
            rec = json.loads(raw[pos:end])
        except json.JSONDecodeError:
            break
        if rec.get("batch") != len(rows):
            raise MangoError(f"journal {path} is out of order at line {len(rows) + 1}")
        rows.append(JournalRow(rec["batch"], np.asarray(rec["I"], dtype=np.int64).reshape(len(rec["y"]), -1),
                               np.asarray(rec["y"], dtype=np.float64), rec["t"], rec["time"],
                               rec.get("external", 0), rec.get("extra")))
        pos = good = end + 1
    return rows, good, len(raw)


def read_journal(folder: str | os.PathLike) -> list[JournalRow]:
    """The complete rows of ``folder/journal.jsonl``, read-only (a report or a viewer uses this).

    A torn last line (a run killed mid-write, or a run still writing) is left out and
    left in place: only :meth:`Journal.open`, which resumes the run, cuts it off.
    A missing journal gives ``[]``.

    Raises:
        MangoError: rows out of order (not a journal MANGO wrote).
    """
    rows, good, size = _parse_rows(Path(folder) / "journal.jsonl")
    if good < size:
        log.debug("journal in %s: ignoring an incomplete last line (%d bytes)", folder, size - good)
    return rows


def _repair_rows(path: Path) -> list[JournalRow]:
    """The rows of ``path``, cutting off a torn last line left by an interrupted write (resume only)."""
    rows, good, size = _parse_rows(path)
    if good < size:
        log.warning("journal %s: cutting a torn last line (%d bytes) left by an interrupted write",
                    path, size - good)
        with open(path, "r+b") as fh:
            fh.truncate(good)
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

"""File-drop transport (the XDream convention): images and a manifest in a folder, a response file back.

Folder layout (``root``)::

    stimuli/b000012_i00001200.png    one PNG per image: block id and image id in the name
    blocks/block_000012.json         manifest, written last and atomically (tmp + rename):
                                     {"protocol": "mango-rig", "version": 1, "type": "block",
                                      "block": 12, "attempt": 0, "run": "<run id>",
                                      "image_ids": [...], "files": [...], "shape": [n, H, W, C],
                                      "repeats": 2, "order": [...]}
    responses/block_000012.npz       the rig's answer, one of:
              block_000012.csv         .npz: arrays image_ids int [P], responses float [P, ch]
              block_000012.mat           (optional: block, run)
                                       .csv: header "image_id,ch0,ch1,..." then one row per presentation
                                       .mat: HDF5 (MATLAB -v7.3) datasets image_ids [P] and
                                           responses [P, ch] (or [ch, P], MATLAB's column-major view)

The search side waits up to ``timeout`` for a response file, re-reads unreadable
or half-written files until then, and validates block id (when present), run id
(when present), image ids and finiteness. A file that parses but is wrong is moved
to ``responses/rejected/`` and the block is re-requested (``attempt`` + 1 in a new
manifest). Accepted files are moved to ``responses/done/``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .protocol import PROTOCOL, VERSION, Block, ProtocolError, Reply, RigError, validate_reply_for

__all__ = ["FileDropClient", "FORMATS", "read_response", "write_response", "write_block", "read_block",
           "manifest_path", "response_paths"]

log = logging.getLogger(__name__)
FORMATS = ("npz", "csv", "mat")


def manifest_path(root: Path, block: int) -> Path:
    return root / "blocks" / f"block_{block:06d}.json"


def response_paths(root: Path, block: int) -> list[Path]:
    return [root / "responses" / f"block_{block:06d}.{ext}" for ext in FORMATS]


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_block(root: Path, block: Block, run: str = "") -> Path:
    """Write a block's PNGs, then its manifest (atomically, last). Returns the manifest path."""
    from .protocol import images_to_png

    root = Path(root)
    for sub in ("stimuli", "blocks", "responses"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    files = []
    for iid, png in zip(block.image_ids, images_to_png(np.asarray(block.images, dtype=np.uint8))):
        name = f"b{block.block:06d}_i{int(iid):08d}.png"
        if not (root / "stimuli" / name).exists():
            _atomic(root / "stimuli" / name, png)
        files.append(name)
    man = {"protocol": PROTOCOL, "version": VERSION, "type": "block", "block": int(block.block),
           "attempt": int(block.attempt), "run": run, "image_ids": [int(i) for i in block.image_ids],
           "files": files, "shape": list(np.shape(block.images)), "repeats": int(block.repeats),
           "order": None if block.order is None else [int(i) for i in block.order]}
    path = manifest_path(root, block.block)
    _atomic(path, json.dumps(man).encode())
    return path


def read_block(path: Path) -> tuple[Block, str]:
    """Rig side: a manifest and its PNGs -> (Block, run id); :class:`ProtocolError` if incomplete."""
    from .protocol import png_to_images

    path = Path(path)
    try:
        man = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"manifest {path.name} unreadable: {exc}") from None
    if man.get("protocol") != PROTOCOL or man.get("version") != VERSION:
        raise ProtocolError(f"manifest {path.name}: unknown protocol {man.get('protocol')!r} v{man.get('version')!r}")
    n, h, w, c = man["shape"]
    frames = []
    for f in man["files"]:
        p = path.parent.parent / "stimuli" / Path(f).name
        frames.append(p.read_bytes())
    images = png_to_images(frames, (h, w, c))
    order = None if man.get("order") is None else np.asarray(man["order"], dtype=np.int64)
    return Block(int(man["block"]), np.asarray(man["image_ids"], dtype=np.int64), images, int(man["repeats"]),
                 order, int(man.get("attempt", 0))), str(man.get("run", ""))


def write_response(path: Path, reply: Reply, run: str = "", atomic: bool = True) -> None:
    """Rig side: write a response file in the format its suffix names (.npz, .csv, .mat)."""
    path = Path(path)
    ext = path.suffix.lstrip(".")
    ids = np.asarray(reply.image_ids, dtype=np.int64)
    resp = np.asarray(reply.responses, dtype=np.float64)
    if ext == "npz":
        buf = io.BytesIO()
        np.savez(buf, image_ids=ids, responses=resp, block=np.int64(reply.block), run=np.str_(run))
        data = buf.getvalue()
    elif ext == "csv":
        buf = io.StringIO()
        wr = csv.writer(buf)
        wr.writerow(["image_id"] + [f"ch{j}" for j in range(resp.shape[1])])
        for i, row in zip(ids, resp):
            wr.writerow([int(i)] + [repr(float(v)) for v in row])
        data = buf.getvalue().encode()
    elif ext == "mat":
        import h5py

        tmp = path.with_name("." + path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f["image_ids"] = ids
            f["responses"] = resp
            f.attrs["block"] = int(reply.block)
            f.attrs["run"] = run
        data = tmp.read_bytes()
        tmp.unlink()
    else:
        raise ConfigError(f"unknown response format {ext!r}; valid choices: {', '.join(FORMATS)}")
    if atomic:
        _atomic(path, data)
    else:
        path.write_bytes(data)


def read_response(path: Path) -> tuple[Reply, dict[str, Any]]:
    """Search side: parse a response file -> (Reply, {"block": ..., "run": ...} when the file says).

    Raises:
        ProtocolError: unreadable, half-written or inconsistent file (the reason is named).
    """
    path = Path(path)
    ext = path.suffix.lstrip(".")
    meta: dict[str, Any] = {}
    try:
        if ext == "npz":
            with np.load(path, allow_pickle=False) as d:
                ids, resp = d["image_ids"], d["responses"]
                if "block" in d.files:
                    meta["block"] = int(d["block"])
                if "run" in d.files:
                    meta["run"] = str(d["run"])
        elif ext == "csv":
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
            if not rows or not rows[0] or rows[0][0].strip() != "image_id":
                raise ProtocolError(f"{path.name}: first line must be 'image_id,ch0,...'")
            ncol = len(rows[0])
            body = [r for r in rows[1:] if r]
            if any(len(r) != ncol for r in body):
                raise ProtocolError(f"{path.name}: rows must have {ncol} columns (half-written file?)")
            ids = np.asarray([int(r[0]) for r in body], dtype=np.int64)
            resp = np.asarray([[float(v) for v in r[1:]] for r in body], dtype=np.float64).reshape(len(body), ncol - 1)
        elif ext == "mat":
            import h5py

            with h5py.File(path, "r") as f:
                ids = np.asarray(f["image_ids"]).reshape(-1)
                resp = np.asarray(f["responses"], dtype=np.float64)
                if "block" in f.attrs:
                    meta["block"] = int(f.attrs["block"])
                if "run" in f.attrs:
                    r = f.attrs["run"]
                    meta["run"] = r.decode() if isinstance(r, bytes) else str(r)
            if resp.ndim == 1:
                resp = resp[:, None]
            if resp.shape[0] != len(ids) and resp.shape[1] == len(ids):
                resp = resp.T  # MATLAB's column-major [ch, P] view
        else:
            raise ProtocolError(f"unknown response format {ext!r}; valid choices: {', '.join(FORMATS)}")
    except ProtocolError:
        raise
    except Exception as exc:  # zip, h5py, csv and value errors of a half-written file
        raise ProtocolError(f"{path.name} unreadable ({exc.__class__.__name__}: {exc})") from None
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.number) or not np.all(np.equal(np.mod(ids, 1), 0)):
        raise ProtocolError(f"{path.name}: image ids must be integers")
    resp = np.asarray(resp, dtype=np.float64)
    if resp.ndim != 2 or resp.shape[0] != len(ids) or resp.shape[0] == 0:
        raise ProtocolError(f"{path.name}: responses shape {resp.shape} does not match {len(ids)} image ids")
    if not np.isfinite(resp).all():
        raise ProtocolError(f"{path.name}: responses hold NaN or inf")
    return Reply(int(meta.get("block", -1)), ids.astype(np.int64), resp), meta


class FileDropClient:
    """Search side of the file-drop protocol.

    Args:
        root: the shared folder (created if missing).
        timeout: seconds to wait for a response file per attempt.
        retries: re-requests after the first attempt; then :class:`RigError`.
        backoff: extra waiting before re-request ``k``: ``backoff * 2**k`` s (capped at ``max_backoff``).
        poll: seconds between looks into the folder.
        run: run id written into manifests; a response that names another run is rejected.
    """

    def __init__(self, root: str | os.PathLike, *, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 max_backoff: float = 10.0, poll: float = 0.05, run: str = "") -> None:
        if not float(timeout) > 0:
            raise ConfigError(f"rig timeout must be > 0 seconds, got {timeout!r}")
        if int(retries) < 0:
            raise ConfigError(f"rig retries must be >= 0, got {retries!r}")
        self.root = Path(root)
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.max_backoff, self.poll, self.run = float(max_backoff), float(poll), str(run)
        self.ignored: list[dict[str, Any]] = []
        for sub in ("stimuli", "blocks", "responses", "responses/done", "responses/rejected"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Nothing to release (for symmetry with the socket client)."""

    def _reject(self, path: Path, why: str, block: int) -> None:
        log.warning("file-drop %s: rejected %s: %s", self.root, path.name, why)
        self.ignored.append({"block": block, "reason": why, "file": path.name})
        try:
            os.replace(path, self.root / "responses" / "rejected" / f"{path.name}.{int(time.time() * 1e6)}")
        except OSError:
            pass

    def _wait(self, block: Block, seconds: float) -> tuple[Reply | None, str | None]:
        deadline = time.monotonic() + seconds
        last_err: str | None = None
        while time.monotonic() < deadline:
            for path in response_paths(self.root, block.block):
                if not path.exists():
                    continue
                try:
                    reply, meta = read_response(path)
                except ProtocolError as exc:
                    last_err = str(exc)  # maybe half-written: read again on the next poll
                    continue
                try:
                    if meta.get("block", block.block) != block.block:
                        raise ProtocolError(f"file says block {meta['block']}, expected {block.block}")
                    if self.run and meta.get("run") not in (None, "", self.run):
                        raise ProtocolError(f"file is for run {meta['run']!r}, this run is {self.run!r}")
                    reply.block = block.block
                    validate_reply_for(reply, block)
                except ProtocolError as exc:
                    self._reject(path, str(exc), block.block)
                    return None, f"invalid response file: {exc}"
                os.replace(path, self.root / "responses" / "done" / path.name)
                return reply, None
            time.sleep(self.poll)
        if last_err:
            for path in response_paths(self.root, block.block):
                if path.exists():
                    self._reject(path, f"still unreadable after waiting: {last_err}", block.block)
            return None, f"response file unreadable: {last_err}"
        return None, None

    def present(self, block: Block) -> Reply:
        """Write ``block`` into the folder and return the rig's validated response."""
        failures: list[str] = []
        for attempt in range(self.retries + 1):
            block.attempt = attempt
            write_block(self.root, block, self.run)
            wait = self.timeout + (min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) if attempt else 0.0)
            reply, why = self._wait(block, wait)
            if reply is not None:
                return reply
            why = why or f"no response file within {wait:.3g} s"
            failures.append(f"attempt {attempt}: {why}")
            log.warning("file-drop %s: block %d %s; %s", self.root, block.block, why,
                        "re-requesting" if attempt < self.retries else "giving up")
        raise RigError(f"no valid response file for block {block.block} in {self.root / 'responses'} after "
                       f"{self.retries + 1} attempts ({'; '.join(failures)}). Fix the rig and rerun the same "
                       "command: the run folder resumes without re-presenting recorded images.")

"""File-drop transport (the XDream convention): images and a manifest in a folder, a response file back.

Folder layout (``root``)::

    stimuli/b000012_i00001200.png    one PNG per image: block id and image id in the name
    blocks/block_000012.json         manifest, written last and atomically (tmp + rename):
                                     {"protocol": "mango-rig", "version": 1, "type": "block",
                                      "block": 12, "attempt": 0, "run": "<run id>",
                                      "image_ids": [...], "files": [...], "shape": [n, H, W, C],
                                      "repeats": 2, "order": [...]}
    responses/block_000012.npz       the rig's answer, one of:
              block_000012.csv         .npz: arrays image_ids int [P], responses float [P, ch],
              block_000012.mat           scalars block and run (the manifest's, echoed)
                                       .csv: lines "# block=12" and "# run=<run id>", then the
                                           header "image_id,ch0,ch1,..." and one row per presentation;
                                           every line ends with a newline
                                       .mat: HDF5 (MATLAB -v7.3) datasets image_ids [P] and
                                           responses [P, ch] (or [ch, P], MATLAB's column-major view),
                                           attributes block and run

``P = n * repeats``: each image of the block exactly ``repeats`` times. The run id
tells this run's responses from leftovers of an earlier run in the same folder
(block and image ids repeat across runs): a client with a run id ignores (logs,
leaves in place, keeps waiting for) a response file that names another run or no
run. It waits up to ``timeout`` for a response file, re-reads unreadable,
half-written or short files (fewer rows than ``P``) until then, and validates block
id, image ids and counts and finiteness. A file that parses but is wrong is moved
to ``responses/rejected/`` and the block is re-requested (``attempt`` + 1 in a new
manifest); so is a file still short or unreadable at the timeout. Accepted files
are moved to ``responses/done/``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..journal import atomic_write
from .protocol import (PROTOCOL, VERSION, Block, IncompleteReply, Limits, ProtocolError, Reply, RigError,
                       check_block_header, check_values, images_to_png, peek_header, png_to_images,
                       validate_reply_for, attempt_wait, check_waits)

__all__ = ["FileDropClient", "FORMATS", "read_response", "write_response", "write_block", "read_block",
           "manifest_path", "response_paths", "check_run_id"]

log = logging.getLogger(__name__)
FORMATS = ("npz", "csv", "mat")
_BLOCK_NAME = re.compile(r"^(?:block_(\d+)\.|b(\d+)_i\d+\.png$)")


def check_run_id(run: str) -> str:
    """A run id as written into manifests and response files: at most 200 printable characters, no newline."""
    run = str(run)
    if len(run) > 200 or any(not ch.isprintable() for ch in run) or run != run.strip():
        raise ConfigError(f"run id {run!r} is not usable; valid choices: up to 200 printable characters "
                          "without leading/trailing spaces, e.g. 'rig-3f9a2c'")
    return run


def manifest_path(root: Path, block: int) -> Path:
    return root / "blocks" / f"block_{block:06d}.json"


def response_paths(root: Path, block: int) -> list[Path]:
    """Where a response to ``block`` may be: ``responses/block_<block>.<npz|csv|mat>``, the block id
    zero-padded to six digits (``block_000012.npz``, what MANGO's manifests use) or not
    (``block_12.npz``); the padded names come first."""
    names = [f"block_{block:06d}.{ext}" for ext in FORMATS]
    names += [f"block_{block}.{ext}" for ext in FORMATS if f"block_{block}.{ext}" not in names]
    return [root / "responses" / n for n in names]


def write_block(root: Path, block: Block, run: str = "") -> Path:
    """Write a block's PNGs (replacing a different image left under the same name), then its manifest
    (atomically, last) naming ``run``. Returns the manifest path."""
    root = Path(root)
    for sub in ("stimuli", "blocks", "responses"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    files = []
    for iid, png in zip(block.image_ids, images_to_png(np.asarray(block.images, dtype=np.uint8))):
        name = f"b{block.block:06d}_i{int(iid):08d}.png"
        path = root / "stimuli" / name
        try:
            same = path.read_bytes() == png  # a resend: already there; another run's image: replaced
        except OSError:
            same = False
        if not same:
            atomic_write(path, png)
        files.append(name)
    man = {"protocol": PROTOCOL, "version": VERSION, "type": "block", "block": int(block.block), "dtype": "uint8",
           "attempt": int(block.attempt), "run": run, "image_ids": [int(i) for i in block.image_ids],
           "files": files, "shape": list(np.shape(block.images)), "repeats": int(block.repeats),
           "order": None if block.order is None else [int(i) for i in block.order]}
    path = manifest_path(root, block.block)
    atomic_write(path, json.dumps(man).encode())
    return path


def read_block(path: Path, limits: Limits = Limits()) -> tuple[Block, str]:
    """Rig side: a manifest and its PNGs -> (Block, run id).

    The manifest is untrusted input: its size, nesting, every field's type and the declared image
    shape are checked against ``limits`` (as a ``mango-rig/1`` block header is) before any file is read
    or any image allocated; ``files`` are names of files in ``stimuli/`` (only the base name is used).

    Raises:
        ProtocolError: unreadable or invalid manifest, or a missing/unreadable stimulus file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limits.max_header + 1)
    except OSError as exc:
        raise ProtocolError(f"manifest {path.name} unreadable: {exc}") from None
    if len(raw) > limits.max_header:
        raise ProtocolError(f"manifest {path.name} exceeds {limits.max_header} bytes")
    man = peek_header([raw], limits)
    if man["type"] != "block":
        raise ProtocolError(f"manifest {path.name}: type {man['type']!r}, expected 'block'")
    bid, (n, h, w, c), ids, repeats, order = check_block_header({"dtype": "uint8", **man}, limits)
    files = man.get("files")
    if not isinstance(files, list) or len(files) != n or not all(isinstance(f, str) and f for f in files):
        raise ProtocolError(f"manifest {path.name}: 'files' must be a list of {n} file names, got "
                            f"{str(files)[:100]}")
    run = man.get("run", "")
    if not isinstance(run, str):
        raise ProtocolError(f"manifest {path.name}: 'run' must be a string, got {type(run).__name__}")
    attempt = man.get("attempt", 0)
    attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 0 else 0
    frames = []
    for f in files:
        p = path.parent.parent / "stimuli" / Path(f).name
        try:
            frames.append(p.read_bytes())
        except OSError as exc:
            raise ProtocolError(f"manifest {path.name}: stimulus {Path(f).name} unreadable: {exc}") from None
    images = png_to_images(frames, (h, w, c))
    return Block(bid, ids, images, repeats, order, attempt), run


def write_response(path: Path, reply: Reply, run: str = "", atomic: bool = True) -> None:
    """Rig side: write a response file in the format its suffix names (.npz, .csv, .mat).

    ``reply.image_ids`` ``int [P]``, ``reply.responses`` ``float [P, ch]``; the file also names
    ``reply.block`` and ``run`` (the manifest's run id, echoed).
    """
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
        buf.write(f"# block={int(reply.block)}\n# run={check_run_id(run)}\n")
        wr = csv.writer(buf, lineterminator="\n")
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
        atomic_write(path, data)
    else:
        path.write_bytes(data)


def read_response(path: Path) -> tuple[Reply, dict[str, Any]]:
    """Search side: parse a response file -> (Reply, {"block": ..., "run": ...} when the file says).

    The reply has ``image_ids`` ``int64 [P]`` and ``responses`` ``float64 [P, ch]``; whether ``P`` is
    what the block asked for is :func:`validate_reply_for`'s business.

    Raises:
        IncompleteReply: unreadable, half-written (a CSV must end with a newline) or inconsistent file
            (it may still be being written: read it again later).
        ProtocolError: a complete file with values that can never be valid (NaN, inf, or beyond
            ``Limits.max_abs_value``): reject it at once.
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
                text = fh.read()
            if not text.endswith("\n"):
                raise IncompleteReply(f"{path.name} does not end with a newline (half-written file?)")
            lines = text.splitlines()
            while lines and lines[0].startswith("#"):  # "# key=value" lines before the header
                key, _, value = lines.pop(0)[1:].partition("=")
                key, value = key.strip(), value.strip()
                if key == "block":
                    meta["block"] = int(value)
                elif key == "run":
                    meta["run"] = value
            rows = list(csv.reader(lines))
            if not rows or not rows[0] or rows[0][0].strip() != "image_id":
                raise IncompleteReply(f"{path.name}: first line after the '# block=' / '# run=' lines must be "
                                    "'image_id,ch0,...'")
            ncol = len(rows[0])
            body = [r for r in rows[1:] if r]
            if any(len(r) != ncol for r in body):
                raise IncompleteReply(f"{path.name}: rows must have {ncol} columns (half-written file?)")
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
        raise IncompleteReply(f"{path.name} unreadable ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    try:
        ids = np.asarray(ids)
        resp = np.asarray(resp, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise IncompleteReply(f"{path.name}: arrays unreadable ({exc})") from None
    if not np.issubdtype(ids.dtype, np.number) or not np.all(np.equal(np.mod(ids, 1), 0)):
        raise IncompleteReply(f"{path.name}: image ids must be integers")
    if resp.ndim != 2 or resp.shape[0] != len(ids) or resp.shape[0] == 0:
        raise IncompleteReply(f"{path.name}: responses shape {resp.shape} does not match {len(ids)} image ids")
    check_values(resp, int(meta.get("block", -1)))
    return Reply(int(meta.get("block", -1)), ids.astype(np.int64), resp), meta


class FileDropClient:
    """Search side of the file-drop protocol.

    Args:
        root: the shared folder (created if missing).
        timeout: seconds to wait for a response file per attempt.
        retries: re-requests after the first attempt; then :class:`RigError`.
        backoff: extra waiting before re-request ``k``: ``backoff * 2**k`` s (capped at ``max_backoff``).
        poll: seconds between looks into the folder.
        run: run id written into manifests. When set, only response files naming this run are
            used: one naming another run or none (a leftover of an earlier run in the same folder)
            is logged, left in place and ignored while the client keeps waiting. ``""`` accepts
            any (for rigs that do not echo it; not safe with a reused folder).
    """

    def __init__(self, root: str | os.PathLike, *, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 max_backoff: float = 10.0, poll: float = 0.05, run: str = "") -> None:
        check_waits(timeout, retries, backoff)
        self.root = Path(root)
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.max_backoff, self.poll, self.run = float(max_backoff), float(poll), check_run_id(run)
        self.ignored: list[dict[str, Any]] = []
        self._stale: dict[str, tuple[int, int, int]] = {}  # file name -> (mtime_ns, size, inode) ignored
        for sub in ("stimuli", "blocks", "responses", "responses/done", "responses/rejected"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Nothing to release (for symmetry with the socket client)."""

    def first_free_block(self) -> int:
        """1 + the largest block id any manifest, stimulus or response file in the folder names (0 if none):
        a new run that starts there reuses no file name of an earlier one."""
        last = -1
        for sub in ("blocks", "stimuli", "responses", "responses/done", "responses/rejected"):
            for p in (self.root / sub).iterdir():
                m = _BLOCK_NAME.match(p.name)
                if m:
                    last = max(last, int(m.group(1) or m.group(2)))
        return last + 1

    def _reject(self, path: Path, why: str, block: int) -> None:
        log.warning("file-drop %s: rejected %s: %s", self.root, path.name, why)
        self.ignored.append({"block": block, "reason": why, "file": path.name})
        try:
            os.replace(path, self.root / "responses" / "rejected" / f"{path.name}.{int(time.time() * 1e6)}")
        except OSError:
            pass

    def _other_run(self, meta: dict[str, Any]) -> str | None:
        """Why a response file is not this run's (``None`` if it is, or the client has no run id)."""
        if not self.run:
            return None
        got = meta.get("run")
        if not got:
            return f"names no run (a mango-rig/1 rig echoes the manifest's run id), this run is {self.run!r}"
        if got != self.run:
            return f"is for run {got!r}, this run is {self.run!r}"
        return None

    def _wait(self, block: Block, seconds: float) -> tuple[Reply | None, str | None]:
        deadline = time.monotonic() + seconds
        last_err: str | None = None
        stale: list[str] = []
        while time.monotonic() < deadline:
            for path in response_paths(self.root, block.block):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if self._stale.get(path.name) == stamp:
                    continue  # the leftover seen before, unchanged
                try:
                    reply, meta = read_response(path)
                except IncompleteReply as exc:
                    last_err = str(exc)  # maybe half-written: read again on the next poll
                    continue
                except ProtocolError as exc:  # complete but never valid (NaN, inf, absurd): reject now
                    self._reject(path, str(exc), block.block)
                    return None, f"invalid response file: {exc}"
                other = self._other_run(meta)
                if other is not None:
                    why = f"{path.name} {other}: a leftover of another run? ignored, still waiting"
                    log.warning("file-drop %s: %s", self.root, why)
                    self.ignored.append({"block": block.block, "reason": why, "file": path.name})
                    self._stale[path.name] = stamp
                    stale.append(why)
                    continue
                try:
                    if meta.get("block", block.block) != block.block:
                        raise ProtocolError(f"file names block {meta['block']}, expected block {block.block}")
                    reply.block = block.block
                    validate_reply_for(reply, block)
                except IncompleteReply as exc:
                    last_err = f"{path.name}: {exc}"  # maybe still being written: read again
                    continue
                except ProtocolError as exc:
                    self._reject(path, str(exc), block.block)
                    return None, f"invalid response file: {exc}"
                self._stale.pop(path.name, None)
                os.replace(path, self.root / "responses" / "done" / path.name)
                return reply, None
            time.sleep(self.poll)
        if last_err:
            for path in response_paths(self.root, block.block):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if self._stale.get(path.name) != (st.st_mtime_ns, st.st_size, st.st_ino):
                    self._reject(path, f"still incomplete or unreadable after {seconds:.3g} s: {last_err}",
                                 block.block)
            return None, f"response file incomplete or unreadable after {seconds:.3g} s: {last_err}"
        if stale:
            return None, f"no response file of this run within {seconds:.3g} s ({'; '.join(stale[-2:])})"
        expected = response_paths(self.root, block.block)
        return None, (f"no response file within {seconds:.3g} s; expected one of "
                      f"{', '.join(str(p.relative_to(self.root)) for p in expected[:3])} (or {expected[3].name}, ...)")

    def present(self, block: Block) -> Reply:
        """Write ``block`` into the folder and return the rig's validated response
        (``image_ids`` ``int64 [n * repeats]``, ``responses`` ``float64 [n * repeats, channels]``)."""
        failures: list[str] = []
        for attempt in range(self.retries + 1):
            block.attempt = attempt
            write_block(self.root, block, self.run)
            wait = attempt_wait(self.timeout, self.backoff, self.max_backoff, attempt)
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

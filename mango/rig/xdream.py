"""XDream-compatible file drop: an existing XDream rig script works with MANGO unchanged.

The convention is XDream's ``EPhysScorer`` (``willwx/XDream``, ``xdream/Scorers.py`` and
``xdream/utils.py:load_block_mat``; the ``block%03d_%02d`` naming of its earlier version as kept in
``Animadversio/Activation-Maximization-for-Visual-System``, ``Scorer.py``)::

    folder/block007_00_gen003_000300.bmp   one BMP per image of XDream block 7; "00" is the image's slot
    folder/block007_01_gen003_000305.bmp   (0, 1, ... in the block's shuffled order); the image id names
    ...                                      the image (XDream: "gen<generation>_<sample>"; here
                                             "gen<MANGO block>_<MANGO image id>")
    folder/block007.mat                    the rig's answer (in ``response_folder``, default ``folder``):
        stimulusID   cell array {P x 1} of char: per presentation, the file name shown (a full path is
                     fine: the part after the last backslash or slash is used)
        tEvokedResp  double [channels x P]: per presentation, the evoked response of each channel,
                     aligned with stimulusID. (XDream reads it with h5py, which shows MATLAB's
                     column-major [channels x P] as (P, channels).)

MATLAB ``save -v7.3`` (HDF5 behind a 512-byte MATLAB header; stimulusID an HDF5 dataset of object
references into ``#refs#``, each a uint16 char array) is what XDream reads; MATLAB's default
``save`` (v5 format, ``-v7``, zlib-compressed) is read as well. Blocks are numbered 000, 001, ...
over the whole experiment (a new client continues after the largest number in the folders). A
presentation row per showing; an image shown again in the same block has several rows, and
XDream averages all rows of an image. Repeats are further XDream blocks (XDream's ``reps`` loop:
each image once per block, a fresh shuffled slot order each time): a MANGO block with ``repeats``
r is ``r / shows`` XDream blocks in which the rig shows each file ``shows`` times (default 1). An
image the rig did not record (a dropped trial) is shown again in the next XDream block, as XDream's
``require_response`` does. After reading a block's ``.mat`` the scorer deletes that block's BMPs;
the next block's BMPs appearing is the signal for the next block. There is no manifest: a rig
script takes the BMPs present (this client writes them hidden and renames them in one quick pass).

Beyond XDream (which waits forever and trusts the file): every ``.mat`` is untrusted input, read
from one bounded in-memory copy; declared sizes, variable types, names, counts and values are
checked before anything large is allocated (:func:`read_xdream_mat`, :class:`ProtocolError` with
the reason). A file that parses but is wrong (NaN or inf, a name not shown in the block, another
channel count) is moved to ``response_folder/rejected/`` and the images are shown again under the
next block number; an unreadable file is re-read until the timeout (MATLAB writes in place, it may
still be writing), then rejected the same way; no file within the timeout is re-requested the same
way, and after the retry budget :class:`RigError` names the file it waited for. Block numbers are
never reused (a new client continues after the largest number in the folders), so a late answer
or a leftover of an earlier run is never taken for a new block.

A MANGO block that stopped part-way (a later XDream block failed past its retries, or the run was
interrupted) keeps what the rig recorded: the client notes each XDream block it writes in ``folder``'s
hidden ledger (:data:`LEDGER`: the MANGO block and a digest of each image), and a later ``present`` of
the same block by the same run (the rerun that resumes it; the ledger records the run's id) first
reads the valid ``.mat`` files of its earlier XDream blocks whose images are byte for byte this
block's, and shows only the presentations still missing. Another run's files are never taken, even
with the same seed and so the same images; a client without a run id recovers nothing. A block
number in the ledger is never used again, even when its ``.mat`` never came. Every file's channel
count must equal the run's earlier answers' (:attr:`XDreamClient.expected_channels`, which the closed
loop sets from its record), so one file with a wrong count is refused, not the good files after it.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..journal import atomic_write
from .protocol import (Block, Limits, ProtocolError, Reply, RigError, attempt_wait, check_values, check_waits,
                       validate_reply_for)

__all__ = ["XDreamClient", "UnreadableMat", "serve_xdream", "read_xdream_mat", "write_xdream_mat", "stimulus_name",
           "mat_name", "MAT_VERSIONS", "STIMULUS_NAME"]

log = logging.getLogger(__name__)
MAT_VERSIONS = ("7.3", "5")
#: an XDream stimulus file name: block number, slot in the block, image id
STIMULUS_NAME = re.compile(r"^block(\d{3,})_(\d{2,})_(.+)\.bmp$")
_MAT_NAME = re.compile(r"^block(\d{3,})\.mat$")
#: the client's record of the XDream blocks it wrote (in ``folder``; hidden, not a BMP, so a rig script
#: ignores it): one JSON line per XDream block, ``{"xblock", "block", "images": {file name: image digest}}``
LEDGER = ".mango_xdream.jsonl"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_NAME = 1024  # characters of one stimulusID entry


class UnreadableMat(ProtocolError):
    """A ``.mat`` file that cannot be parsed (yet): too short, truncated, or rejected by the HDF5 / MAT
    reader. MATLAB writes in place, so the client reads such a file again until its timeout."""


def stimulus_name(xblock: int, slot: int, image_id: str) -> str:
    """``block%03d_%02d_<image_id>.bmp``: XDream's stimulus file name."""
    return f"block{int(xblock):03d}_{int(slot):02d}_{image_id}.bmp"


def mat_name(xblock: int) -> str:
    """``block%03d.mat``: the response file XDream waits for."""
    return f"block{int(xblock):03d}.mat"


# -- reading .mat (untrusted) ----------------------------------------------------------------------
def read_xdream_mat(data: bytes | str | os.PathLike, limits: Limits = Limits(),
                    block: int = -1) -> tuple[list[str], np.ndarray]:
    """Parse an XDream response file -> (``stimulusID`` names ``[P]``, ``tEvokedResp`` ``float64 [P, channels]``).

    ``data`` is the file's bytes (or a path, read once, at most ``limits.max_bytes``). MATLAB v7.3
    (HDF5) and v5 (``-v6``/``-v7``, compressed or not) are read; the MATLAB-side shapes are
    ``stimulusID`` a cell vector of P char rows and ``tEvokedResp`` ``[channels x P]`` (a
    ``[P x channels]`` matrix is accepted where P tells the orientation apart). Names are reduced to
    their file name (after the last ``\\`` or ``/``). Values are checked with
    :func:`~mango.rig.protocol.check_values` (``block`` names the block in its message).

    Raises:
        ProtocolError: unreadable, too large, wrong types or shapes, or non-finite values (the reason named).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = _read_bounded(Path(data), limits)
    data = bytes(data)
    if len(data) > limits.max_bytes:
        raise ProtocolError(f".mat file of {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")
    if len(data) < 128:
        raise UnreadableMat(f".mat file of {len(data)} bytes is shorter than a MAT-file header (half-written?)")
    try:
        if _is_hdf5(data):
            names, resp = _read_v73(data, limits)
        elif data[124:128] in (b"\x00\x01IM", b"\x01\x00MI"):
            names, resp = _read_v5(data, limits)
        else:
            raise UnreadableMat("not a MATLAB v5/v7 or v7.3 MAT-file (header unknown; MATLAB v4 files are not "
                                "supported: save with -v7 or -v7.3)")
    except ProtocolError:
        raise
    except Exception as exc:  # scipy, h5py and numpy raise many types on malformed files
        raise UnreadableMat(f".mat file unreadable ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    check_values(resp, block, limits, label=f"MANGO block {block}")   # the file names the XDream block
    return names, resp


def _read_bounded(path: Path, limits: Limits) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise ProtocolError(f"{path.name} is larger than the limit of {limits.max_bytes} bytes")
    return data


def _is_hdf5(data: bytes) -> bool:
    """HDF5 superblock signature at offset 0, 512, 1024, ... (a MATLAB v7.3 file has a 512-byte user block)."""
    off = 0
    while off + 8 <= len(data) and off <= 2**20:
        if data[off:off + 8] == _HDF5_SIGNATURE:
            return True
        off = 512 if off == 0 else off * 2
    return False


def _orient(names: list[str], resp: np.ndarray, limits: Limits) -> tuple[list[str], np.ndarray]:
    """MATLAB-dims ``tEvokedResp`` (``[channels x P]``, or ``[P x channels]``) -> ``float64 [P, channels]``."""
    p = len(names)
    if p == 0:
        raise ProtocolError("stimulusID is empty: the block has no presentations")
    if p > limits.max_presentations:
        raise ProtocolError(f"stimulusID has {p} presentations; the limit is {limits.max_presentations}")
    if resp.ndim == 1:
        resp = resp[None, :]
    if resp.ndim != 2:
        raise ProtocolError(f"tEvokedResp must be a [channels x presentations] matrix, got {resp.ndim} dimensions")
    if resp.shape[1] == p:
        resp = resp.T
    elif resp.shape[0] != p:
        raise ProtocolError(f"tEvokedResp is {resp.shape[0]} x {resp.shape[1]} but stimulusID names {p} presentations "
                            "(expected [channels x presentations])")
    if not 1 <= resp.shape[1] <= limits.max_channels:
        raise ProtocolError(f"tEvokedResp has {resp.shape[1]} channels; allowed 1..{limits.max_channels}")
    return names, np.ascontiguousarray(resp, dtype=np.float64)


def _clean_name(raw: str) -> str:
    if len(raw) > MAX_NAME or not raw.isprintable():
        raise ProtocolError(f"stimulusID entry {raw[:40]!r} is not a printable file name of at most {MAX_NAME} "
                            "characters")
    return re.split(r"[\\/]", raw)[-1]


# v5 --------------------------------------------------------------------------------------------
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_ALLOWED_CLASSES = {1: "cell", 4: "char", 6: "double", 7: "single", 8: "int8", 9: "uint8", 10: "int16",
                    11: "uint16", 12: "int32", 13: "uint32", 14: "int64", 15: "uint64"}
#: v5 data types that hold an array's values (miINT8 .. miUINT64, miUTF8/16/32): their item sizes
_MI_VALUES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8, 16: 1, 17: 2, 18: 4}
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_UTF8 = 1, 5, 6, 16
_MX_COMPLEX = 0x800


def _scan_v5(data: bytes, limits: Limits) -> None:
    """Walk the data elements of a v5 MAT-file before scipy parses it: every variable must be of an
    allowed class (cell, char or numeric); the elements of all declared arrays count against one
    budget of ``limits.max_bytes`` at 8 bytes each (what parsing allocates for them, a cell's
    pointers included), and the compressed variables may not inflate beyond ``limits.max_bytes``
    in all (zlib bombs). Each array's sub-elements must be of the types MATLAB writes (flags
    miUINT32, dimensions miINT32, name miINT8, values of a value type whose byte count the
    dimensions declare; cells hold arrays, inside the cell): scipy's compiled parser trusts those
    types, and fuzzed files that broke them crashed the process (segmentation fault) instead of
    raising."""
    endian = "<" if data[126:128] == b"IM" else ">"
    declared = [limits.max_bytes]
    inflated = [limits.max_bytes]

    def tag(buf: bytes, pos: int) -> tuple[int, int, int, int]:
        """(type, nbytes, data start, next element) of the element at ``pos``."""
        if pos + 8 > len(buf):
            raise UnreadableMat("v5 .mat: truncated data element (half-written file?)")
        typ, nbytes = struct.unpack_from(endian + "II", buf, pos)
        if typ >> 16:  # small data element: nbytes in the upper half, data in the tag
            return typ & 0xFFFF, typ >> 16, pos + 4, pos + 8
        end = pos + 8 + nbytes
        if end > len(buf):
            raise UnreadableMat("v5 .mat: a data element runs past the end of the file (half-written file?)")
        return typ, nbytes, pos + 8, end + (-nbytes % 8 if typ != _MI_COMPRESSED else 0)

    def matrix(buf: bytes, start: int, nbytes: int, depth: int) -> None:
        if nbytes == 0:  # an empty array (e.g. an empty cell element)
            return
        if depth > 3:
            raise ProtocolError("v5 .mat: cell arrays nested deeper than stimulusID needs")
        end = start + nbytes                       # every sub-element lies inside the array's element
        t, n, s, pos = tag(buf, start)
        if t != _MI_UINT32 or n != 8:
            raise ProtocolError("v5 .mat: malformed array flags")
        flags = struct.unpack_from(endian + "I", buf, s)[0]
        cls = flags & 0xFF
        if cls not in _ALLOWED_CLASSES:
            raise ProtocolError(f"v5 .mat holds a variable of MATLAB class {cls}; only cell, char and numeric "
                                "arrays are read")
        t, n, s, pos = tag(buf, pos)
        if t != _MI_INT32 or n % 4 or not 4 <= n <= 4 * 8:
            raise ProtocolError("v5 .mat: malformed array dimensions")
        dims = struct.unpack_from(endian + f"{n // 4}i", buf, s)
        if min(dims) < 0:
            raise ProtocolError(f"v5 .mat: negative array dimension in {dims}")
        count = float(np.prod(np.asarray(dims, dtype=np.float64)))
        declared[0] -= 8 * count
        if declared[0] < 0:
            raise ProtocolError(f"a {'x'.join(map(str, dims))} {_ALLOWED_CLASSES[cls]} array: the .mat file declares "
                                f"more data than the limit of {limits.max_bytes} bytes allows")
        t, n, s, pos = tag(buf, pos)  # array name
        if t != _MI_INT8 or pos > end:
            raise ProtocolError("v5 .mat: malformed array name")
        if _ALLOWED_CLASSES[cls] == "cell":
            for _ in range(int(count)):
                t, n, s, nxt = tag(buf, pos)
                if t != _MI_MATRIX or nxt > end:
                    raise ProtocolError("v5 .mat: a cell holds something other than an array")
                matrix(buf, s, n, depth + 1)
                pos = nxt
            return
        # char / numeric: the values (and the imaginary part of a complex array) are one element each of a
        # value type (scipy's parser trusts this type: another one, e.g. an array where values belong,
        # crashed it), holding at most what the dimensions declare (UTF-8 text: bytes vary per character)
        for _ in range(2 if flags & _MX_COMPLEX else 1):
            t, n, s, pos = tag(buf, pos)
            if t not in _MI_VALUES or pos > end + 7:
                raise ProtocolError(f"v5 .mat: a {_ALLOWED_CLASSES[cls]} array holds values of data type {t}")
            if t != _MI_UTF8 and n != count * _MI_VALUES[t]:
                raise ProtocolError(f"v5 .mat: a {'x'.join(map(str, dims))} {_ALLOWED_CLASSES[cls]} array holds "
                                    f"{n} bytes of data type {t}")

    pos = 128
    while pos < len(data):
        t, n, s, nxt = tag(data, pos)
        if t == _MI_COMPRESSED:
            d = zlib.decompressobj()
            try:
                raw = d.decompress(data[s:s + n], inflated[0] + 1)
            except zlib.error as exc:
                raise UnreadableMat(f"v5 .mat: a compressed variable does not inflate ({exc})") from None
            inflated[0] -= len(raw)
            if inflated[0] < 0 or d.unconsumed_tail:
                raise ProtocolError(f"the compressed variables inflate beyond the limit of {limits.max_bytes} bytes")
            t2, n2, s2, _ = tag(raw, 0)
            if t2 != _MI_MATRIX:
                raise ProtocolError("v5 .mat: a compressed element holds something other than an array")
            matrix(raw, s2, n2, 0)
        elif t == _MI_MATRIX:
            matrix(data, s, n, 0)
        else:
            raise ProtocolError(f"v5 .mat: unexpected top-level data element of type {t}")
        pos = nxt


def _read_v5(data: bytes, limits: Limits) -> tuple[list[str], np.ndarray]:
    import scipy.io

    _scan_v5(data, limits)
    d = scipy.io.loadmat(io.BytesIO(data), variable_names=["stimulusID", "tEvokedResp"], squeeze_me=False,
                         chars_as_strings=True, struct_as_record=True)
    missing = [k for k in ("stimulusID", "tEvokedResp") if k not in d]
    if missing:
        raise ProtocolError(f".mat file has no variable {' or '.join(missing)} (XDream's EPhysScorer needs "
                            "stimulusID and tEvokedResp)")
    ids, resp = d["stimulusID"], d["tEvokedResp"]
    if not isinstance(ids, np.ndarray) or ids.dtype != object or sum(s != 1 for s in ids.shape) > 1:
        what = (f"a char matrix of {ids.shape[0]} rows (MATLAB char(...) or ['a'; 'b']), not a cell array: save the "
                "names as a cell, e.g. cellstr(names)" if isinstance(ids, np.ndarray) and ids.dtype.kind == "U"
                else f"{getattr(ids, 'dtype', type(ids).__name__)} {getattr(ids, 'shape', '')}")
        raise ProtocolError(f"stimulusID must be a cell vector of char (one file name per presentation), got {what}")
    names = []
    for e in ids.reshape(-1, order="F"):
        e = np.asarray(e)
        if e.dtype.kind != "U" or e.size > 1:
            raise ProtocolError(f"stimulusID entries must be char rows (file names), got {e.dtype} {e.shape}")
        names.append(_clean_name(str(e.reshape(-1)[0]) if e.size else ""))
    if not isinstance(resp, np.ndarray) or resp.dtype.kind not in "fiub":
        raise ProtocolError(f"tEvokedResp must be a numeric matrix, got {getattr(resp, 'dtype', type(resp).__name__)}")
    return _orient(names, np.asarray(resp, dtype=np.float64), limits)


# v7.3 ------------------------------------------------------------------------------------------
def _h5_dataset(f: Any, key: Any, what: str) -> Any:
    import h5py

    if isinstance(key, str):
        link = f.get(key, getlink=True)
        if link is None:
            raise ProtocolError(f".mat file has no variable {key} (XDream's EPhysScorer needs stimulusID and "
                                "tEvokedResp)")
        if not isinstance(link, h5py.HardLink):
            raise ProtocolError(f"{what} is a {type(link).__name__}, not data stored in the file")
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise ProtocolError(f"{what} is an HDF5 {type(obj).__name__}, not an array")
    if obj.is_virtual or obj.external:
        raise ProtocolError(f"{what} keeps its data outside the file (virtual or external storage)")
    return obj


def _read_v73(data: bytes, limits: Limits) -> tuple[list[str], np.ndarray]:
    import h5py

    with h5py.File(io.BytesIO(data), "r") as f:
        sid = _h5_dataset(f, "stimulusID", "stimulusID")
        if h5py.check_ref_dtype(sid.dtype) is not h5py.Reference:
            raise ProtocolError(f"stimulusID must be a cell array of char (HDF5 object references), got {sid.dtype}")
        if sid.ndim > 2 or sum(s != 1 for s in sid.shape) > 1 or sid.size > limits.max_presentations:
            raise ProtocolError(f"stimulusID must be a cell vector of at most {limits.max_presentations} "
                                f"entries, got shape {sid.shape}")
        names = []
        for ref in np.asarray(sid[()]).reshape(-1):
            if not ref:
                raise ProtocolError("stimulusID holds a null reference")
            ch = _h5_dataset(f, ref, "a stimulusID entry")
            if "MATLAB_empty" in ch.attrs:
                names.append("")
                continue
            if ch.dtype.kind not in "ui" or ch.dtype.itemsize > 4 or ch.size > MAX_NAME \
                    or sum(s != 1 for s in ch.shape) > 1:
                raise ProtocolError(f"stimulusID entries must be char rows of at most {MAX_NAME} characters, "
                                    f"got {ch.dtype} {ch.shape}")
            codes = np.asarray(ch[()]).reshape(-1).astype(np.int64)
            if codes.size and (codes.min() < 0 or codes.max() > 0x10FFFF):
                raise ProtocolError("stimulusID entry holds values that are not characters")
            try:
                text = codes.astype("<u2").tobytes().decode("utf-16-le") if codes.max(initial=0) < 2**16 \
                    else "".join(map(chr, codes))
            except (UnicodeDecodeError, ValueError):
                raise ProtocolError("stimulusID entry is not valid UTF-16 text") from None
            names.append(_clean_name(text))
        r = _h5_dataset(f, "tEvokedResp", "tEvokedResp")
        if r.dtype.kind not in "fiub" or r.ndim > 2:
            raise ProtocolError(f"tEvokedResp must be a numeric matrix, got {r.dtype} {r.shape}")
        if r.size > limits.max_presentations * limits.max_channels or 8 * r.size > limits.max_bytes:
            raise ProtocolError(f"tEvokedResp declares {r.size} values; larger than the limits allow")
        resp = np.asarray(r[()], dtype=np.float64)
    # h5py shows MATLAB's column-major [channels x P] as (P, channels): back to MATLAB dims first
    return _orient(names, resp.T, limits)


# -- writing .mat (the rig side: the simulator and tests) ------------------------------------------
def write_xdream_mat(path: str | os.PathLike | None, names: Sequence[str], responses: np.ndarray,
                     version: str = "7.3", compress: bool = True) -> bytes:
    """Write a ``block%03d.mat`` as a MATLAB rig script saves it; returns the file's bytes
    (``path=None``: only return them).

    ``names`` ``[P]`` (stimulusID, one file name per presentation), ``responses`` ``float [P, channels]``
    (stored MATLAB-side as ``tEvokedResp`` ``[channels x P]``). ``version``: ``"7.3"`` (HDF5 with
    MATLAB's 512-byte header, char cells in ``#refs#``, as ``save -v7.3``) or ``"5"`` (``save -v7``:
    v5 format, zlib-compressed unless ``compress=False``, as ``save -v6``). Written atomically.
    """
    resp = np.asarray(responses, dtype=np.float64)
    if resp.ndim == 1:
        resp = resp[:, None]
    if resp.ndim != 2 or resp.shape[0] != len(names):
        raise ConfigError(f"responses must be [P, channels] with P = {len(names)} names, got {resp.shape}")
    if version == "5":
        import scipy.io

        cell = np.empty((len(names), 1), dtype=object)
        cell[:, 0] = [str(n) for n in names]
        buf = io.BytesIO()
        scipy.io.savemat(buf, {"stimulusID": cell, "tEvokedResp": resp.T}, format="5", do_compression=compress)
        data = buf.getvalue()
    elif version == "7.3":
        data = _v73_bytes(list(map(str, names)), resp)
    else:
        raise ConfigError(f"unknown .mat version {version!r}; valid choices: {', '.join(MAT_VERSIONS)}")
    if path is not None:
        atomic_write(Path(path), data)
    return data


def _v73_bytes(names: list[str], resp: np.ndarray) -> bytes:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=512, libver="earliest") as f:
        refs = f.create_group("#refs#")
        out = np.empty((1, len(names)), dtype=h5py.ref_dtype)  # h5py (1, P) = MATLAB {P x 1}
        for i, name in enumerate(names):
            codes = np.frombuffer(name.encode("utf-16-le"), dtype="<u2")
            if codes.size:
                ds = refs.create_dataset(f"s{i}", data=codes.reshape(-1, 1))  # MATLAB 1 x L char
                ds.attrs["MATLAB_int_decode"] = np.int32(2)
            else:  # MATLAB's empty char: the dims as data, flagged MATLAB_empty
                ds = refs.create_dataset(f"s{i}", data=np.zeros(2, dtype=np.uint64))
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            out[0, i] = ds.ref
        sid = f.create_dataset("stimulusID", data=out)
        sid.attrs["MATLAB_class"] = np.bytes_("cell")
        r = f.create_dataset("tEvokedResp", data=resp)  # h5py (P, ch) = MATLAB [ch x P]
        r.attrs["MATLAB_class"] = np.bytes_("double")
    data = bytearray(buf.getvalue())
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {time.strftime('%a %b %d %H:%M:%S %Y')} "
            "HDF5 schema 1.00 .").encode("ascii")
    data[:128] = text.ljust(116, b" ")[:116] + b"\x00" * 8 + b"\x00\x02" + b"IM"
    return bytes(data)


# -- search side -------------------------------------------------------------------------------------
def _bmp(image: np.ndarray) -> bytes:
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, image[..., 0] if image.shape[-1] == 1 else image, extension=".bmp")
    return buf.getvalue()


class XDreamClient:
    """Search side of the XDream convention: ``present(Block) -> Reply`` over a folder an XDream rig watches.

    Args:
        folder: where the BMPs go (XDream's ``write_dir``; created if missing).
        response_folder: where the rig writes ``block%03d.mat`` (XDream's ``score_dir``; default ``folder``).
        timeout: seconds to wait for one ``.mat`` per attempt.
        retries: re-requests (the same images under the next block number) after the first attempt.
        backoff: extra waiting before re-request ``k``: ``backoff * 2**(k-1)`` s (capped at ``max_backoff``).
        poll: seconds between looks into the response folder.
        shows: presentations the rig script makes of each BMP per XDream block (default 1). A MANGO
            block with ``repeats`` r becomes ``ceil(r / shows)`` XDream blocks when the rig records every
            showing; with r not a multiple of ``shows`` (a hold-out block's 10 repeats at shows=3) the last
            one's extra showings are not used (logged in :attr:`ignored`).
        limits: size limits for the ``.mat`` files.
        run: the run's id (``mango rig-run`` passes its run folder's): the ledger ties each XDream block
            to it, and only a client of the same run recovers a part-finished block's files; ``None``:
            no recovery.

    Attributes:
        ignored: one dict per rejected file (``block``, ``reason``, ``file``), as the other clients.
        next_block: the XDream block number the next block gets.
        expected_channels: the channel count every ``.mat`` must have (``None``: the first file of a
            block sets it); kept from one block to the next, and set by the closed loop from the run's
            recorded answers before each block.
        recovered: presentations taken from ``.mat`` files of earlier attempts (see the module docstring).
    """

    def __init__(self, folder: str | os.PathLike, *, response_folder: str | os.PathLike | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5, max_backoff: float = 10.0,
                 poll: float = 0.05, shows: int = 1, limits: Limits = Limits(), run: str | None = None) -> None:
        check_waits(timeout, retries, backoff)
        if int(shows) < 1:
            raise ConfigError(f"shows (presentations of each BMP per XDream block) must be >= 1, got {shows!r}")
        self.folder = Path(folder)
        self.response_folder = Path(response_folder) if response_folder is not None else self.folder
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.max_backoff, self.poll, self.shows, self.limits = float(max_backoff), float(poll), int(shows), limits
        self.ignored: list[dict[str, Any]] = []
        self.run = str(run) if run else None
        self.expected_channels: int | None = None
        self.recovered = 0
        for d in (self.folder, self.response_folder, self.response_folder / "rejected"):
            d.mkdir(parents=True, exist_ok=True)
        self.next_block = self.first_free_block()

    def close(self) -> None:
        """Remove this client's BMPs still in the folder (XDream's cleanup)."""
        self._cleanup()

    def __enter__(self) -> "XDreamClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def first_free_block(self) -> int:
        """1 + the largest XDream block number any BMP or ``.mat`` in the folders, or the ledger, names (0 if
        none): a block that timed out leaves no file, but its number is in the ledger and is not used again."""
        last = -1
        for d in {self.folder, self.response_folder, self.response_folder / "rejected"}:
            for p in d.iterdir():
                m = STIMULUS_NAME.match(p.name) or _MAT_NAME.match(p.name) or \
                    re.match(r"^block(\d{3,})\.mat\.", p.name)
                if m:
                    last = max(last, int(m.group(1)))
        for rec in self._ledger():
            xb = rec.get("xblock")
            if isinstance(xb, int) and not isinstance(xb, bool):
                last = max(last, xb)
        return last + 1

    def _ledger(self) -> list[dict[str, Any]]:
        """The ledger's readable lines (a torn or foreign line is skipped)."""
        try:
            lines = (self.folder / LEDGER).read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def _cleanup(self) -> None:
        for p in self.folder.iterdir():
            if STIMULUS_NAME.match(p.name):
                try:
                    p.unlink()
                except OSError:
                    pass

    def _reject(self, path: Path, why: str, block: int) -> None:
        log.warning("xdream %s: rejected %s: %s", self.response_folder, path.name, why)
        self.ignored.append({"block": block, "reason": why, "file": path.name})
        try:
            os.replace(path, self.response_folder / "rejected" / f"{path.name}.{int(time.time() * 1e6)}")
        except OSError:
            pass

    def _write(self, xb: int, block: Block, idx: np.ndarray) -> dict[str, int]:
        """Write the images ``idx`` of ``block`` as XDream block ``xb`` (slot = position in ``idx``);
        returns file name -> image index."""
        self._cleanup()  # the previous block's BMPs go first: the rig sees only this block's
        names: dict[str, int] = {}
        tmp = []
        for slot, i in enumerate(idx):
            name = stimulus_name(xb, slot, f"gen{int(block.block):03d}_{int(block.image_ids[i]):06d}")
            names[name] = int(i)
            t = self.folder / f".{name}.tmp"  # all files written hidden first, then renamed in one quick pass
            with open(t, "wb") as fh:
                fh.write(_bmp(np.asarray(block.images[i], dtype=np.uint8)))
                fh.flush()
                os.fsync(fh.fileno())
            tmp.append((t, self.folder / name))
        digests = {name: _digest(block.images[i]) for name, i in names.items()}
        with open(self.folder / LEDGER, "a", encoding="utf-8") as fh:   # noted before the rig can see them
            fh.write(json.dumps({"xblock": int(xb), "run": self.run, "block": int(block.block),
                                 "images": digests}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for t, p in tmp:
            os.replace(t, p)
        return names

    def _earlier(self, block: Block) -> list[tuple[int, dict[str, int]]]:
        """``[(XDream block, file name -> image index)]`` of the XDream blocks the ledger says this run showed
        with images of ``block`` byte for byte (an earlier attempt at it), one per block number, in order.
        A client without a run id recovers nothing (another run with the same seed shows the same images)."""
        if self.run is None:
            return []
        index = {f"gen{int(block.block):03d}_{int(iid):06d}": i for i, iid in enumerate(block.image_ids)}
        out: dict[int, dict[str, int]] = {}
        for rec in self._ledger():
            try:
                if rec.get("run") != self.run or rec.get("block") != int(block.block) \
                        or not isinstance(rec.get("images"), dict):
                    continue
                xb, names = int(rec["xblock"]), {}
                for name, digest in rec["images"].items():
                    m = STIMULUS_NAME.match(name)
                    i = index.get(m.group(3)) if m and int(m.group(1)) == xb else None
                    if i is None or digest != _digest(block.images[i]):
                        raise ValueError(name)
                    names[name] = i
            except (ValueError, TypeError, KeyError, AttributeError):   # a damaged line, other images
                continue
            if names:
                out[xb] = names          # a number written twice (an older ledger): its last entry
        return sorted(out.items(), key=lambda t: t[0])

    def _parse(self, path: Path, block: Block, names: dict[str, int],
               channels: int | None) -> tuple[np.ndarray, np.ndarray]:
        """A ``.mat`` -> (image index per presentation ``int64 [P]``, responses ``float64 [P, channels]``)."""
        got, resp = read_xdream_mat(path, self.limits, block.block)
        by_stem = {n[:-4]: i for n, i in names.items()}
        stray = [g for g in got if g not in names and g not in by_stem]
        if stray:
            raise ProtocolError(f"stimulusID names {stray[:3]} that {path.stem} did not show "
                                f"(expected names like {next(iter(names))!r})")
        if channels is not None and resp.shape[1] != channels:
            raise ProtocolError(f"tEvokedResp has {resp.shape[1]} channels; the run's earlier answers had "
                                f"{channels}")
        return np.asarray([names.get(g, by_stem.get(g)) for g in got], dtype=np.int64), resp

    def _wait(self, path: Path, block: Block, names: dict[str, int], channels: int | None,
              seconds: float) -> tuple[tuple[np.ndarray, np.ndarray] | None, str | None]:
        deadline = time.monotonic() + seconds
        last_err: str | None = None
        while time.monotonic() < deadline:
            try:
                return self._parse(path, block, names, channels), None
            except FileNotFoundError:
                pass
            except UnreadableMat as exc:
                last_err = str(exc)  # MATLAB writes in place: maybe still being written, read again
            except ProtocolError as exc:
                self._reject(path, str(exc), block.block)
                return None, f"invalid {path.name}: {exc}"
            except OSError as exc:
                last_err = f"{exc.__class__.__name__}: {exc}"
            time.sleep(self.poll)
        if path.exists():
            why = f"{path.name} still unreadable after {seconds:.3g} s: {last_err}"
            self._reject(path, why, block.block)
            return None, why
        return None, f"no {path.name} in {self.response_folder} within {seconds:.3g} s"

    def present(self, block: Block) -> Reply:
        """Show ``block`` as XDream blocks until every image has ``block.repeats`` recorded presentations;
        return the validated reply (``image_ids`` ``int64 [n * repeats]``, ``responses``
        ``float64 [n * repeats, channels]``).

        Each XDream block shows every image that still needs presentations once (the rig shows each
        file ``shows`` times), in the order of their next occurrence in ``block.order``. Presentations
        missing from a valid ``.mat`` (the rig dropped trials) are shown again in the next XDream block,
        as XDream does with ``require_response``; presentations beyond those needed are not used
        (logged in :attr:`ignored`). A missing, unreadable or invalid ``.mat`` costs one of the
        ``retries``; then :class:`RigError`.
        """
        n, rep = len(block.image_ids), int(block.repeats)
        # repeats not a multiple of shows (a hold-out or confirmation block): ceil(rep / shows) XDream blocks,
        # the last one's extra showings not used (logged in ignored)
        order = np.asarray(block.order if block.order is not None else
                           np.random.default_rng([block.block, 11]).permutation(np.repeat(np.arange(n), rep)),
                           dtype=np.int64)
        if order.ndim != 1 or order.size != n * rep or order.min(initial=0) < 0 or order.max(initial=0) >= n \
                or (np.bincount(order, minlength=n) != rep).any():
            raise ConfigError(f"block {block.block}: order must show every image index 0..{n - 1} exactly {rep} times")
        occurrences = [np.flatnonzero(order == i) for i in range(n)]
        remaining = np.full(n, rep)
        taken_idx: list[int] = []
        taken_rows: list[np.ndarray] = []
        channels: int | None = self.expected_channels
        failures: list[str] = []

        def take(local: np.ndarray, resp: np.ndarray, path: Path) -> int:
            """Count a valid file's presentations toward ``remaining``; returns how many were used."""
            used = extra = 0
            for j, i in enumerate(local):
                if remaining[i] > 0:
                    remaining[i] -= 1
                    taken_idx.append(int(i))
                    taken_rows.append(resp[j])
                    used += 1
                else:
                    extra += 1
            if extra:
                why = f"{path.name}: {extra} presentations beyond the {rep} per image needed, not used"
                log.warning("xdream %s: %s", self.folder, why)
                self.ignored.append({"block": block.block, "reason": why, "file": path.name})
            return used

        for xb, names in self._earlier(block):      # an earlier attempt's recorded files: kept, not shown again
            path = self.response_folder / mat_name(xb)
            if not remaining.any() or not path.exists():
                continue
            try:
                local, resp = self._parse(path, block, names, channels)
            except (ProtocolError, OSError) as exc:
                log.info("xdream %s: block %d: earlier %s not used: %s", self.folder, block.block, path.name, exc)
                continue
            channels = resp.shape[1]
            used = take(local, resp, path)
            self.recovered += used
            log.info("xdream %s: block %d: %d presentations recorded earlier in %s kept", self.folder,
                     block.block, used, path.name)
        try:
            while remaining.any():
                need = np.flatnonzero(remaining > 0)
                nxt = [occurrences[i][min(rep - remaining[i], len(occurrences[i]) - 1)] for i in need]
                idx = need[np.argsort(nxt, kind="stable")]
                xb = self.next_block
                self.next_block += 1
                block.attempt = len(failures)
                names = self._write(xb, block, idx)
                path = self.response_folder / mat_name(xb)
                log.info("xdream %s: block %d: %d images as XDream block %03d; waiting for %s", self.folder,
                         block.block, len(idx), xb, path)
                k = len(failures)
                wait = attempt_wait(self.timeout, self.backoff, self.max_backoff, k)
                got, why = self._wait(path, block, names, channels, wait)
                if got is None:
                    failures.append(f"XDream block {xb:03d}: {why}")
                    if len(failures) > self.retries:
                        raise RigError(f"no valid {path.name} in {self.response_folder} for block {block.block} "
                                       f"after {len(failures)} attempts ({'; '.join(failures)}). Fix the rig and "
                                       "rerun the same command: the run folder resumes without re-presenting "
                                       "recorded images.")
                    log.warning("xdream %s: block %d: %s; showing its images again as XDream block %03d",
                                self.folder, block.block, why, self.next_block)
                    continue
                local, resp = got
                channels = resp.shape[1]
                take(local, resp, path)
                if remaining[idx].any():
                    log.info("xdream %s: %s lacks %d presentations; shown again in the next XDream block",
                             self.folder, path.name, int(remaining[idx].sum()))
                self._cleanup()  # XDream's cleanup after a block is read: the signal that it is done
        finally:
            self._cleanup()
        ids = np.asarray(block.image_ids, dtype=np.int64)
        reply = Reply(block.block, ids[np.asarray(taken_idx, dtype=np.int64)], np.asarray(taken_rows))
        validate_reply_for(reply, block)
        self.expected_channels = channels
        return reply


def _digest(image: Any) -> str:
    """A short SHA-256 of an image's pixels and shape (``uint8 [H, W, C]``): ties a ledger entry to the image."""
    a = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:32]


# -- rig side: the simulator -----------------------------------------------------------------------
def _read_stimuli(folder: Path, files: list[str]) -> np.ndarray:
    import imageio.v3 as iio

    imgs = []
    for name in files:
        img = np.asarray(iio.imread(folder / name, extension=".bmp"))
        imgs.append(img[..., None] if img.ndim == 2 else img[..., :3])
    if len({i.shape for i in imgs}) != 1 or imgs[0].dtype != np.uint8:
        raise ProtocolError(f"stimuli of one block differ in size or type: {sorted({i.shape for i in imgs})}")
    return np.stack(imgs)


def serve_xdream(sim: Any, folder: str | os.PathLike, *, response_folder: str | os.PathLike | None = None,
                 version: str = "7.3", shows: int = 1, poll: float = 0.02, settle: float = 0.1,
                 stop: threading.Event | None = None, ready: threading.Event | None = None) -> None:
    """Play an XDream rig script on ``folder`` with ``sim`` (a :class:`~mango.rig.simulator.RigSimulator`).

    Watches for ``block%03d_%02d_<id>.bmp`` files; once a block's set of files has not changed for
    ``settle`` seconds, presents them (each ``shows`` times, in a random order) and writes
    ``response_folder/block%03d.mat`` (``version`` ``"7.3"`` or ``"5"``) with ``stimulusID`` (the file
    names, one per presentation) and ``tEvokedResp`` ``[channels x P]``, until ``stop`` is set.
    Faults (``sim.faults``): drop/crash write nothing, delay writes late, nan writes NaN, malformed
    writes garbage, wrongblock names another block's files, duplicate writes half the file first.
    """
    if version not in MAT_VERSIONS:
        raise ConfigError(f"unknown .mat version {version!r}; valid choices: {', '.join(MAT_VERSIONS)}")
    folder = Path(folder)
    out_dir = Path(response_folder) if response_folder is not None else folder
    folder.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    served: set[int] = set()
    last: dict[int, tuple[tuple[str, ...], float]] = {}
    log.info("rig-sim: XDream rig watching %s (responses as MATLAB v%s in %s)", folder, version, out_dir)
    if ready is not None:
        ready.set()
    while stop is None or not stop.is_set():
        groups: dict[int, list[str]] = {}
        for p in folder.iterdir():
            m = STIMULUS_NAME.match(p.name)
            if m:
                groups.setdefault(int(m.group(1)), []).append(p.name)
        now = time.monotonic()
        for xb in sorted(groups):
            files = tuple(sorted(groups[xb], key=lambda s: int(STIMULUS_NAME.match(s).group(2))))
            if xb in served or (out_dir / mat_name(xb)).exists():
                continue
            if last.get(xb, ((), 0.0))[0] != files:
                last[xb] = (files, now)
                continue
            if now - last[xb][1] < settle:
                continue
            try:
                images = _read_stimuli(folder, list(files))
            except FileNotFoundError:
                continue  # cleaned up meanwhile
            except Exception as exc:  # a corrupt BMP: nothing to show
                log.warning("rig-sim: XDream block %03d not usable: %s", xb, exc)
                served.add(xb)
                continue
            served.add(xb)
            block = Block(xb, np.arange(len(files), dtype=np.int64), images, shows)
            reply, fault = sim.handle(block)
            names = [files[int(i)] for i in reply.image_ids]
            out = out_dir / mat_name(xb)
            if fault in ("drop", "crash"):
                if fault == "crash":
                    time.sleep(sim.restart)
                continue
            if fault == "delay":
                time.sleep(sim.delay)
            resp = reply.responses
            if fault == "nan":
                resp = np.full_like(resp, np.nan)
            if fault == "wrongblock":
                names = [f"block{xb + 100_000:03d}" + n[len(f"block{xb:03d}"):] for n in names]
            if fault == "malformed":
                out.write_bytes(b"MATLAB 5.0 MAT-file\x00garbage, not a response file")
                continue
            if fault == "duplicate":  # half-written first (MATLAB writes in place), completed a moment later
                data = write_xdream_mat(None, names, resp, version)
                out.write_bytes(data[: len(data) // 2])
                time.sleep(0.2)
                out.write_bytes(data)
                continue
            write_xdream_mat(out, names, resp, version)
        for xb in [b for b in last if b not in groups]:
            del last[xb]
        time.sleep(poll)

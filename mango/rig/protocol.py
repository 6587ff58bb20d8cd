"""The MANGO rig wire format (``mango-rig/1``): multipart messages, a JSON header + binary frames.

No pickle anywhere: the header is UTF-8 JSON, images are raw ``uint8`` bytes or
PNG files, responses are little-endian ``float64`` bytes. See ``PROTOCOL.md``
beside this module for the full specification. Two message types carry data:

``block`` (search -> rig), frames ``[header, images...]``::

    {"protocol": "mango-rig", "version": 1, "type": "block", "block": 12, "attempt": 0,
     "image_ids": [1200, 1201, ...], "shape": [n, H, W, C], "dtype": "uint8",
     "encoding": "raw" | "png", "repeats": 2, "order": [presentation -> image index] | null,
     "mac": "<hex HMAC-SHA256>" (only with a shared token)}
    raw: one frame of n*H*W*C bytes (row-major [n, H, W, C]); png: n frames, one PNG each.

``response`` (rig -> search), frames ``[header, responses]``::

    {"protocol": "mango-rig", "version": 1, "type": "response", "block": 12,
     "image_ids": [per presentation], "shape": [P, channels], "dtype": "float64", "mac": ...}
    responses: P*channels little-endian float64 values, row-major [P, channels];
    P = n * repeats: each image of the block exactly ``repeats`` times (see :func:`validate_reply_for`).

``error`` (either way): ``{"type": "error", "block": 12 | null, "reason": "..."}``
and no binary frame; a rig answers a message it rejects with one.

Every decoder checks everything (protocol name and version, type, sizes against
:class:`Limits`, ids, shapes, finiteness, the MAC) and raises
:class:`ProtocolError` with the reason; nothing unchecked reaches the caller.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import ConfigError, MangoError

__all__ = ["PROTOCOL", "VERSION", "Limits", "Block", "Reply", "ProtocolError", "AuthError", "IncompleteReply",
           "RigError", "new_nonce", "check_values", "verify_mac", "check_block_header", "check_response_header", "json_object", "json_depth", "header_int",
           "header_int_list", "compute_mac", "NONCE_PATTERN",
           "encode_block", "decode_block", "encode_reply", "decode_reply", "encode_error", "decode_error",
           "peek_header", "validate_reply_for", "accept_reply", "header_shape", "images_to_png", "png_to_images",
           "attempt_wait", "check_waits", "SlowRigWarning"]

PROTOCOL = "mango-rig"
VERSION = 1
ENCODINGS = ("raw", "png")
TYPES = ("block", "response", "error")


class ProtocolError(MangoError, ValueError):
    """A message that does not follow ``mango-rig/1``; the message says why."""


class AuthError(ProtocolError):
    """A message that fails authentication (no MAC, or a wrong one) while a shared token is set.

    Such a message must change nothing: receivers drop it (logged) and keep waiting."""


class IncompleteReply(ProtocolError):
    """A reply with fewer presentations than the block asked for (e.g. a half-written response file
    cut at a line boundary); the file-drop client waits for the rest until its timeout."""


class RigError(MangoError, RuntimeError):
    """The rig did not give a valid answer within the retry budget (the run stays resumable)."""


@dataclass(frozen=True)
class Limits:
    """Size limits every message is checked against before anything is allocated.

    Attributes:
        max_bytes: total bytes of one message (all frames), default 64 MiB.
        max_header: bytes of the JSON header frame.
        max_images: images per block.
        max_side: image height/width in pixels.
        max_repeats: repeats per image.
        max_presentations: rows of a response matrix.
        max_channels: columns of a response matrix.
        max_abs_value: largest magnitude a response value may have (spike counts, rates or
            voltages are far below it); larger values are refused at the boundary so that
            sums and means over presentations stay finite.
        max_depth: nesting depth of the JSON header (a valid header has depth 2).
    """

    max_bytes: int = 64 * 2**20
    max_header: int = 4 * 2**20
    max_images: int = 4096
    max_side: int = 1024
    max_repeats: int = 100
    max_presentations: int = 100_000
    max_channels: int = 4096
    max_abs_value: float = 1e9
    max_depth: int = 4


@dataclass
class Block:
    """A block of images to present.

    Attributes:
        block: block id (int >= 0, unique within a run).
        image_ids: ``int [n]`` unique ids of the images.
        images: ``uint8 [n, H, W, C]`` (C = 1 grey or 3 RGB).
        repeats: presentations wanted per image (>= 1).
        order: optional ``int [n * repeats]`` presentation order as indices into
            ``images`` (each image exactly ``repeats`` times); ``None`` = rig chooses.
        attempt: retry counter (0 for the first send); informative only.
        nonce: a fresh random string per attempt (set by the client); the rig echoes it in its
            reply, so a captured reply cannot be replayed into another block or run, and a rig
            refuses a block whose nonce it has already served.
    """

    block: int
    image_ids: np.ndarray
    images: np.ndarray
    repeats: int = 1
    order: np.ndarray | None = None
    attempt: int = 0
    nonce: str | None = None

    @property
    def n_presentations(self) -> int:
        return int(len(self.image_ids) * self.repeats)


@dataclass
class Reply:
    """A rig's answer to a block.

    Attributes:
        block: the block id it answers.
        image_ids: ``int64 [P]`` which image each presentation showed.
        responses: ``float64 [P, channels]`` (e.g. spike counts), all finite.
        nonce: the nonce of the block attempt it answers (None from a rig that does not echo it;
            required when a shared token is set).
    """

    block: int
    image_ids: np.ndarray
    responses: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    nonce: str | None = None


NONCE_PATTERN = re.compile(r"[0-9A-Za-z_-]{8,128}")


def new_nonce() -> str:
    """A fresh random nonce (32 hex digits) for one block attempt."""
    return secrets.token_hex(16)


# -- helpers ---------------------------------------------------------------------------
#: the two spellings of the canonical header JSON a MAC may be computed over (sorted keys, non-ASCII
#: escaped as \uXXXX): compact (what most encoders give, e.g. JSON.stringify, MATLAB jsonencode) and
#: Python's default spacing. MANGO signs with the compact form and accepts either.
_CANONICAL_SEPARATORS = ((",", ":"), (", ", ": "))


def compute_mac(token: str | None, header: dict[str, Any], frames: list[bytes],
         separators: tuple[str, str] = _CANONICAL_SEPARATORS[0]) -> str:
    body = json.dumps({k: v for k, v in header.items() if k != "mac"}, sort_keys=True,
                      separators=separators).encode()
    h = hmac.new(str(token).encode(), body, hashlib.sha256)
    for f in frames:
        h.update(len(f).to_bytes(8, "little"))
        h.update(f)
    return h.hexdigest()


def _pack(header: dict[str, Any], frames: list[bytes], token: str | None) -> list[bytes]:
    header = {"protocol": PROTOCOL, "version": VERSION, **header}
    if token:
        header["mac"] = compute_mac(token, header, frames)
    return [json.dumps(header, allow_nan=False).encode()] + frames


def json_object(raw: bytes, limits: Limits = Limits(), what: str = "header") -> dict[str, Any]:
    """Untrusted bytes -> a JSON object: nesting depth checked (without parsing) against
    ``limits.max_depth`` first, then UTF-8 JSON, then that it is an object.

    Raises:
        ProtocolError: naming ``what`` and the problem.
    """
    depth = json_depth(raw)
    if depth > limits.max_depth:
        raise ProtocolError(f"{what} JSON nests {depth} levels deep; at most {limits.max_depth} are allowed")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not UTF-8 JSON ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def peek_header(frames: list[bytes], limits: Limits = Limits()) -> dict[str, Any]:
    """Parse and check the header frame (protocol, version, type, sizes); no MAC check."""
    if not frames:
        raise ProtocolError("empty message")
    total = sum(len(f) for f in frames)
    if total > limits.max_bytes:
        raise ProtocolError(f"message of {total} bytes exceeds the limit of {limits.max_bytes} bytes")
    if len(frames[0]) > limits.max_header:
        raise ProtocolError(f"header of {len(frames[0])} bytes exceeds the limit of {limits.max_header}")
    header = json_object(bytes(frames[0]), limits)
    if header.get("protocol") != PROTOCOL:
        raise ProtocolError(f"unknown protocol {header.get('protocol')!r}; expected {PROTOCOL!r}")
    if header.get("version") != VERSION:
        raise ProtocolError(f"unsupported {PROTOCOL} version {header.get('version')!r}; this side speaks {VERSION}")
    if header.get("type") not in TYPES:
        raise ProtocolError(f"unknown message type {header.get('type')!r}; valid choices: {', '.join(TYPES)}")
    bid = header.get("block")
    if not (bid is None and header["type"] == "error") and (
            not isinstance(bid, int) or isinstance(bid, bool) or bid < 0):
        raise ProtocolError(f"header field 'block' must be an integer >= 0 (or null in an error), got {bid!r}"[:300])
    nonce = header.get("nonce")
    if nonce is not None and not (isinstance(nonce, str) and NONCE_PATTERN.fullmatch(nonce)):
        raise ProtocolError("header field 'nonce' must be 8-128 characters of [0-9A-Za-z_-], got "
                            f"{nonce!r}"[:300])
    if "mac" in header and not isinstance(header["mac"], str):
        raise ProtocolError(f"header field 'mac' must be a hex string, got {type(header['mac']).__name__}")
    return header


def json_depth(raw: bytes) -> int:
    """Nesting depth of JSON text, counted without parsing it (brackets inside strings skipped).

    Linear in the length and allocation-free per byte, so a hostile header of many ``[`` is refused
    before the recursive parser sees it."""
    # drop escaped characters, then string literals, then count the bracket nesting
    text = re.sub(rb'\\.', b"", raw)
    text = re.sub(rb'"[^"]*"', b"", text)
    brackets = re.sub(rb"[^\[\]{}]", b"", text)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets, dtype=np.uint8)
    opens = (steps == ord("[")) | (steps == ord("{"))
    return int(np.cumsum(np.where(opens, 1, -1)).max())


def verify_mac(header: dict[str, Any], frames: list[bytes], token: str | None) -> None:
    """Check a parsed header's MAC over ``frames`` (the binary frames after the header); no-op without a token.

    Raises:
        AuthError: the MAC is missing or wrong.
    """
    if not token:
        return
    got = header.get("mac")
    if not isinstance(got, str):
        raise AuthError("message has no 'mac' but this side requires a shared token")
    if not got.isascii():       # a MAC is hex; compare_digest refuses non-ASCII str with a TypeError
        raise AuthError("message authentication failed (the 'mac' is not a hex digest)")
    if not any(hmac.compare_digest(got, compute_mac(token, header, frames, sep)) for sep in _CANONICAL_SEPARATORS):
        raise AuthError("message authentication failed (wrong shared token or altered message)")


def header_int(header: dict[str, Any], key: str, lo: int = 0, hi: int | None = None) -> int:
    v = header.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ProtocolError(f"header field {key!r} must be an integer {rng}, got {v!r}")
    return v


def header_int_list(header: dict[str, Any], key: str, n: int | None, limit: int) -> np.ndarray:
    v = header.get(key)
    if not isinstance(v, list) or len(v) > limit or any(
            not isinstance(x, int) or isinstance(x, bool) or not -2**62 <= x < 2**62 for x in v):
        raise ProtocolError(f"header field {key!r} must be a list of at most {limit} integers in [-2**62, 2**62)")
    if n is not None and len(v) != n:
        raise ProtocolError(f"header field {key!r} has {len(v)} entries, expected {n}")
    return np.asarray(v, dtype=np.int64).reshape(-1)


def header_shape(header: dict[str, Any], key: str, axes: tuple[str, ...]) -> tuple[int, ...]:
    """A header's shape field: a list of ``len(axes)`` integers (ranges are the caller's to check)."""
    v = header.get(key)
    if not isinstance(v, list) or len(v) != len(axes) or any(not isinstance(s, int) or isinstance(s, bool) for s in v):
        raise ProtocolError(f"header field {key!r} must be [{', '.join(axes)}] integers, got {str(v)[:100]}")
    return tuple(v)


# -- images ----------------------------------------------------------------------------
def images_to_png(images: np.ndarray) -> list[bytes]:
    """``uint8 [n, H, W, C]`` -> one PNG file (bytes) per image."""
    import imageio.v3 as iio

    out = []
    for img in images:
        buf = io.BytesIO()
        iio.imwrite(buf, img[..., 0] if img.shape[-1] == 1 else img, extension=".png")
        out.append(buf.getvalue())
    return out


def png_to_images(frames: list[bytes], shape: tuple[int, int, int]) -> np.ndarray:
    """PNG files -> ``uint8 [n, H, W, C]``, each checked against ``shape = (H, W, C)``."""
    import imageio.v3 as iio

    out = np.empty((len(frames), *shape), dtype=np.uint8)
    for i, f in enumerate(frames):
        try:
            img = np.asarray(iio.imread(io.BytesIO(bytes(f)), extension=".png"))
        except Exception as exc:  # imageio raises many types on corrupt data
            raise ProtocolError(f"image {i} is not a readable PNG ({exc.__class__.__name__})") from None
        if img.ndim == 2:
            img = img[..., None]
        if img.dtype != np.uint8 or img.shape != tuple(shape):
            raise ProtocolError(f"PNG image {i} has shape {img.shape} {img.dtype}, header says {tuple(shape)} uint8")
        out[i] = img
    return out


def check_block_header(header: dict[str, Any], limits: Limits = Limits()) -> tuple[
        int, tuple[int, int, int, int], np.ndarray, int, np.ndarray | None]:
    """Type- and range-check the fields of a block header or file-drop manifest, before any image is read.

    Returns:
        ``(block, (n, H, W, C), image_ids int64 [n], repeats, order int64 [n * repeats] or None)``.

    Raises:
        ProtocolError: naming the field, what it holds and what is allowed.
    """
    bid = header_int(header, "block")
    n, h, w, c = header_shape(header, "shape", ("n", "H", "W", "C"))
    if not 1 <= n <= limits.max_images:
        raise ProtocolError(f"block has {n} images; allowed 1..{limits.max_images}")
    if not (1 <= h <= limits.max_side and 1 <= w <= limits.max_side) or c not in (1, 3):
        raise ProtocolError(f"image size {h}x{w}x{c} not allowed (sides 1..{limits.max_side}, channels 1 or 3)")
    if header.get("dtype") != "uint8":
        raise ProtocolError(f"image dtype {header.get('dtype')!r} not supported; valid choices: uint8")
    ids = header_int_list(header, "image_ids", n, limits.max_images)
    if len(np.unique(ids)) != n:
        raise ProtocolError("image_ids of a block must be unique")
    repeats = header_int(header, "repeats", 1, limits.max_repeats)
    order = header.get("order")
    if order is not None:
        order = header_int_list(header, "order", n * repeats, limits.max_presentations)
        in_range = order.size == 0 or (order.min() >= 0 and order.max() < n)
        if not in_range or (np.bincount(order, minlength=n) != repeats).any():
            raise ProtocolError("'order' must show every image index 0..n-1 exactly 'repeats' times")
    return bid, (n, h, w, c), ids, repeats, order


# -- block -----------------------------------------------------------------------------
def encode_block(block: Block, token: str | None = None, encoding: str = "raw") -> list[bytes]:
    """Frames of a ``block`` message."""
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown image encoding {encoding!r}; valid choices: {', '.join(ENCODINGS)}")
    images = np.ascontiguousarray(block.images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ProtocolError(f"block images must be uint8 [n, H, W, C] with C in (1, 3), got {images.shape}")
    frames = [images.tobytes()] if encoding == "raw" else images_to_png(images)
    header = {"type": "block", "block": int(block.block), "attempt": int(block.attempt),
              "image_ids": [int(i) for i in block.image_ids], "shape": list(images.shape), "dtype": "uint8",
              "encoding": encoding, "repeats": int(block.repeats),
              "order": None if block.order is None else [int(i) for i in block.order]}
    if block.nonce is not None:
        header["nonce"] = block.nonce
    return _pack(header, frames, token)


def decode_block(frames: list[bytes], token: str | None = None, limits: Limits = Limits()) -> Block:
    """Check and decode a ``block`` message; raises :class:`ProtocolError` naming the problem."""
    header = peek_header(frames, limits)
    if header["type"] != "block":
        raise ProtocolError(f"expected a 'block' message, got {header['type']!r}")
    verify_mac(header, frames[1:], token)
    bid, (n, h, w, c), ids, repeats, order = check_block_header(header, limits)
    enc = header.get("encoding")
    if enc == "raw":
        if len(frames) != 2 or len(frames[1]) != n * h * w * c:
            got = [len(f) for f in frames[1:]]
            raise ProtocolError(f"raw images: expected one frame of {n * h * w * c} bytes, got frames of {got}")
        images = np.frombuffer(bytes(frames[1]), dtype=np.uint8).reshape(n, h, w, c).copy()
    elif enc == "png":
        if len(frames) != n + 1:
            raise ProtocolError(f"png images: expected {n} image frames, got {len(frames) - 1}")
        images = png_to_images(frames[1:], (h, w, c))
    else:
        raise ProtocolError(f"unknown image encoding {enc!r}; valid choices: {', '.join(ENCODINGS)}")
    attempt = header.get("attempt", 0)
    attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 0 else 0
    return Block(bid, ids, images, repeats, order, attempt, header.get("nonce"))


# -- response --------------------------------------------------------------------------
def encode_reply(reply: Reply, token: str | None = None) -> list[bytes]:
    """Frames of a ``response`` message (values are sent as given, NaN included: for fault tests)."""
    r = np.ascontiguousarray(reply.responses, dtype="<f8")
    if r.ndim == 1:
        r = r[:, None]
    header = {"type": "response", "block": int(reply.block), "image_ids": [int(i) for i in reply.image_ids],
              "shape": list(r.shape), "dtype": "float64", **reply.meta}
    if reply.nonce is not None:
        header["nonce"] = reply.nonce
    return _pack(header, [r.tobytes()], token)


def check_response_header(header: dict[str, Any], limits: Limits = Limits()) -> tuple[int, tuple[int, int], np.ndarray]:
    """Type- and range-check the fields of a response header (any transport), before reading values.

    Returns:
        ``(block, (presentations P, channels), image_ids int64 [P])``.

    Raises:
        ProtocolError: naming the field, what it holds and what is allowed.
    """
    bid = header_int(header, "block")
    p, ch = header_shape(header, "shape", ("presentations", "channels"))
    if not (1 <= p <= limits.max_presentations and 1 <= ch <= limits.max_channels):
        raise ProtocolError(f"response shape {[p, ch]} outside the limits "
                            f"(1..{limits.max_presentations} x 1..{limits.max_channels})")
    if header.get("dtype") != "float64":
        raise ProtocolError(f"response dtype {str(header.get('dtype'))[:50]!r} not supported; valid choices: float64")
    ids = header_int_list(header, "image_ids", p, limits.max_presentations)
    return bid, (p, ch), ids


def decode_reply(frames: list[bytes], token: str | None = None, limits: Limits = Limits()) -> Reply:
    """Check and decode a ``response`` message (shape, ids, finite values, MAC)."""
    header = peek_header(frames, limits)
    if header["type"] != "response":
        raise ProtocolError(f"expected a 'response' message, got {header['type']!r}")
    verify_mac(header, frames[1:], token)
    bid, (p, ch), ids = check_response_header(header, limits)
    if len(frames) != 2 or len(frames[1]) != p * ch * 8:
        raise ProtocolError(f"response: expected one frame of {p * ch * 8} bytes, got {[len(f) for f in frames[1:]]}")
    resp = np.frombuffer(bytes(frames[1]), dtype="<f8").reshape(p, ch).astype(np.float64)
    check_values(resp, bid, limits)
    return Reply(bid, ids, resp, nonce=header.get("nonce"))


def check_values(resp: np.ndarray, block: int, limits: Limits = Limits(), label: str | None = None) -> None:
    """Refuse a response matrix holding NaN, inf or a value beyond ``limits.max_abs_value``
    (``label``: how the message names the block, default ``"block <block>"``).

    Raises:
        ProtocolError: naming the value, its presentation and channel, and the limit.
    """
    bad = ~np.isfinite(resp) | (np.abs(np.nan_to_num(resp, nan=0.0, posinf=np.inf)) > limits.max_abs_value)
    if bad.any():
        i, j = map(int, np.argwhere(bad.reshape(len(resp), -1))[0])
        raise ProtocolError(f"response of {label or f'block {block}'} holds {resp.reshape(len(resp), -1)[i, j]} "
                            f"at presentation "
                            f"{i}, channel {j}; values must be finite (no NaN or inf) with magnitude <= {limits.max_abs_value:g}")


def validate_reply_for(reply: Reply, block: Block) -> None:
    """Check that ``reply`` answers ``block``: same id, only its image ids, each image exactly ``repeats`` times.

    ``reply.image_ids`` (``int [P]``) must hold every id of ``block.image_ids`` (``int [n]``) exactly
    ``block.repeats`` times, so ``P = n * repeats`` (the order is free); ``reply.responses`` is ``[P, channels]``.

    Raises:
        IncompleteReply: fewer presentations than asked for, none of them wrong (truncated reply).
        ProtocolError: anything else that does not match (the message names expected and received).
    """
    if reply.block != block.block:
        raise ProtocolError(f"reply is for block {reply.block}, expected {block.block}")
    if block.nonce is not None and reply.nonce is not None and reply.nonce != block.nonce:
        raise ProtocolError(f"reply to block {block.block} carries nonce {reply.nonce!r}, not the block's "
                            f"{block.nonce!r} (a replayed or stale reply)")
    ids = np.asarray(reply.image_ids).reshape(-1)
    if len(np.asarray(reply.responses)) != len(ids):
        raise ProtocolError(f"reply to block {block.block} has {len(np.asarray(reply.responses))} response rows "
                            f"but {len(ids)} image ids")
    known = set(int(i) for i in block.image_ids)
    stray = [int(i) for i in ids if int(i) not in known]
    if stray:
        raise ProtocolError(f"reply to block {block.block} names image ids {stray[:5]} that the block does not hold")
    n, rep, expected = len(block.image_ids), int(block.repeats), block.n_presentations
    uniq, cnt = np.unique(ids.astype(np.int64), return_counts=True)
    shown = dict(zip(uniq.tolist(), cnt.tolist()))
    what = f"{len(ids)} presentations, expected {expected} ({n} images x {rep} repeats)"
    over = [(i, c) for i, c in shown.items() if c > rep]
    if over:  # (more than n * repeats presentations of known ids implies this)
        detail = "; ".join(f"image id {i} shown {c} times, expected {rep}" for i, c in over[:5])
        raise ProtocolError(f"reply to block {block.block}: {detail} ({what})")
    if len(ids) < expected:
        short = [(int(i), shown.get(int(i), 0)) for i in block.image_ids if shown.get(int(i), 0) < rep]
        detail = ", ".join(f"id {i} {c} of {rep}" for i, c in short[:5]) + (", ..." if len(short) > 5 else "")
        raise IncompleteReply(f"reply to block {block.block} has {what}; truncated? (short: {detail})")



def check_waits(timeout: float, retries: int, backoff: float) -> None:
    """The waiting parameters every rig client takes, checked once for all four transports.

    Raises:
        ConfigError: ``timeout`` not > 0 seconds, ``retries`` below 0, or ``backoff`` not a finite number >= 0.
    """
    import math
    from numbers import Real

    if not float(timeout) > 0:
        raise ConfigError(f"rig timeout must be > 0 seconds, got {timeout!r}")
    if int(retries) < 0:
        raise ConfigError(f"rig retries must be >= 0, got {retries!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, Real) or not (0 <= backoff and math.isfinite(backoff)):
        raise ConfigError(f"rig backoff (extra seconds of waiting before a re-request, doubled at each one) must be "
                          f"a finite number >= 0, got {backoff!r}")


class SlowRigWarning:
    """Says that a block was answered only after resends: a warning once a run, then at info level. A rig that
    shows a block again for each resend spends presentations on it, so the timeout should exceed the time a
    block takes to present. One per client (``rig``: how the messages name it, e.g. ``"rig tcp://..."``)."""

    def __init__(self, rig: str, timeout: float, logger: logging.Logger) -> None:
        self.rig, self.timeout, self.log, self.said = rig, float(timeout), logger, False

    def __call__(self, block: Block, resends: int, took: float, why: str) -> None:
        """``block`` was answered ``took`` s after it was first sent, after ``resends`` resends (``why``: what the
        transport knows of the cause)."""
        msg = (f"{self.rig}: block {block.block} ({block.n_presentations} presentations) was answered {took:.3g} s "
               f"after it was first sent, after {resends} resend(s) at a timeout of {self.timeout:.3g} s ({why}); a "
               "rig that shows a block again for each resend wastes presentations: raise the timeout (--timeout) "
               "above the time the rig takes to present a block")
        (self.log.info if self.said else self.log.warning)(msg)
        self.said = True


def attempt_wait(timeout: float, backoff: float, max_backoff: float, attempt: int) -> float:
    """Seconds to wait for a reply on attempt ``attempt`` (0 = the first send): ``timeout`` plus, from the
    second attempt on, ``backoff * 2**(attempt - 1)`` capped at ``max_backoff`` (the power is capped too:
    ``2 ** 1100`` is larger than any float, and a run with ``retries=1100`` ended in an OverflowError)."""
    if not attempt:
        return float(timeout)
    return float(timeout) + min(float(max_backoff), float(backoff) * 2.0 ** min(attempt - 1, 60))


def accept_reply(decode: Callable[[], Reply], block: Block, nonces: Collection[str], ignore: Callable[[str], None], *,
                 nonce_required: bool) -> tuple[Reply | None, str | None]:
    """The end of a client's wait for ``block``, shared by the transports: decode a response and check it.

    Args:
        decode: decodes the received response (verifies its MAC; raises :class:`AuthError` or
            :class:`ProtocolError`).
        nonces: the nonces of this block's attempts (a late reply to an earlier attempt still counts).
        ignore: records a message that is dropped, with the reason.
        nonce_required: a reply without one of ``nonces`` is dropped (with a token, or a transport
            whose rigs always echo it); otherwise only a reply carrying a wrong nonce is.

    Returns:
        ``(reply, None)``: the answer; ``(None, reason)``: the attempt failed (an authentic but invalid
        reply); ``(None, None)``: dropped, keep waiting (unsigned or forged replies change nothing,
        replayed or stale ones neither).
    """
    try:
        reply = decode()
    except AuthError as exc:
        ignore(f"unauthenticated reply for block {block.block}: {exc}")
        return None, None
    except ProtocolError as exc:
        ignore(f"invalid reply for block {block.block}: {exc}")
        return None, f"invalid reply: {exc}"
    if (nonce_required or reply.nonce is not None) and reply.nonce not in nonces:
        ignore(f"reply for block {block.block} with a nonce of no attempt of it (replayed or stale)")
        return None, None
    try:
        validate_reply_for(reply, replace(block, nonce=reply.nonce))
    except ProtocolError as exc:
        ignore(f"invalid reply for block {block.block}: {exc}")
        return None, f"invalid reply: {exc}"
    return reply, None

def encode_error(reason: str, block: int | None = None, token: str | None = None,
                 nonce: str | None = None) -> list[bytes]:
    """Frames of an ``error`` message (``nonce``: that of the block it answers, when known)."""
    header: dict[str, Any] = {"type": "error", "block": block, "reason": str(reason)[:2000]}
    if nonce is not None:
        header["nonce"] = nonce
    return _pack(header, [], token)


def decode_error(frames: list[bytes], token: str | None = None, limits: Limits = Limits()) -> dict[str, Any]:
    """Header of an ``error`` message, authenticated like any other message when a token is set.

    Raises:
        ProtocolError: not an error message, or (with ``token``) an unsigned or forged one, which
            must not be allowed to abort a block attempt.
    """
    header = peek_header(frames, limits)
    if header.get("type") != "error":
        raise ProtocolError(f"expected an 'error' message, got {header.get('type')!r}")
    verify_mac(header, frames[1:], token)
    return header

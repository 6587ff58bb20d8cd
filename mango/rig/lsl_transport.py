"""Lab Streaming Layer (LSL) transport of ``mango-rig/1``: marker + image streams out, a response stream in.

LSL is common glue in electrophysiology labs between the stimulus PC, the amplifier or
spike sorter and LabRecorder (which writes every stream to one XDF file).
This transport speaks the same block/response content as the ZeroMQ and file-drop
transports, carried as JSON strings in three LSL streams (``NAME`` defaults to ``mango``)::

    NAME-markers    type "Markers"        MANGO publishes   1 channel, string, irregular rate
                    one JSON sample per block attempt (and one "end" sample when MANGO closes):
                    {"protocol": "mango-rig", "version": 1, "type": "block", "run": "<run id>",
                     "block": 12, "attempt": 0, "nonce": "<32 hex>", "image_ids": [...],
                     "shape": [n, H, W, C], "dtype": "uint8", "encoding": "png",
                     "sha256": [<hex digest of each PNG>], "repeats": 2, "order": [...],
                     "mac": "<HMAC, only with a shared token>"}
    NAME-images     type "MangoImages"    MANGO publishes   1 channel, string, irregular rate
                    one JSON sample per image, pushed *before* its block's marker:
                    {"protocol": "mango-rig", "version": 1, "type": "image", "run": ...,
                     "block": 12, "nonce": "<the marker's>", "index": 0, "image_id": 1200000,
                     "png": "<base64 of the PNG file>"}
    NAME-responses  type "MangoResponses" the lab publishes 1 channel, string, irregular rate
                    one JSON sample per answered block:
                    {"protocol": "mango-rig", "version": 1, "type": "response", "run": <echoed>,
                     "block": 12, "nonce": <echoed>, "image_ids": [per presentation],
                     "shape": [P, channels], "dtype": "float64",
                     "responses": [[counts of presentation 0, one per channel], ...],
                     "onsets": [LSL time of each presentation's onset] (optional), "mac": ...}
                    or an error: {"type": "error", "run", "block", "nonce", "reason"}

**Why the images travel in their own LSL stream** (and not in a shared folder, which is what
the file-drop transport does): one network protocol and no network drive to mount on the
stimulus PC; LSL finds the streams by name on the lab network; LabRecorder, if it runs,
records the exact pixels shown beside the markers and the responses in the same XDF file
(provenance for free); and the marker stream stays small (markers are meant to be short,
and marker viewers show them). The marker lists the SHA-256 of every PNG, so the stimulus
side checks that it shows exactly the images of this block attempt, and with a shared
token the marker's MAC authenticates the images through these digests. Base64 text (not
raw bytes) keeps the samples valid UTF-8 strings for every LSL binding (MATLAB, C#, ...).
A lab that prefers a shared folder uses the file-drop transport instead.

**Onsets.** MANGO does not show the images, so it cannot know when they appeared: each
marker carries the LSL timestamp of its sending (the sample's own timestamp) and the order
it asks for; the stimulus side reports when each presentation really started in the
response's optional ``onsets`` (its LSL clock), which MANGO keeps in ``Reply.meta``.

Matching and validation (search side, :class:`LslRigClient`): every response sample is
untrusted input. Its size is checked before it is parsed (liblsl itself has already received
it whole: LSL has no per-sample size limit of its own), then the header like any
``mango-rig/1`` header (:func:`~mango.rig.protocol.peek_header`), the MAC
(:func:`~mango.rig.protocol.verify_mac`), the field types and limits, the values
(:func:`~mango.rig.protocol.check_values`: finite, bounded) and the match with the block in
flight (:func:`~mango.rig.protocol.validate_reply_for`). Samples of another run, another
block (late, duplicate, unknown) or without the nonce of one of the block's attempts are
logged and ignored; a response that names the block in flight but is invalid (NaN, wrong
ids, wrong counts) fails the attempt, and the block is sent again (new attempt, new nonce).
Unlike the ZeroMQ transport, the response must echo the nonce even without a token: the
marker stream is visible to every program on the network, so the nonce is what ties an
answer to this attempt of this block.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import ConfigError
from .filedrop import check_run_id
from .model import wrong_block_reply
from .protocol import (NONCE_PATTERN, PROTOCOL, VERSION, AuthError, Block, Limits, ProtocolError, Reply, RigError,
                       SlowRigWarning, accept_reply,
                       check_block_header, check_response_header, check_values, compute_mac, header_int,
                       images_to_png, json_object, new_nonce, peek_header, png_to_images, verify_mac, attempt_wait,
                       check_waits)

__all__ = ["DEFAULT_NAME", "MARKER_TYPE", "IMAGE_TYPE", "RESPONSE_TYPE", "LslRigClient", "serve_lsl",
           "stream_names", "check_stream_name", "encode_marker", "encode_images", "decode_marker", "decode_image",
           "encode_response", "encode_lsl_error", "decode_response"]

log = logging.getLogger(__name__)

DEFAULT_NAME = "mango"
MARKER_TYPE = "Markers"
IMAGE_TYPE = "MangoImages"
RESPONSE_TYPE = "MangoResponses"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_stream_name(name: str) -> str:
    """The stream name prefix: 1-100 characters of ``[A-Za-z0-9_.-]`` starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"LSL stream name {name!r} is not usable; valid choices: 1-100 characters of "
                          "[A-Za-z0-9_.-] starting with a letter or digit, e.g. 'mango' or 'mango-rig2'")
    return name


def stream_names(name: str = DEFAULT_NAME) -> dict[str, str]:
    """The three stream names for prefix ``name``: ``{"markers", "images", "responses"}``."""
    name = check_stream_name(name)
    return {"markers": f"{name}-markers", "images": f"{name}-images", "responses": f"{name}-responses"}


def _check_run(run: str) -> str:
    return check_run_id(run)


# -- wire format ---------------------------------------------------------------------------------------------
def _dump(header: dict[str, Any], token: str | None, allow_nan: bool = False) -> str:
    """``header`` as a ``mango-rig/1`` JSON sample, with its MAC when ``token`` is set (no binary frames:
    the MAC covers the canonical JSON of everything but ``mac``)."""
    header = {"protocol": PROTOCOL, "version": VERSION, **header}
    if token:
        header["mac"] = compute_mac(token, header, [])
    return json.dumps(header, allow_nan=allow_nan)


def _raw(sample: Any) -> bytes:
    """The payload of one pulled sample (``str``, ``bytes`` or a 1-element array/list of them)."""
    if isinstance(sample, (list, tuple, np.ndarray)):
        if len(sample) != 1:
            raise ProtocolError(f"expected a 1-channel string sample, got {len(sample)} channels")
        sample = sample[0]
    if isinstance(sample, str):
        return sample.encode("utf-8", errors="surrogatepass")
    if isinstance(sample, (bytes, bytearray)):
        return bytes(sample)
    raise ProtocolError(f"expected a string sample, got {type(sample).__name__}")


def _load(raw: bytes, limits: Limits, what: str) -> dict[str, Any]:
    """Size, depth and JSON checks of a sample that is not one of the header types (images, end markers)."""
    if len(raw) > limits.max_bytes:
        raise ProtocolError(f"{what} sample of {len(raw)} bytes exceeds the limit of {limits.max_bytes} bytes")
    obj = json_object(raw, limits, f"{what} sample")
    if obj.get("protocol") != PROTOCOL or obj.get("version") != VERSION:
        raise ProtocolError(f"{what} sample: unknown protocol {str(obj.get('protocol'))[:50]!r} version "
                            f"{str(obj.get('version'))[:20]!r}; expected {PROTOCOL!r} {VERSION}")
    return obj


def _header(raw: bytes, limits: Limits) -> dict[str, Any]:
    """:func:`peek_header` of a JSON sample that is the whole message (so the header may use the whole
    message size limit)."""
    return peek_header([raw], replace(limits, max_header=limits.max_bytes))


def _run_of(header: dict[str, Any]) -> str | None:
    run = header.get("run")
    return run if isinstance(run, str) and len(run) <= 200 else None


def encode_images(block: Block, run: str) -> tuple[list[str], list[str]]:
    """Image samples of ``block`` (one per image, uint8 ``[n, H, W, C]`` -> PNG -> base64) and the
    SHA-256 hex digests of the PNG files (``[n]``, for the marker)."""
    pngs = images_to_png(np.ascontiguousarray(block.images, dtype=np.uint8))
    samples = [_dump({"type": "image", "run": run, "block": int(block.block), "nonce": block.nonce, "index": i,
                      "image_id": int(iid), "png": base64.b64encode(png).decode("ascii")}, None)
               for i, (iid, png) in enumerate(zip(block.image_ids, pngs))]
    return samples, [hashlib.sha256(png).hexdigest() for png in pngs]


def encode_marker(block: Block, run: str, digests: list[str], token: str | None = None) -> str:
    """The marker sample announcing one attempt of ``block`` (its images go in the image stream)."""
    images = np.asarray(block.images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ProtocolError(f"block images must be uint8 [n, H, W, C] with C in (1, 3), got {images.shape}")
    return _dump({"type": "block", "run": run, "block": int(block.block), "attempt": int(block.attempt),
                  "nonce": block.nonce, "image_ids": [int(i) for i in block.image_ids],
                  "shape": [int(s) for s in images.shape], "dtype": "uint8", "encoding": "png",
                  "sha256": list(digests), "repeats": int(block.repeats),
                  "order": None if block.order is None else [int(i) for i in block.order]}, token)


def decode_marker(raw: bytes, token: str | None = None, limits: Limits = Limits()) -> dict[str, Any]:
    """Stimulus side: check a marker sample -> a dict with ``type`` ``"block"`` (and the checked fields
    ``block``, ``shape`` (n, H, W, C), ``image_ids`` int64 [n], ``repeats``, ``order``, ``sha256``, ``nonce``,
    ``run``, ``attempt``) or ``"end"`` (``run``).

    Raises:
        AuthError: missing or wrong MAC with a token set (the marker must change nothing).
        ProtocolError: anything else, named.
    """
    obj = _load(raw, limits, "marker")
    if obj.get("type") == "end":
        verify_mac(obj, [], token)
        return {"type": "end", "run": _run_of(obj)}
    header = _header(raw, limits)
    if header["type"] != "block":
        raise ProtocolError(f"expected a 'block' or 'end' marker, got {header['type']!r}")
    verify_mac(header, [], token)
    bid, shape, ids, repeats, order = check_block_header(header, limits)
    if header.get("encoding") != "png":
        raise ProtocolError(f"marker encoding {header.get('encoding')!r} not supported over LSL; valid choices: png")
    nonce = header.get("nonce")
    if nonce is None:
        raise ProtocolError(f"marker of block {bid} has no 'nonce' (the response must echo it)")
    run = _run_of(header)
    if run is None:
        raise ProtocolError("marker field 'run' must be a string of at most 200 characters")
    digests = header.get("sha256")
    if (not isinstance(digests, list) or len(digests) != shape[0]
            or any(not isinstance(d, str) or not _HEX64.fullmatch(d) for d in digests)):
        raise ProtocolError(f"marker field 'sha256' must list {shape[0]} lowercase hex SHA-256 digests")
    attempt = header.get("attempt", 0)
    attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 0 else 0
    return {"type": "block", "block": bid, "shape": shape, "image_ids": ids, "repeats": repeats, "order": order,
            "sha256": digests, "nonce": nonce, "run": run, "attempt": attempt, "trusted": bool(token)}


def decode_image(raw: bytes, limits: Limits = Limits()) -> tuple[str, int, bytes]:
    """Stimulus side: check an image sample -> ``(nonce, index, png bytes)`` (the PNG itself is checked
    against the marker's digest and shape when the block is assembled)."""
    obj = _load(raw, limits, "image")
    if obj.get("type") != "image":
        raise ProtocolError(f"expected an 'image' sample, got type {str(obj.get('type'))[:50]!r}")
    nonce = obj.get("nonce")
    if not isinstance(nonce, str) or not NONCE_PATTERN.fullmatch(nonce):
        raise ProtocolError("image sample field 'nonce' must be 8-128 characters of [0-9A-Za-z_-]")
    index = header_int(obj, "index", 0, limits.max_images - 1)
    data = obj.get("png")
    if not isinstance(data, str):
        raise ProtocolError("image sample field 'png' must be a base64 string")
    try:
        png = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ProtocolError("image sample field 'png' is not valid base64") from None
    return nonce, index, png


def encode_response(reply: Reply, run: str, token: str | None = None, onsets: np.ndarray | None = None,
                    allow_nan: bool = False) -> str:
    """Lab side: the response sample answering a block (``reply.nonce`` = the marker's nonce, echoed;
    ``reply.responses`` float [P, channels]; ``onsets`` optional float [P] LSL times; ``allow_nan`` only
    for fault injection)."""
    r = np.asarray(reply.responses, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    header: dict[str, Any] = {"type": "response", "run": run, "block": int(reply.block), "nonce": reply.nonce,
                              "image_ids": [int(i) for i in reply.image_ids], "shape": [int(s) for s in r.shape],
                              "dtype": "float64", "responses": r.tolist()}
    if onsets is not None:
        header["onsets"] = [float(t) for t in onsets]
    return _dump(header, token, allow_nan)


def encode_lsl_error(reason: str, block: int | None, run: str | None, nonce: str | None,
                     token: str | None = None) -> str:
    """Lab side: an error sample (a block it rejects); sign it (``token``) only for an authenticated marker."""
    return _dump({"type": "error", "run": run, "block": block, "nonce": nonce, "reason": str(reason)[:2000]}, token)


def decode_response(raw: bytes, token: str | None = None, limits: Limits = Limits()) -> Reply:
    """Search side: check a response sample -> :class:`Reply` (``image_ids`` int64 [P], ``responses``
    float64 [P, channels], finite and within ``limits``; ``nonce``; ``meta`` with ``run`` and ``onsets``).

    Raises:
        AuthError: missing or wrong MAC with a token set.
        ProtocolError: a malformed response, named.
    """
    header = _header(raw, limits)
    if header["type"] != "response":
        raise ProtocolError(f"expected a 'response' sample, got {header['type']!r}")
    verify_mac(header, [], token)
    bid, (p, ch), ids = check_response_header(header, limits)
    rows = header.get("responses")
    want = f"response field 'responses' must be {p} lists of {ch} numbers (shape [{p}, {ch}], as its 'shape' says)"
    if not isinstance(rows, list) or len(rows) != p:
        got = f"{len(rows)} rows" if isinstance(rows, list) else type(rows).__name__
        raise ProtocolError(f"{want}; got {got}")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != ch:
            got = f"{len(row)} values" if isinstance(row, list) else f"{type(row).__name__} {str(row)[:40]!r}"
            raise ProtocolError(f"{want}; presentation {i} has {got}")
        for c, v in enumerate(row):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ProtocolError(f"{want}; presentation {i}, channel {c} holds {type(v).__name__} "
                                    f"{str(v)[:40]!r}, not a number")
    try:
        resp = np.asarray(rows, dtype=np.float64).reshape(p, ch)
    except (OverflowError, ValueError):
        raise ProtocolError(f"response of block {bid} holds a number too large for float64") from None
    check_values(resp, bid, limits)
    meta: dict[str, Any] = {"run": _run_of(header)}
    onsets = header.get("onsets")
    if onsets is not None:
        if (not isinstance(onsets, list) or len(onsets) != p
                or any(not isinstance(t, (int, float)) or isinstance(t, bool) for t in onsets)):
            raise ProtocolError(f"response field 'onsets' must be {p} numbers (LSL times) or absent")
        t = np.asarray(onsets, dtype=np.float64)
        if not np.isfinite(t).all():
            raise ProtocolError(f"response of block {bid}: 'onsets' must be finite LSL times")
        meta["onsets"] = t
    return Reply(bid, ids, resp, meta=meta, nonce=header.get("nonce"))


# -- LSL plumbing --------------------------------------------------------------------------------------------
def _pylsl() -> Any:
    try:
        import pylsl
    except ImportError as exc:  # pylsl missing, or its bundled liblsl could not be loaded
        raise ConfigError(f"the LSL transport needs pylsl (pip install pylsl; its wheel ships liblsl): {exc}") from None
    return pylsl


def _lost_error() -> type[Exception]:
    """pylsl's ``LostError`` (raised when a stream's source went away; not exported at pylsl's top level)."""
    _pylsl()
    from pylsl.util import LostError

    return LostError


def _outlet(name: str, stype: str, source: str, run: str | None = None) -> Any:
    pylsl = _pylsl()
    info = pylsl.StreamInfo(name, stype, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source)
    desc = info.desc()
    desc.append_child_value("protocol", f"{PROTOCOL}/{VERSION}")
    if run is not None:
        desc.append_child_value("run", run)
    return pylsl.StreamOutlet(info)


def _usable(info: Any, stype: str) -> bool:
    import pylsl

    return info.type() == stype and info.channel_count() == 1 and info.channel_format() == pylsl.cf_string


def _described(info: Any) -> str:
    """``"of type 'X' with 2 float32 channels"``: what a resolved stream is, for an error message."""
    formats = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}
    n = info.channel_count()
    return (f"of type {info.type()!r} with {n} {formats.get(info.channel_format(), 'unknown-format')} "
            f"channel{'s' * (n != 1)}")


def _open_inlet(info: Any, timeout: float) -> Any:
    pylsl = _pylsl()
    inlet = pylsl.StreamInlet(info, max_buflen=60, recover=False, as_numpy=True)
    inlet.open_stream(timeout=max(0.01, timeout))
    return inlet


class LslRigClient:
    """Search side over LSL: publish each block (images + marker), read its answer from the lab's stream.

    Args:
        name: stream name prefix; MANGO publishes ``NAME-markers`` and ``NAME-images`` and reads
            ``NAME-responses`` (see :func:`stream_names`). Give each concurrent run its own prefix.
        run: run id written into every marker; only responses that echo it are used (``mango rig-run``
            passes its folder's run id; default: a fresh random one).
        token: shared secret; markers carry an HMAC-SHA256 and only responses with a valid one count.
        timeout: seconds to wait for a response per attempt (> 0).
        retries: resends after the first attempt (>= 0); then :class:`RigError`.
        backoff, max_backoff: extra listening time before resend ``k``: ``backoff * 2**k`` s, capped.
        connect_timeout: seconds (per attempt) to find the lab's response stream and for the lab to
            subscribe to MANGO's streams, before the block is sent (default ``max(timeout, 5)``).
        limits: size limits every inbound sample is checked against.
    """

    def __init__(self, name: str = DEFAULT_NAME, *, run: str | None = None, token: str | None = None,
                 timeout: float = 10.0, retries: int = 5, backoff: float = 0.5, max_backoff: float = 10.0,
                 connect_timeout: float | None = None, limits: Limits = Limits()) -> None:
        check_waits(timeout, retries, backoff)
        self.names = stream_names(name)
        self.name = name
        self.run = _check_run(run) if run else f"mango-{new_nonce()[:12]}"
        self.token = token or None
        self.timeout, self.retries = float(timeout), int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.connect_timeout = max(self.timeout, 5.0) if connect_timeout is None else float(connect_timeout)
        if not self.connect_timeout > 0:
            raise ConfigError(f"connect_timeout must be > 0 seconds, got {connect_timeout!r}")
        self.limits = limits
        self.answered: set[int] = set()
        self._late = SlowRigWarning(f"LSL rig {self.names['responses']!r}", self.timeout, log)   # once a run
        self.ignored: list[dict[str, Any]] = []  # what was dropped and why (for tests and reports)
        self._markers: Any = None
        self._images: Any = None
        self._resolver: Any = None
        self._inlet: Any = None
        self._inlet_uid: str | None = None
        self._gone: set[str] = set()  # uids of response streams that were lost (a restarted rig has a new one)

    # -- streams ----------------------------------------------------------------------------------------------
    def _open(self) -> None:
        pylsl = _pylsl()
        if self._markers is None:
            self._markers = _outlet(self.names["markers"], MARKER_TYPE, f"{self.names['markers']}@{self.run}", self.run)
            self._images = _outlet(self.names["images"], IMAGE_TYPE, f"{self.names['images']}@{self.run}", self.run)
            self._resolver = pylsl.ContinuousResolver(prop="name", value=self.names["responses"], forget_after=2.0)

    def _drop_inlet(self) -> None:
        if self._inlet is not None:
            try:
                self._inlet.close_stream()
            except Exception:  # a lost stream may refuse; nothing to release then
                pass
        self._inlet, self._inlet_uid = None, None

    def _connect(self, deadline: float) -> str | None:
        """Have an inlet on the lab's response stream and subscribers on both outlets; ``None`` when ready,
        else why not by ``deadline``."""
        self._open()
        while True:
            found = [i for i in self._resolver.results() if _usable(i, RESPONSE_TYPE) and i.uid() not in self._gone]
            uids = {i.uid() for i in found}
            if self._inlet is not None and self._inlet_uid not in uids and found:
                log.info("LSL rig %s: the response stream was replaced (rig restarted?); reconnecting",
                         self.names["responses"])
                self._drop_inlet()
            if self._inlet is None and found:
                if len(uids) > 1:
                    log.warning("LSL rig: %d streams named %r are on the network; using the newest", len(uids),
                                self.names["responses"])
                info = max(found, key=lambda i: i.created_at())
                try:
                    self._inlet = _open_inlet(info, deadline - time.monotonic())
                    self._inlet_uid = info.uid()
                except Exception as exc:  # pylsl raises TimeoutError / LostError / RuntimeError
                    log.info("LSL rig: could not open %r yet: %s", self.names["responses"], exc)
                    self._inlet = None
            if self._inlet is not None and self._markers.have_consumers() and self._images.have_consumers():
                return None
            if time.monotonic() >= deadline:
                if self._inlet is None:
                    unfit = [_described(i) for i in self._resolver.results() if not _usable(i, RESPONSE_TYPE)]
                    if unfit:       # the lab's stream is there, in another format: say what is wrong with it
                        return (f"the LSL stream named {self.names['responses']!r} is {unfit[0]}, not of type "
                                f"{RESPONSE_TYPE!r} with 1 string channel: the lab side must publish its responses "
                                "as JSON strings (PROTOCOL_LSL.md)")
                    return (f"no LSL stream named {self.names['responses']!r} of type {RESPONSE_TYPE!r} (1 string "
                            "channel) found; is the acquisition side running on this LSL network?")
                return (f"the stimulus side has not subscribed to {self.names['markers']!r} and "
                        f"{self.names['images']!r}")
            time.sleep(0.01)

    def close(self) -> None:
        """Announce the end of the run on the marker stream (best effort) and close all streams."""
        if self._markers is not None:
            try:
                if self._markers.have_consumers():
                    self._markers.push_sample([_dump({"type": "end", "run": self.run}, self.token)])
                    time.sleep(0.05)  # let the sample leave before the outlet goes
            except Exception:  # closing must not raise over a broken network
                pass
        self._drop_inlet()
        self._markers = self._images = self._resolver = None

    def __enter__(self) -> "LslRigClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- protocol ---------------------------------------------------------------------------------------------
    def _ignore(self, why: str, block: Any) -> None:
        log.warning("LSL rig %s: ignored a sample (%s)", self.names["responses"], why)
        self.ignored.append({"block": block, "reason": why})

    def _send(self, block: Block) -> None:
        samples, digests = encode_images(block, self.run)
        for s in samples:
            self._images.push_sample([s])
        self._markers.push_sample([encode_marker(block, self.run, digests, self.token)])

    def _listen(self, block: Block, deadline: float, nonces: Collection[str]) -> tuple[Reply | None, str | None]:
        """Wait until ``deadline`` for a valid reply to ``block``; (reply, None) or (None, failure reason)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None
            try:
                sample, _ = self._inlet.pull_sample(timeout=min(left, 0.5))
            except _lost_error():
                self._gone.add(str(self._inlet_uid))
                self._drop_inlet()
                return None, f"the stream {self.names['responses']!r} was lost (rig restarted or gone)"
            if sample is None:
                continue
            try:
                raw = _raw(sample)
                header = _header(raw, self.limits)
            except ProtocolError as exc:
                self._ignore(f"malformed sample: {exc}", None)
                continue
            bid, run, nonce = header.get("block"), _run_of(header), header.get("nonce")
            if run != self.run:
                self._ignore(f"{header['type']} of run {str(header.get('run'))[:60]!r}, this run is {self.run!r}",
                             bid)
                continue
            if bid != block.block:
                kind = "duplicate" if bid in self.answered else "late or unknown"
                self._ignore(f"{kind} {header['type']} for block {bid!r} while waiting for block {block.block}", bid)
                continue
            if nonce not in nonces:
                self._ignore(f"{header['type']} for block {bid} without the nonce of one of its attempts "
                             f"(got {str(nonce)[:40]!r}: stale, replayed, or a rig that does not echo 'nonce')", bid)
                continue
            if header["type"] == "error":
                try:
                    verify_mac(header, [], self.token)
                except AuthError as exc:
                    self._ignore(f"unauthenticated error for block {bid}: {exc} (reason given: "
                                 f"{str(header.get('reason'))[:200]!r})", bid)
                    continue
                return None, f"rig reported an error: {str(header.get('reason'))[:500]!r}"
            if header["type"] != "response":
                self._ignore(f"unexpected {header['type']!r} sample", bid)
                continue
            reply, why = accept_reply(lambda: decode_response(raw, self.token, self.limits), block, nonces,
                                      lambda reason: self._ignore(reason, bid), nonce_required=True)
            if reply is not None or why is not None:
                return reply, why

    def present(self, block: Block) -> Reply:
        """Publish ``block`` and return the lab's validated reply (``image_ids`` int64 [n * repeats],
        ``responses`` float64 [n * repeats, channels], ``meta["onsets"]`` when the lab sends them).

        Raises:
            RigError: no valid reply after ``1 + retries`` attempts (the message lists each attempt's failure).
        """
        failures: list[str] = []
        nonces: dict[str, int] = {}   # each attempt's nonce -> the attempt: a late reply to one is still the answer
        first_sent = time.monotonic()
        for attempt in range(self.retries + 1):
            block.attempt = attempt
            block.nonce = new_nonce()
            nonces[block.nonce] = attempt
            n_ignored = len(self.ignored)
            why = self._connect(time.monotonic() + self.connect_timeout)
            if why is None:
                self._send(block)
                wait = attempt_wait(self.timeout, self.backoff, self.max_backoff, attempt)
                reply, why = self._listen(block, time.monotonic() + wait, nonces)
                if reply is not None:
                    self.answered.add(block.block)
                    # the attempt it answers (a late reply to an earlier one is accepted): what the log records
                    block.attempt = nonces.get(str(reply.nonce), attempt)
                    if block.attempt < attempt:
                        self._late(block, attempt, time.monotonic() - first_sent,
                                   f"the lab answered attempt {block.attempt} late")
                    return reply
                if why is None:
                    why = f"no reply within {wait:.3g} s"
                    if len(self.ignored) > n_ignored:
                        why += f" (last ignored: {self.ignored[-1]['reason'][:300]})"
            failures.append(f"attempt {attempt}: {why}")
            log.warning("LSL rig %s: block %d %s; %s", self.name, block.block, why,
                        "retrying" if attempt < self.retries else "giving up")
        raise RigError(f"LSL rig {self.names['responses']!r} gave no valid reply to block {block.block} of run "
                       f"{self.run!r} after {self.retries + 1} attempts ({'; '.join(failures)}). Start or fix the "
                       "rig and rerun the same command: the run folder resumes without re-presenting recorded images.")


# -- acquisition side (simulator) ----------------------------------------------------------------------------
class _Streams:
    """The simulator's LSL side: its response outlet and inlets on every MANGO marker/image stream."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.outlet: Any = None
        self.inlets: dict[str, dict[str, Any]] = {"markers": {}, "images": {}}
        self.resolvers: dict[str, Any] = {}
        self.gone: set[str] = set()             # uids of streams that were lost (never reopened: uids are unique)
        self.retry_at: dict[str, float] = {}    # uid -> when to try opening it again
        self._refreshed = 0.0

    def open(self) -> None:
        pylsl = _pylsl()
        self.outlet = _outlet(self.names["responses"], RESPONSE_TYPE, self.names["responses"])
        for key in ("markers", "images"):
            if key not in self.resolvers:
                self.resolvers[key] = pylsl.ContinuousResolver(prop="name", value=self.names[key], forget_after=2.0)
        self._refreshed = 0.0

    def close(self) -> None:
        for d in self.inlets.values():
            for inlet in d.values():
                try:
                    inlet.close_stream()
                except Exception:
                    pass
            d.clear()
        self.outlet = None

    def refresh(self) -> None:
        """Subscribe to MANGO streams that appeared (every 0.1 s at most); images before markers."""
        now = time.monotonic()
        if now - self._refreshed < 0.1:
            return
        self._refreshed = now
        for key, stype in (("images", IMAGE_TYPE), ("markers", MARKER_TYPE)):
            for info in self.resolvers[key].results():
                uid = info.uid()
                if (uid in self.inlets[key] or uid in self.gone or self.retry_at.get(uid, 0.0) > now
                        or not _usable(info, stype)):
                    continue
                try:
                    self.inlets[key][uid] = _open_inlet(info, 0.5)
                    log.info("rig-sim: subscribed to %s (%s)", info.name(), uid)
                except Exception as exc:  # gone meanwhile, or not reachable: try again in a second
                    self.retry_at[uid] = now + 1.0
                    log.info("rig-sim: could not open %s yet: %s", info.name(), exc)

    def pull(self, key: str) -> list[bytes]:
        """Every sample waiting on the ``key`` inlets (lost streams are dropped)."""
        out: list[bytes] = []
        for uid, inlet in list(self.inlets[key].items()):
            while True:
                try:
                    sample, _ = inlet.pull_sample(timeout=0.0)
                except _lost_error():
                    del self.inlets[key][uid]
                    self.gone.add(uid)
                    break
                if sample is None:
                    break
                try:
                    out.append(_raw(sample))
                except ProtocolError as exc:
                    log.warning("rig-sim: dropped a %s sample: %s", key, exc)
        return out

    def push(self, text: str) -> None:
        self.outlet.push_sample([text])


def serve_lsl(sim: Any, name: str = DEFAULT_NAME, *, token: str | None = None, stop: threading.Event | None = None,
              ready: threading.Event | None = None, limits: Limits = Limits(), image_wait: float = 2.0,
              poll: float = 0.005) -> None:
    """Play the lab side of the LSL transport with ``sim`` (a :class:`~mango.rig.simulator.RigSimulator`)
    until ``stop`` is set (or forever): publish ``NAME-responses``, subscribe to every ``NAME-markers`` /
    ``NAME-images`` stream on the network, assemble each block from its marker and images (checked against
    the marker's digests), present it with ``sim.handle`` (its faults included) and publish the answer.

    Args:
        sim: the simulator; its ``faults`` decide per request: ``drop`` (no answer), ``delay``
            (answer ``sim.delay`` s late), ``nan``, ``malformed`` (a response sample that is not valid),
            ``duplicate`` (the answer twice), ``wrongblock`` (an answer naming another block), ``crash``
            (streams closed for ``sim.restart`` s, then published anew).
        name: stream name prefix (see :func:`stream_names`).
        token: shared secret (markers must carry a valid MAC; responses are signed).
        image_wait: seconds a marker waits for its images before it is answered with an error.
    """

    names = stream_names(name)
    streams = _Streams(names)
    streams.open()
    images: OrderedDict[str, dict[int, bytes]] = OrderedDict()  # nonce -> index -> PNG bytes (bounded)
    pending: list[tuple[dict[str, Any], float]] = []            # checked markers waiting for their images
    served: OrderedDict[str, None] = OrderedDict()               # nonces already presented (replay guard)
    log.info("rig-sim: publishing %s, listening to %s and %s (%d channels)", names["responses"], names["markers"],
             names["images"], sim.neurons.channels)
    if ready is not None:
        ready.set()
    try:
        while stop is None or not stop.is_set():
            streams.refresh()
            busy = False
            for raw in streams.pull("images"):
                busy = True
                try:
                    nonce, index, png = decode_image(raw, limits)
                except ProtocolError as exc:
                    log.warning("rig-sim: rejected an image sample: %s", exc)
                    continue
                images.setdefault(nonce, {})[index] = png
                images.move_to_end(nonce)
                while len(images) > 16 or sum(len(p) for d in images.values() for p in d.values()) > limits.max_bytes:
                    images.popitem(last=False)
            for raw in streams.pull("markers"):
                busy = True
                try:
                    marker = decode_marker(raw, token, limits)
                except ProtocolError as exc:
                    _reject_marker(streams, raw, exc, token, limits)
                    continue
                if marker["type"] == "end":
                    log.info("rig-sim: run %r ended", marker["run"])
                    continue
                if marker["nonce"] in served:
                    log.warning("rig-sim: block %d repeats nonce %r already served (a replayed marker); ignored",
                                marker["block"], marker["nonce"])
                    continue
                pending.append((marker, time.monotonic()))
                if len(pending) > 64:  # a flood of markers whose images never come
                    old = pending.pop(0)[0]
                    log.warning("rig-sim: dropped the marker of block %d (too many waiting for images)", old["block"])
            due, pending = pending, []
            for marker, since in due:
                got = images.get(marker["nonce"], {})
                if len(got) < marker["shape"][0] and time.monotonic() - since < image_wait:
                    pending.append((marker, since))  # its images may still be on their way
                    continue
                try:
                    block = _assemble(marker, got)
                except ProtocolError as exc:
                    log.warning("rig-sim: block %d: %s", marker["block"], exc)
                    streams.push(encode_lsl_error(f"rejected: {exc}", marker["block"], marker["run"],
                                                  marker["nonce"], token))
                    continue
                images.pop(marker["nonce"], None)
                served[marker["nonce"]] = None
                if len(served) > 100_000:
                    served.popitem(last=False)
                busy = True
                _answer(sim, streams, block, marker["run"], token, wrong_block_reply)
            if not busy:
                time.sleep(poll)
    finally:
        streams.close()


def _reject_marker(streams: _Streams, raw: bytes, exc: ProtocolError, token: str | None, limits: Limits) -> None:
    """Answer a marker that failed its checks with an error sample (signed only if it was authentic)."""
    log.warning("rig-sim: rejected a marker: %s", exc)
    if isinstance(exc, AuthError):
        return  # an unauthenticated marker changes nothing and is signed nothing
    try:
        head = _header(raw, limits)
    except ProtocolError:
        return  # not even a mango-rig header: nobody to answer
    bid = head.get("block") if isinstance(head.get("block"), int) else None
    nonce = head.get("nonce")
    try:
        verify_mac(head, [], token)
        signer = token
    except ProtocolError:
        signer = None
    streams.push(encode_lsl_error(f"rejected: {exc}", bid, _run_of(head), nonce, signer))


def _png_size(png: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or ``None`` if it does not start like a PNG file."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        return None
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _assemble(marker: dict[str, Any], got: dict[int, bytes]) -> Block:
    """The block a marker announces, from its image samples (each checked against the marker's digest)."""
    n, h, w, c = marker["shape"]
    missing = [i for i in range(n) if i not in got]
    if missing:
        raise ProtocolError(f"images {missing[:5]} of block {marker['block']} (nonce {marker['nonce']}) never arrived")
    frames = []
    for i in range(n):
        if hashlib.sha256(got[i]).hexdigest() != marker["sha256"][i]:
            raise ProtocolError(f"image {i} of block {marker['block']} does not match the marker's SHA-256")
        size = _png_size(got[i])
        if size != (w, h):  # checked before decoding: a small file may declare a huge image
            raise ProtocolError(f"image {i} of block {marker['block']} is a PNG of {size} (width, height), "
                                f"the marker says {(w, h)}")
        frames.append(got[i])
    imgs = png_to_images(frames, (h, w, c))
    return Block(marker["block"], marker["image_ids"], imgs, marker["repeats"], marker["order"], marker["attempt"],
                 marker["nonce"])


def _answer(sim: Any, streams: _Streams, block: Block, run: str, token: str | None, wrong_block: Any) -> None:
    """Present ``block`` with the simulator and publish its answer, applying the fault it picked.

    The simulated onsets are the LSL time the presentations started plus ``sim.latency`` per presentation."""
    t0 = _pylsl().local_clock()
    try:
        reply, fault = sim.handle(block)
    except Exception as exc:  # e.g. images the model cannot take: answer, do not stop serving
        log.exception("rig-sim: block %d could not be presented", block.block)
        streams.push(encode_lsl_error(f"the rig could not present block {block.block}: "
                                      f"{exc.__class__.__name__}: {exc}", block.block, run, block.nonce, token))
        return
    reply = Reply(reply.block, reply.image_ids, reply.responses, reply.meta, block.nonce)
    onsets = t0 + sim.latency * np.arange(len(reply.image_ids))
    if fault == "drop":
        return
    if fault == "crash":
        streams.close()
        time.sleep(sim.restart)
        streams.open()
        log.warning("rig-sim: republished %s after a simulated crash", streams.names["responses"])
        return
    if fault == "delay":
        time.sleep(sim.delay)
    if fault == "malformed":
        streams.push(json.dumps({"protocol": PROTOCOL, "version": VERSION, "type": "response", "run": run,
                                 "block": block.block, "nonce": block.nonce, "shape": [1]}))
        return
    allow_nan = False
    if fault == "nan":
        r = np.array(reply.responses, dtype=np.float64)
        r.flat[0] = np.nan
        reply, allow_nan = Reply(reply.block, reply.image_ids, r, reply.meta, reply.nonce), True
    if fault == "wrongblock":
        w = wrong_block(reply)
        reply = Reply(w.block, w.image_ids, w.responses, reply.meta, reply.nonce)
    text = encode_response(reply, run, token, onsets, allow_nan=allow_nan)
    streams.push(text)
    if fault == "duplicate":
        streams.push(text)

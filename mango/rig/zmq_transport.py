"""ZeroMQ transport of ``mango-rig/1``: a DEALER client with retries, a ROUTER server.

Why DEALER/ROUTER and not REQ/REP: a REQ socket whose reply was lost is stuck
(it may not send again). The client here is a DEALER that may resend at any time;
after a second timeout in a row it closes and reopens its socket ("lazy pirate"),
which also recovers from a rig that restarted. Replies are matched to the block
in flight by block id and nonce: late, duplicate and unknown replies are logged and
dropped, never mixed into another block.

Authentication (with a shared token): every attempt of a block carries a fresh random
``nonce`` covered by the MAC, and the rig echoes it in its signed reply. A message that
fails authentication changes nothing (the client keeps waiting; the rig answers it with an
*unsigned* error, so it signs nothing an attacker chose); a reply whose nonce is not one of
the block's attempts (a captured reply replayed) is dropped; the rig refuses a block whose
nonce it has already served (a captured block replayed), without presenting it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

import numpy as np

from ..errors import ConfigError
from .protocol import (PROTOCOL, VERSION, Block, Limits, ProtocolError, Reply, RigError, SlowRigWarning, accept_reply,
                       decode_block,
                       decode_error, decode_reply, encode_block, encode_error, encode_reply, new_nonce, peek_header,
                       verify_mac, attempt_wait, check_waits)

__all__ = ["DEFAULT_ADDRESS", "ZmqRigClient", "ZmqRigServer", "check_address"]

log = logging.getLogger(__name__)
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
_LOOPBACK = ("tcp://127.0.0.1:", "tcp://localhost:", "tcp://[::1]:", "ipc://", "inproc://")


#: the ZeroMQ transports a rig endpoint may use (DEALER/ROUTER run over these)
TRANSPORTS = ("tcp", "ipc", "inproc")
_VALID_FORMS = "tcp://HOST:PORT with PORT 1..65535 (e.g. tcp://127.0.0.1:5555), ipc://PATH or inproc://NAME"


def check_address(address: str, allow_remote: bool = False, bind: bool = False) -> str:
    """Check a rig endpoint's form, then refuse non-loopback addresses unless ``allow_remote``.

    Valid forms: ``tcp://HOST:PORT`` (``PORT`` 1..65535; HOST a name, an IPv4 address or ``[IPv6]``;
    when ``bind``, also HOST ``*`` (every interface) and PORT ``*`` or 0 (a free port)), ``ipc://PATH``
    and ``inproc://NAME``. ZeroMQ itself takes a port out of range (``tcp://127.0.0.1:99999``) without
    complaint and never connects, so the error would otherwise surface only as "no reply".

    Raises:
        ConfigError: one line naming the address and the valid forms (or ``--allow-remote``).
    """
    if not isinstance(address, str) or "://" not in address:
        raise ConfigError(f"rig address {address!r} is not a ZeroMQ endpoint; valid forms: {_VALID_FORMS}")
    scheme, rest = address.split("://", 1)
    if scheme not in TRANSPORTS:
        raise ConfigError(f"rig address {address!r} uses transport {scheme!r}; valid forms: {_VALID_FORMS}")
    if not rest or any(c.isspace() for c in rest):
        raise ConfigError(f"rig address {address!r} has an empty {scheme} part or one with whitespace; "
                          f"valid forms: {_VALID_FORMS}")
    if scheme == "tcp":
        host, sep, port = rest.rpartition(":")
        wild = bind and port in ("*", "0")
        if not sep or not host or host == "[]" or (host == "*" and not bind):
            raise ConfigError(f"rig address {address!r} has no HOST:PORT{'' if bind else ' to connect to'}; "
                              f"valid forms: {_VALID_FORMS}")
        if not (wild or (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535)):
            raise ConfigError(f"rig address {address!r} has port {port!r}, not an integer in 1..65535; "
                              f"valid forms: {_VALID_FORMS}")
    if not allow_remote and not address.startswith(_LOOPBACK):
        raise ConfigError(f"rig address {address!r} is not loopback; valid choices: tcp://127.0.0.1:PORT, "
                          "ipc://PATH, or pass allow_remote=True (--allow-remote) for another machine")
    return address


#: the longest single wait on the socket (s); longer timeouts (up to infinity) wait in chunks of it
MAX_WAIT_CHUNK = 1.0
#: the longest a send may wait for a connection to the rig (s), whatever the timeout
MAX_SEND_WAIT = 3600.0


class ZmqRigClient:
    """Search side: send a block, wait for its reply, retry with back-off.

    Args:
        address: the rig's endpoint (default ``tcp://127.0.0.1:5555``).
        token: shared secret; when set, messages carry an HMAC-SHA256 and replies
            without a valid one are rejected.
        timeout: seconds to wait for a reply per attempt (> 0).
        retries: resends after the first attempt (>= 0); then :class:`RigError`.
        backoff: extra listening time before resend ``k`` is ``backoff * 2**k`` s,
            capped at ``max_backoff``.
        encoding: ``"raw"`` uint8 bytes or ``"png"``.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, token: str | None = None, timeout: float = 10.0,
                 retries: int = 5, backoff: float = 0.5, max_backoff: float = 10.0, encoding: str = "raw",
                 limits: Limits = Limits(), allow_remote: bool = False) -> None:
        check_waits(timeout, retries, backoff)
        self.address = check_address(address, allow_remote)
        self.token = token or None
        self.timeout, self.retries = float(timeout), int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.encoding = encoding
        self.limits = limits
        self.answered: set[int] = set()
        self.ignored: list[dict[str, Any]] = []  # what was dropped and why (for tests and reports)
        self._unverified: list[str] = []         # reasons of error messages that failed authentication
        self._dropped: list[tuple[str, str]] = []  # (kind, short reason) of each message ignored this attempt
        self._ctx: Any = None
        self._sock: Any = None
        self._warned_nonce = False               # a reply without a nonce was said once
        self._slow = SlowRigWarning(f"rig {self.address}", self.timeout, log)   # said once a run, then at info

    # -- socket ---------------------------------------------------------------------
    def _open(self) -> None:
        import zmq

        if self._ctx is None:
            self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_bytes)
        # a DEALER blocks in send while it has no connected peer, e.g. after libzmq dropped the rig's connection
        # for a message over MAXMSGSIZE (and did not connect again): the send may wait one timeout, not forever
        self._sock.setsockopt(zmq.SNDTIMEO, max(1, int(min(self.timeout, MAX_SEND_WAIT) * 1000)))   # 0: no wait
        self._sock.connect(self.address)

    def _reopen(self) -> None:
        log.info("rig %s: reopening the socket", self.address)
        if self._sock is not None:
            self._sock.close(linger=0)
        self._open()

    def close(self) -> None:
        """Close the socket and context."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> "ZmqRigClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- protocol -------------------------------------------------------------------
    def _ignore(self, why: str, block: Any, kind: str = "other", short: str | None = None) -> None:
        """Log and record a dropped message; ``kind`` and ``short`` (the reason in brief) go into the
        attempt's failure text, so a rig that answers in another protocol is told from a silent one."""
        log.warning("rig %s: ignored a message (%s)", self.address, why)
        self.ignored.append({"block": block, "reason": why})
        short = why if short is None else short
        self._dropped.append((kind, short if len(short) <= 120 else short[:117] + "..."))

    def _dropped_summary(self) -> str:
        """``"2 replies ignored (malformed: ...; unexpected type: ...)"``: counts per kind of the messages
        dropped in this attempt, with the first reason of each; ``""`` when none was."""
        if not self._dropped:
            return ""
        kinds: dict[str, list[str]] = {}
        for kind, short in self._dropped:
            kinds.setdefault(kind, []).append(short)
        parts = [f"{'' if len(v) == 1 else f'{len(v)} '}{k}: {v[0]}" for k, v in kinds.items()]
        n = len(self._dropped)
        return f"{n} {'reply' if n == 1 else 'replies'} ignored ({'; '.join(parts)})"

    def _reply_ignored(self, reason: str, bid: Any) -> None:
        """The ``ignore`` callback of :func:`accept_reply` (its reasons start with what went wrong)."""
        kind = ("unauthenticated" if reason.startswith("unauthenticated") else
                "invalid" if reason.startswith("invalid") else "replayed or stale")
        self._ignore(reason, bid, kind, reason.split(": ", 1)[-1])

    def _listen(self, block: Block, seconds: float, nonces: Collection[str] | None = None) -> tuple[Reply | None, str | None]:
        """Wait up to ``seconds`` for a valid reply to ``block``; (reply, None) or (None, failure reason)."""
        import zmq

        nonces = nonces if nonces is not None else ({block.nonce} if block.nonce else set())
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None
            # in chunks: zmq's poll takes an int of milliseconds (timeout=inf or 1e15 s overflowed it)
            if not self._sock.poll(int(max(1, min(left, MAX_WAIT_CHUNK) * 1000)), zmq.POLLIN):
                continue
            frames = self._sock.recv_multipart(copy=True)
            try:
                header = peek_header(frames, self.limits)
            except ProtocolError as exc:
                self._ignore(f"malformed message: {exc}", None, "malformed", str(exc))
                continue
            bid = header.get("block")
            if bid != block.block:
                kind = "duplicate" if bid in self.answered else "late or unknown"
                self._ignore(f"{kind} {header.get('type')} for block {bid!r} while waiting for block {block.block}",
                             bid, kind, f"{header.get('type')} for block {bid!r}")
                continue
            if header["type"] == "error":
                try:
                    header = decode_error(frames, self.token, self.limits)
                except ProtocolError as exc:   # unsigned, or signed with another token: must not end the
                    self._ignore(f"unauthenticated error message for block {bid!r}: {exc}", bid,  # attempt,
                                 "unauthenticated", f"error message: {exc}")
                    self._unverified.append(str(header.get("reason"))[:200])  # but its text helps diagnose
                    continue
                if self.token and header.get("nonce") not in nonces:  # a signed error replayed from elsewhere
                    self._ignore(f"error for block {bid} without the nonce of one of its attempts (replayed)", bid,
                                 "replayed or stale", "error message without the nonce of an attempt")
                    continue
                return None, f"rig reported an error: {header.get('reason')!r}"
            if header["type"] != "response":
                echo = " (an echo of the request?)" if header["type"] == "block" else ""
                self._ignore(f"unexpected {header['type']!r} message{echo}; a rig answers a block with a 'response'",
                             bid, "unexpected type", f"a {header['type']!r} message{echo}, not a 'response'")
                continue
            n_dropped = len(self._dropped)
            reply, why = accept_reply(lambda: decode_reply(frames, self.token, self.limits), block, nonces,
                                      lambda reason: self._reply_ignored(reason, bid), nonce_required=bool(self.token))
            if why is not None:   # this reply ends the attempt: it is the failure, not one more ignored reply
                del self._dropped[n_dropped:]
            if reply is not None or why is not None:
                return reply, why

    def present(self, block: Block) -> Reply:
        """Send ``block`` and return the rig's validated reply.

        Raises:
            RigError: no valid reply after ``1 + retries`` attempts (the message
                lists each attempt's failure).
        """
        if self._sock is None:
            self._open()
        import zmq

        failures: list[str] = []
        unsent = False           # the last attempt's send timed out: the socket is opened again
        kinds: set[str] = set()  # kinds of the messages ignored over all attempts
        nonces: dict[str, int] = {}   # each attempt's nonce -> the attempt: a late reply to one is still the answer
        t_first = time.monotonic()
        for attempt in range(self.retries + 1):
            block.attempt = attempt
            block.nonce = new_nonce()
            nonces[block.nonce] = attempt
            if attempt >= 2 or unsent:
                self._reopen()
            wait = attempt_wait(self.timeout, self.backoff, self.max_backoff, attempt)
            try:
                self._sock.send_multipart(encode_block(block, self.token, self.encoding))
                unsent = False
            except zmq.Again:
                unsent = True
                why = (f"could not send the block within {min(self.timeout, MAX_SEND_WAIT):.3g} s: no connection "
                       f"to the rig (not "
                       f"running, or it sent a message over the {self.limits.max_bytes / 2 ** 20:.3g} MiB limit, "
                       "which closes the connection)")
                failures.append(f"attempt {attempt}: {why}")
                kinds.add("unsent")
                log.warning("rig %s: block %d %s; %s", self.address, block.block, why,
                            "retrying" if attempt < self.retries else "giving up")
                continue
            self._unverified, self._dropped = [], []
            reply, why = self._listen(block, wait, nonces)
            if reply is not None:
                self.answered.add(block.block)
                # an answer after resends that only ran out of time: a rig slower than the timeout (certainly so
                # when it answers an earlier attempt; from the second resend on the socket was reopened, and
                # such an answer is lost, so the rig's answer to a resend is counted too) or lost answers
                late = reply.nonce is not None and reply.nonce != block.nonce
                if attempt > 0 and not kinds:
                    self._slow(block, attempt, time.monotonic() - t_first,
                               "the rig answered an earlier send late" if late else
                               "the rig took longer than the timeout to present it, or its answers were lost")
                if late:        # the log records the attempt the answer is to
                    block.attempt = nonces.get(str(reply.nonce), attempt)
                if reply.nonce is None and not self._warned_nonce:    # allowed (PROTOCOL.md), said once a run
                    self._warned_nonce = True
                    log.warning("rig %s: its replies carry no 'nonce': without a token, a reply meant for another "
                                "run or attempt with the same block number cannot be told apart from this one's; "
                                "make the rig echo the block's nonce (mango/rig/PROTOCOL.md) or set "
                                "MANGO_RIG_TOKEN on both sides", self.address)
                return reply
            why = why or f"no {'valid ' if self._dropped else ''}reply within {wait:.3g} s"
            if self._dropped:
                kinds.update(kind for kind, _ in self._dropped)
                why = f"{self._dropped_summary()}, {why}"
            if self._unverified:
                why += f" (unauthenticated error message(s), not acted on: {'; '.join(self._unverified[:3])})"
            failures.append(f"attempt {attempt}: {why}")
            log.warning("rig %s: block %d %s; %s", self.address, block.block, why,
                        "retrying" if attempt < self.retries else "giving up")
        rig_wants_token = not self.token and any("token" in f for f in failures)   # its error texts say so
        if kinds == {"unauthenticated"} or rig_wants_token:
            hint = ("The two sides do not share a token: " + (
                "the rig requires one and this side has none" if rig_wants_token else
                "the rig's replies are not signed with this side's token (the rig has none, or another)") +
                "; set the same MANGO_RIG_TOKEN for the rig and for this command (or unset it on both) and rerun")
        elif kinds & {"malformed", "unexpected type"}:
            hint = (f"Something answers at {self.address} but not in {PROTOCOL}/{VERSION}: point --address at the "
                    "rig, or make it answer as mango/rig/PROTOCOL.md says, and rerun")
        elif "unsent" in kinds and kinds <= {"unsent", "late or unknown", "duplicate"}:
            hint = ("No connection to the rig could take the block: start the rig, check that its replies stay "
                    f"under the {self.limits.max_bytes / 2 ** 20:.3g} MiB message limit, and rerun")
        elif kinds <= {"late or unknown", "duplicate"}:
            hint = ("Only replies to other blocks arrived (a slow rig?): start or fix the rig, or raise the timeout, "
                    "and rerun") if kinds else "Start or fix the rig and rerun"
        else:
            hint = "The rig answers but none of its replies was valid for this block: fix the rig and rerun"
        raise RigError(f"rig at {self.address} gave no valid reply to block {block.block} after "
                       f"{self.retries + 1} attempts ({'; '.join(failures)}). {hint} the "
                       "same command: the run folder resumes without re-presenting recorded images.")


class ZmqRigServer:
    """Rig side: a ROUTER socket that receives blocks and sends replies.

    Use :meth:`recv` to get ``(peer, Block)`` (malformed messages are answered
    with an ``error`` message, logged, and skipped) and :meth:`send_reply` /
    :meth:`send_raw` to answer.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, token: str | None = None, limits: Limits = Limits(),
                 allow_remote: bool = False) -> None:
        self.address = check_address(address, allow_remote, bind=True)
        self.token = token or None
        self.limits = limits
        self.rejected: list[str] = []
        self._served: dict[str, None] = {}   # nonces of blocks received (insertion-ordered, bounded)
        self._nonce_of: dict[int, str] = {}  # block id -> nonce of its latest attempt (echoed in replies)
        self._ctx: Any = None
        self._sock: Any = None

    #: how many served nonces are remembered for replay detection
    max_nonces = 100_000

    def open(self) -> "ZmqRigServer":
        import zmq

        if self._ctx is None:
            self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_bytes)
        for _ in range(50):  # a restarted rig may find the port in TIME_WAIT briefly
            try:
                self._sock.bind(self.address)
                break
            except zmq.ZMQError:
                time.sleep(0.1)
        else:
            self._sock.bind(self.address)
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def terminate(self) -> None:
        self.close()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def recv(self, timeout: float = 0.2) -> tuple[bytes, Block] | None:
        """Next valid block, or ``None`` after ``timeout`` seconds / a rejected message."""
        import zmq

        if not self._sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        frames = self._sock.recv_multipart(copy=True)
        peer, frames = frames[0], frames[1:]
        try:
            block = decode_block(frames, self.token, self.limits)
        except ProtocolError as exc:
            bid = nonce = None
            trusted = False  # an error is signed only in answer to a request that passed authentication
            try:
                head = peek_header(frames, self.limits)
                bid, nonce = head.get("block"), head.get("nonce")
                verify_mac(head, frames[1:], self.token)
                trusted = True
            except ProtocolError:
                pass
            log.warning("rig server: rejected a message: %s", exc)
            self.rejected.append(str(exc)[:500])
            signer = self.token if trusted else None
            self._sock.send_multipart([peer] + encode_error(f"rejected: {exc}", bid, signer, nonce))
            return None
        if block.nonce is not None:
            if block.nonce in self._served:
                why = f"block {block.block} repeats nonce {block.nonce!r} already served (a replayed message)"
                log.warning("rig server: rejected a message: %s", why)
                self.rejected.append(why)
                return None      # answered by nothing: a replay gets neither a presentation nor a signature
            self._served[block.nonce] = None
            if len(self._served) > self.max_nonces:
                self._served.pop(next(iter(self._served)))
            self._nonce_of[block.block] = block.nonce
        elif self.token:
            why = f"block {block.block} has no nonce, which a shared token requires (replay protection)"
            self.rejected.append(why)
            self._sock.send_multipart([peer] + encode_error(f"rejected: {why}", block.block, self.token))
            return None
        return peer, block

    def send_reply(self, peer: bytes, reply: Reply) -> None:
        """Send ``reply``; it echoes the nonce of its block's latest attempt unless it carries one."""
        if reply.nonce is None and reply.block in self._nonce_of:
            reply = Reply(reply.block, reply.image_ids, reply.responses, reply.meta, self._nonce_of[reply.block])
        self._sock.send_multipart([peer] + encode_reply(reply, self.token))

    def send_raw(self, peer: bytes, frames: list[bytes]) -> None:
        self._sock.send_multipart([peer] + list(frames))


def nan_reply(reply: Reply) -> Reply:
    """A copy of ``reply`` with NaN in it (fault injection)."""
    r = np.array(reply.responses, dtype=np.float64)
    r.flat[0] = np.nan
    return Reply(reply.block, reply.image_ids, r, nonce=reply.nonce)

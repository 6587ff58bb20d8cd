"""``mango rig-sim``: a simulated recording rig speaking both protocols, with fault injection.

Its neurons are units of any registered target (:mod:`mango.rig.model`): Poisson
spike counts at ``peak_rate`` over ``presentation_time``, ``latency`` seconds of
(simulated) presentation per image. Faults, by the 1-based number of the request
received (``kind@n``) or with a probability per request (``kind=p``)::

    drop        no reply at all
    delay       reply ``delay`` seconds late (past the client's timeout)
    nan         a reply whose responses hold NaN
    malformed   a reply that is not a valid message (ZeroMQ) / a garbage file (file-drop)
    duplicate   the reply twice (ZeroMQ) / a half-written file completed later (file-drop)
    wrongblock  a reply naming another block id
    crash       no reply; the rig closes its socket, waits ``restart`` seconds and comes back

Example: ``--faults drop@2,nan@4,crash@6 --faults delay=0.05``.

Every served block is appended to ``--record`` (JSON lines, flushed) when given:
tests use it to count how often each block was really presented.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..clitools import parse_kv
from ..errors import ConfigError
from .filedrop import FORMATS, read_block, read_response, response_paths, write_response
from .lsl_transport import serve_lsl
from .model import PoissonNeurons, build_neurons, wrong_block_reply
from .protocol import Block, ProtocolError, Reply
from .xdream import serve_xdream
from .zmq_transport import ZmqRigServer, check_address, nan_reply

__all__ = ["Faults", "RigSimulator", "block_digest", "serve_zmq", "serve_filedrop", "add_arguments", "FAULT_KINDS"]

log = logging.getLogger(__name__)
FAULT_KINDS = ("drop", "delay", "nan", "malformed", "duplicate", "wrongblock", "crash")


@dataclass
class Faults:
    """Which requests get which fault: ``at[n] = kind`` and ``prob[kind] = p``."""

    at: dict[int, str] = field(default_factory=dict)
    prob: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed + 104729)

    @classmethod
    def parse(cls, specs: list[str] | str | None, seed: int = 0) -> "Faults":
        """Parse ``"drop@2,nan@4"`` / ``"delay=0.1"`` items (a string or a list of them)."""
        f = cls(seed=seed)
        if isinstance(specs, str):
            specs = [specs]
        for spec in specs or []:
            for item in filter(None, (s.strip() for s in spec.split(","))):
                if "@" in item:
                    kind, n = item.split("@", 1)
                    f._check(kind)
                    try:
                        f.at[int(n)] = kind
                    except ValueError:
                        raise ConfigError(f"fault {item!r}: request number {n!r} is not an integer") from None
                elif "=" in item:
                    kind, p = item.split("=", 1)
                    f._check(kind)
                    try:
                        f.prob[kind] = float(p)
                    except ValueError:
                        raise ConfigError(f"fault {item!r}: probability {p!r} is not a number") from None
                else:
                    raise ConfigError(f"fault {item!r} must look like kind@n or kind=p; kinds: {', '.join(FAULT_KINDS)}")
        return f

    @staticmethod
    def _check(kind: str) -> None:
        if kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault {kind!r}; valid choices: {', '.join(FAULT_KINDS)}")

    def pick(self, n: int) -> str | None:
        """The fault for request number ``n`` (1-based), or ``None``."""
        if n in self.at:
            return self.at[n]
        for kind, p in self.prob.items():
            if self.rng.random() < p:
                return kind
        return None


class RigSimulator:
    """Computes replies and decides faults; the transports call :meth:`handle`.

    Args:
        neurons: the simulated channels.
        latency: seconds per presentation (sleep).
        delay: seconds a ``delay`` fault holds the reply back.
        restart: seconds a ``crash`` keeps the rig away.
        record: JSON-lines file to which every served block is appended.
    """

    def __init__(self, neurons: PoissonNeurons, *, latency: float = 0.0, faults: Faults | None = None,
                 delay: float = 2.0, restart: float = 0.5, record: str | os.PathLike | None = None,
                 seed: int = 0) -> None:
        self.neurons = neurons
        self.latency, self.delay, self.restart = float(latency), float(delay), float(restart)
        self.faults = faults or Faults()
        self.record = Path(record) if record else None
        self.rng = np.random.default_rng(seed + 1)
        self.n_requests = 0
        # (block id, digest of what it shows, the reply sent) of the last block answered: a resend of it
        # (attempt > 0: the client's timeout ran out while the rig was still presenting) is answered from it
        # instead of being shown to the animal again. Only the last block, and only resends: a client sends
        # one block at a time, and a first send (a new run starting at block 0, or a block whose answer the
        # client refused and asks again after a rerun) must get new presentations
        self._last: tuple[int, str, Reply] | None = None
        self.n_from_record = 0

    def handle(self, block: Block) -> tuple[Reply, str | None]:
        """Present ``block`` (sleeping ``latency`` per presentation); return the reply and the fault to apply.

        A resend (``attempt > 0``) whose id and content (images, order, repeats) match the last block answered
        is not shown again: its recorded reply is returned (with the request's fault; not written to
        ``record``), as a real rig should answer a resend (``PROTOCOL.md``, *Resends*).
        """
        self.n_requests += 1
        fault = self.faults.pick(self.n_requests)
        digest = block_digest(block)
        if fault != "crash" and int(block.attempt or 0) > 0 and self._last is not None and \
                self._last[:2] == (int(block.block), digest):
            self.n_from_record += 1
            log.info("rig-sim: block %d (attempt %d) was presented before: answered from the record, not shown "
                     "again", block.block, block.attempt)
            return self._last[2], fault
        order = block.order if block.order is not None else \
            self.rng.permutation(np.repeat(np.arange(len(block.image_ids)), block.repeats))
        if fault not in ("crash",):
            if self.latency:
                time.sleep(self.latency * len(order))
            resp = self.neurons.respond(block.images, order)
        else:
            resp = np.zeros((len(order), self.neurons.channels))
        if self.record is not None and fault not in ("crash", "drop"):
            with open(self.record, "a") as fh:
                fh.write(json.dumps({"block": block.block, "attempt": block.attempt, "presentations": len(order),
                                     "fault": fault, "time": time.time()}) + "\n")
                fh.flush()
        if fault:
            log.warning("rig-sim: request %d (block %d): injecting fault %r", self.n_requests, block.block, fault)
        reply = Reply(block.block, np.asarray(block.image_ids)[order], resp)
        if fault in (None, "delay", "duplicate"):     # the faults whose reply does reach the client
            self._last = (int(block.block), digest, reply)
        return reply, fault


def block_digest(block: Block) -> str:
    """SHA-256 over what a block shows: its image ids, images, repeats and order (not its attempt or nonce)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(block.image_ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(block.images).tobytes())
    h.update(str((int(block.repeats), np.shape(block.images))).encode())
    if block.order is not None:
        h.update(np.ascontiguousarray(block.order, dtype=np.int64).tobytes())
    return h.hexdigest()


def serve_zmq(sim: RigSimulator, address: str, *, token: str | None = None, stop: threading.Event | None = None,
              allow_remote: bool = False, ready: threading.Event | None = None) -> None:
    """Serve ``sim`` on a ZeroMQ ROUTER socket until ``stop`` is set (or forever)."""
    server = ZmqRigServer(address, token=token, allow_remote=allow_remote).open()
    log.info("rig-sim: serving mango-rig/1 on %s (%d channels)", address, sim.neurons.channels)
    if ready is not None:
        ready.set()
    try:
        while stop is None or not stop.is_set():
            got = server.recv(0.1)
            if got is None:
                continue
            peer, block = got
            reply, fault = sim.handle(block)
            if fault == "drop":
                continue
            if fault == "crash":
                server.close()
                time.sleep(sim.restart)
                server.open()
                log.warning("rig-sim: restarted after a simulated crash")
                continue
            if fault == "delay":
                time.sleep(sim.delay)
            if fault == "nan":
                reply = nan_reply(reply)
            if fault == "wrongblock":
                reply = wrong_block_reply(reply)
            if fault == "malformed":
                server.send_raw(peer, [json.dumps({"protocol": "mango-rig", "version": 1, "type": "response",
                                                   "block": block.block, "shape": [1]}).encode(), b"\x00" * 3])
                continue
            server.send_reply(peer, reply)
            if fault == "duplicate":
                server.send_reply(peer, reply)
    finally:
        server.terminate()


def serve_filedrop(sim: RigSimulator, root: str | os.PathLike, *, fmt: str = "npz", poll: float = 0.02,
                   stop: threading.Event | None = None, ready: threading.Event | None = None) -> None:
    """Watch ``root/blocks`` for manifests and write ``root/responses/block_NNNNNN.<fmt>`` files
    (``n * repeats`` rows) that echo the manifest's block and run id."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown response format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    root = Path(root)
    for sub in ("blocks", "responses", "stimuli"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    log.info("rig-sim: watching %s (responses as .%s)", root / "blocks", fmt)
    if ready is not None:
        ready.set()
    while stop is None or not stop.is_set():
        for man in sorted((root / "blocks").glob("block_*.json")):
            try:
                stamp = man.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if seen.get(man.name) == stamp:
                continue
            try:
                block, run = read_block(man)
            except ProtocolError as exc:
                log.warning("rig-sim: manifest %s not usable: %s", man.name, exc)
                seen[man.name] = stamp   # looked at again only when it changes
                continue
            seen[man.name] = stamp
            if _answered(root, block.block, run, stamp):
                log.info("rig-sim: block %d of run %r was answered before (a restart?): not shown again",
                         block.block, run)
                continue
            reply, fault = sim.handle(block)
            out = root / "responses" / f"block_{block.block:06d}.{fmt}"
            if fault in ("drop", "crash"):
                if fault == "crash":
                    seen.clear()
                    time.sleep(sim.restart)
                    seen.update({m.name: m.stat().st_mtime_ns for m in (root / "blocks").glob("block_*.json")})
                continue
            if fault == "delay":
                time.sleep(sim.delay)
            if fault == "nan":
                reply = Reply(reply.block, reply.image_ids, np.full_like(reply.responses, np.nan))
            if fault == "wrongblock":
                reply = wrong_block_reply(reply)
            if fault == "malformed":
                out.write_bytes(b"\x00garbage, not a response file")
                continue
            if fault == "duplicate":  # half-written first, completed a moment later
                tmp = out.with_name("." + out.name + ".full")
                write_response(tmp.with_suffix(out.suffix), reply, run)
                data = tmp.with_suffix(out.suffix).read_bytes()
                tmp.with_suffix(out.suffix).unlink()
                out.write_bytes(data[: len(data) // 2])
                time.sleep(0.2)
                out.write_bytes(data)
                continue
            write_response(out, reply, run)
        time.sleep(poll)


def _answered(root: Path, block: int, run: str, manifest_mtime_ns: int) -> bool:
    """Whether a response file of ``run`` for ``block`` (waiting in ``responses/`` or accepted into
    ``responses/done/``) is newer than the block's manifest: then a restarted rig must not show it again.
    A re-request (a new manifest written after the client rejected an answer) is newer than the
    answer and is shown."""
    for path in response_paths(root, block):
        for p in (path, path.parent / "done" / path.name):
            try:
                if p.stat().st_mtime_ns < manifest_mtime_ns:
                    continue
                _, meta = read_response(p)
            except (OSError, ProtocolError):
                continue
            if meta.get("run", "") == run:
                return True
    return False


# -- command line ------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``mango rig-sim``."""
    p.add_argument("--protocol", choices=("zmq", "filedrop", "lsl", "xdream"), default="zmq",
                   help="wire protocol (default zmq)")
    p.add_argument("--address", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint to bind (default loopback)")
    p.add_argument("--folder", help="the shared folder (filedrop, xdream)")
    p.add_argument("--format", default="npz", choices=("npz", "csv", "mat"), help="file-drop response format")
    p.add_argument("--stream-name", default="mango", help="LSL stream prefix (lsl)")
    p.add_argument("--mat-version", default="7.3", choices=("7.3", "5"), help="XDream .mat version (xdream)")
    p.add_argument("--shows", type=int, default=1, help="presentations of each BMP per XDream block (xdream)")
    p.add_argument("--target", default="cnn-digits", help="registered target whose units are the neurons")
    p.add_argument("--units", default="0", help="comma-separated unit indices, one channel each (default 0)")
    p.add_argument("--target-param", action="append", metavar="KEY=VALUE", help="target parameter")
    p.add_argument("--calib-generator", default="vqvae-digits",
                   help="registered generator whose random images calibrate the rates ('none': noise)")
    p.add_argument("--peak-rate", type=float, default=50.0, help="spikes/s at the calibration maximum")
    p.add_argument("--presentation-time", type=float, default=0.2, help="seconds per presentation")
    p.add_argument("--latency", type=float, default=0.0, help="seconds slept per presentation")
    p.add_argument("--faults", action="append", metavar="SPEC", help="e.g. drop@2,nan@4 or delay=0.1")
    p.add_argument("--delay", type=float, default=2.0, help="seconds a 'delay' fault holds a reply")
    p.add_argument("--restart", type=float, default=0.5, help="seconds a 'crash' keeps the rig away")
    p.add_argument("--token", default=os.environ.get("MANGO_RIG_TOKEN"), help="shared token (or $MANGO_RIG_TOKEN)")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    p.add_argument("--record", help="append every served block to this JSON-lines file")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd)


class _Ready:
    """The ``ready`` event a server sets once it is bound (socket) or watching (folder): only then does
    ``rig-sim`` say it is ready, so a bad address or folder never prints "ready" before its error."""

    def __init__(self, text: str) -> None:
        self.text = text

    def set(self) -> None:
        print(self.text, flush=True)


def _cmd(args: argparse.Namespace) -> int:
    try:
        units = [int(u) for u in str(args.units).split(",") if u.strip()]
    except ValueError:
        raise ConfigError(f"--units {args.units!r} must be comma-separated integers") from None
    if args.protocol == "zmq":  # before the model neurons are built
        check_address(args.address, args.allow_remote, bind=True)
    if args.protocol in ("filedrop", "xdream"):
        if not args.folder:
            raise ConfigError(f"--protocol {args.protocol} needs --folder")
        if Path(args.folder).exists() and not Path(args.folder).is_dir():
            raise ConfigError(f"--folder {args.folder!r} is a file, not a folder")
    calib = None if str(args.calib_generator).lower() == "none" else args.calib_generator
    neurons = build_neurons(args.target, units, parse_kv(args.target_param, "--target-param"), calib,
                            peak_rate=args.peak_rate, presentation_time=args.presentation_time, seed=args.seed)
    sim = RigSimulator(neurons, latency=args.latency, faults=Faults.parse(args.faults, args.seed),
                       delay=args.delay, restart=args.restart, record=args.record, seed=args.seed)
    ready = _Ready(f"rig-sim: {args.target} units {units} ({args.protocol}) ready")
    try:
        if args.protocol == "zmq":
            serve_zmq(sim, args.address, token=args.token, allow_remote=args.allow_remote, ready=ready)
        elif args.protocol == "filedrop":
            serve_filedrop(sim, args.folder, fmt=args.format, ready=ready)
        elif args.protocol == "lsl":
            serve_lsl(sim, args.stream_name, token=args.token, ready=ready)
        else:
            serve_xdream(sim, args.folder, version=args.mat_version, shows=args.shows, ready=ready)
    except KeyboardInterrupt:
        pass
    return 0

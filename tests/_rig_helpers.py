"""Shared helpers of the rig tests: a simple deterministic model neuron and an in-thread simulator."""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import zmq

from mango import registry
from mango.rig.closedloop import PresentationLog, stimulus_images
from mango.rig.model import PoissonNeurons
from mango.rig.simulator import Faults, RigSimulator, serve_filedrop, serve_zmq


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def linear_relu_unit(seed: int = 3):
    """A fixed random linear filter + ReLU over a [k, 1, 16, 16] image (independent of targets/)."""
    w = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(seed))

    def unit(x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x * w).flatten(1).sum(1))

    return unit


def generator():
    return registry.create("generator", "vqvae-digits")


def neurons(gen, seed: int = 0, channels: int = 1, peak_rate: float = 60.0) -> PoissonNeurons:
    calib = stimulus_images(gen, gen.space.sample(np.random.default_rng(123), 128))
    return PoissonNeurons([linear_relu_unit(3 + c) for c in range(channels)], calib, peak_rate=peak_rate,
                          presentation_time=0.2, seed=seed)


def random_expected(gen, neu, n: int = 256) -> float:
    return float(neu.expected(stimulus_images(gen, gen.space.sample(np.random.default_rng(9), n)))[:, 0].mean())


@contextmanager
def sim_thread(neu, protocol: str = "zmq", where: str | None = None, faults: str | None = None,
               server_kw: dict | None = None, **kw):
    """Run a simulator in a background thread; yields it (``.n_requests``).

    ``protocol``: ``"zmq"`` (``where`` an address), ``"filedrop"`` or ``"xdream"`` (``where`` a folder);
    ``server_kw`` goes to the serving function, the rest to :class:`RigSimulator`.
    """
    from mango.rig.xdream import serve_xdream

    token, fmt = kw.pop("token", None), kw.pop("fmt", "npz")
    sim = RigSimulator(neu, faults=Faults.parse(faults), **kw)
    stop, ready = threading.Event(), threading.Event()
    serve, extra = {"zmq": (serve_zmq, {"token": token}), "filedrop": (serve_filedrop, {"fmt": fmt}),
                    "xdream": (serve_xdream, {})}[protocol]
    th = threading.Thread(target=serve, args=(sim, where),
                          kwargs={"stop": stop, "ready": ready, **extra, **(server_kw or {})}, daemon=True)
    th.start()
    ready.wait(10)
    try:
        yield sim
    finally:
        stop.set()
        th.join(10)


@contextmanager
def scripted_rig(answer, token=None):
    """A ZeroMQ rig in a thread: ``answer(server, peer, block, k)`` handles the k-th valid block.

    Yields ``(address, server)``; the thread and socket are stopped afterwards.
    """
    from mango.rig.zmq_transport import ZmqRigServer

    addr = f"tcp://127.0.0.1:{free_port()}"
    server = ZmqRigServer(addr, token=token).open()
    stop = threading.Event()

    def rig() -> None:
        k = 0
        while not stop.is_set():
            got = server.recv(0.05)
            if got is not None:
                answer(server, *got, k)
                k += 1

    th = threading.Thread(target=rig)
    th.start()
    try:
        yield addr, server
    finally:
        stop.set()
        th.join()
        server.terminate()


def log_check(run_dir: Path, budget: int) -> PresentationLog:
    """The run's presentations log: blocks answered once each, numbered 0.., ``budget`` presentations."""
    plog = PresentationLog(run_dir / "presentations.jsonl")  # raises on a block answered twice
    plog.close()
    blocks = sorted(plog.responses)
    assert blocks == list(range(len(blocks)))
    assert sum(len(plog.responses[b]["image_ids"]) for b in blocks) == budget
    return plog


@contextmanager
def fake_router(answer):
    """A bare ZeroMQ ROUTER in a thread (no mango-rig server): ``answer(frames) -> frames`` to send back."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(addr)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if sock.poll(20, zmq.POLLIN):
                peer, *frames = sock.recv_multipart()
                sock.send_multipart([peer] + answer(frames))

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield addr
    finally:
        stop.set()
        th.join(5)
        sock.close(0)
        ctx.term()

"""A live recording rig as a MANGO target (``rig`` in the registry).

:class:`RigTarget` speaks ``mango-rig/1`` over ZeroMQ or the file-drop folder
protocol (:mod:`mango.rig`). It is

* a plain target: ``target(images float [k, C, H, W] in [0, 1]) -> float64 [k]``
  (the mean over ``repeats`` presentations of the selected channel(s); or
  ``[k, channels]`` with ``select=None`` on a multi-channel rig), ``noisy = True``
  so the objective never caches; usable with ``mango run --target rig``;
* a rig for :func:`mango.rig.closed_loop` (``present(Block) -> Reply``), the
  noise-aware, crash-safe loop behind ``mango rig-run``.

Timeouts, retries with exponential back-off and reconnection after a rig restart
are done by the client; after the retry budget a :class:`mango.rig.RigError`
says what failed and that the run folder resumes.

Each :func:`rig_target` gets a fresh run id (``rig-<12 hex>``) and, with the
file-drop protocol, starts its block ids after the largest one already in the
folder, so a second run over the same folder neither reuses an earlier run's file
names nor takes its leftover response files for its own.
"""
from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mango.errors import ConfigError
from mango.rig import make_client
from mango.rig.closedloop import select_channels
from mango.imaging import display_uint8
from mango.rig.protocol import Block, Reply

__all__ = ["RigTarget", "rig_target"]


class RigTarget:
    """Images -> recorded responses of a live rig.

    Args:
        client: an object with ``present(Block) -> Reply`` (see :func:`mango.rig.make_client`).
        select: channel selection: ``"auto"`` (the default: the one channel of a one-channel rig; a rig
            that records several is refused at its first answer, with its channel count, as
            ``mango rig-run`` does), an int, a list of ints (their mean), ``"mean"`` (all channels),
            or ``None`` (return all channels ``[k, channels]``).
        repeats: presentations per image per call (>= 1), in random order.
        seed: seeds the presentation order.
        first_block: block id of the first call (later calls count up); ``None``: the client's
            ``first_free_block()`` when it has one (file drop: after every block id in the folder), else 0.
    """

    differentiable = False
    noisy = True

    def __init__(self, client: Any, *, select: int | Sequence[int] | str | None = "auto", repeats: int = 1,
                 seed: int = 0, first_block: int | None = None) -> None:
        if int(repeats) < 1:
            raise ConfigError(f"repeats must be >= 1, got {repeats!r}")
        if first_block is None:
            free = getattr(client, "first_free_block", None)
            first_block = int(free()) if callable(free) else 0
        if int(first_block) < 0:
            raise ConfigError(f"first_block must be >= 0, got {first_block!r}")
        self.client = client
        self.select = select
        self.repeats = int(repeats)
        self.rng = np.random.default_rng(seed)
        self._blocks = itertools.count(int(first_block))

    @property
    def ignored(self) -> list[dict[str, Any]]:
        """Messages the client logged and dropped (late, duplicate, malformed)."""
        return list(getattr(self.client, "ignored", []))

    def present(self, block: Block) -> Reply:
        """Send one block and return the validated reply (all channels)."""
        return self.client.present(block)

    def __call__(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``[k, C, H, W]`` float in [0, 1] (or ``uint8 [k, H, W, C]``) -> ``float64 [k]`` mean responses."""
        if isinstance(images, torch.Tensor):
            u8 = display_uint8(images)
        else:
            u8 = np.ascontiguousarray(images, dtype=np.uint8)
        k = len(u8)
        bid = next(self._blocks)
        ids = bid * 100_000 + np.arange(k, dtype=np.int64)
        order = self.rng.permutation(np.repeat(np.arange(k), self.repeats))
        reply = self.present(Block(bid, ids, u8, self.repeats, order))
        j = reply.image_ids - bid * 100_000
        cnt = np.bincount(j, minlength=k)
        if self.select is None:
            r = reply.responses
            out = np.stack([np.bincount(j, weights=r[:, c], minlength=k) for c in range(r.shape[1])], axis=1)
            return torch.as_tensor(out / cnt[:, None])
        auto = isinstance(self.select, str) and self.select == "auto"
        # "auto" is select_channels' None (the one channel, or an error naming the channels); None here means all
        y = select_channels(reply.responses, None if auto else self.select)
        return torch.as_tensor(np.bincount(j, weights=y, minlength=k) / cnt)

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        where = getattr(self.client, "address", None) or getattr(self.client, "root", "?")
        return f"rig at {where} (select={self.select!r}, repeats={self.repeats})"


def rig_target(protocol: str = "zmq", address: str = "tcp://127.0.0.1:5555", folder: str | None = None,
               select: int | list[int] | str | None = "auto", repeats: int = 1, timeout: float = 10.0,
               retries: int = 5, backoff: float = 0.5, token: str | None = None, encoding: str = "raw",
               seed: int = 0, allow_remote: bool = False, run: str | None = None) -> RigTarget:
    """A live recording rig over ZeroMQ (``protocol="zmq"``, ``address``) or a file-drop ``folder``.

    Returns mean responses of the selected channel(s) over ``repeats`` presentations; noisy.
    ``run``: the run id written into file-drop manifests and required in the responses
    (default: a fresh ``rig-<12 hex>``, unique per target).
    """
    run = f"rig-{uuid.uuid4().hex[:12]}" if run is None else str(run)
    client = make_client(protocol, address=address, folder=folder, token=token, timeout=timeout,
                         retries=retries, backoff=backoff, encoding=encoding, run=run, allow_remote=allow_remote)
    return RigTarget(client, select=select, repeats=repeats, seed=seed)

"""Closed loop with live recording rigs (``mango-rig/1``).

Modules (the transports are imported with the package; the rest on first use):

* :mod:`.protocol` -- the wire format: JSON header + binary frames, limits, HMAC token.
* :mod:`.zmq_transport` -- ZeroMQ DEALER client with retries / ROUTER server.
* :mod:`.filedrop` -- the XDream-style folder protocol (PNG + manifest, NPZ/CSV/.mat responses).
* :mod:`.model` -- Poisson model neurons from any registered target; an in-process rig.
* :mod:`.simulator` -- ``mango rig-sim``: a rig simulator for both protocols with fault injection.
* :mod:`.closedloop` -- the noise-aware loop (repeats, re-tests, best mean, references, crash-safe resume).
* :mod:`.run` -- ``mango rig-run``: the closed loop from the command line.

The protocol is specified in ``PROTOCOL.md`` beside this file.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..lazy import lazy_attributes
from .filedrop import FileDropClient
from .lsl_transport import LslRigClient
from .xdream import XDreamClient
from .zmq_transport import ZmqRigClient

_LAZY = {
    "Block": ".protocol", "Reply": ".protocol", "ProtocolError": ".protocol", "RigError": ".protocol",
    "Limits": ".protocol", "ZmqRigServer": ".zmq_transport", "PoissonNeurons": ".model", "LocalRig": ".model", "build_neurons": ".model",
    "closed_loop": ".closedloop", "RigRunResult": ".closedloop", "select_channels": ".closedloop",
}

__all__ = sorted([*_LAZY, "ZmqRigClient", "FileDropClient", "LslRigClient", "XDreamClient", "make_client",
                  "PROTOCOLS"])
#: the transports: ZeroMQ sockets, a shared folder (MANGO's manifest convention), Lab Streaming Layer,
#: and a shared folder in XDream's own convention (BMP stimuli, ``block%03d.mat`` responses)
PROTOCOLS = ("zmq", "filedrop", "lsl", "xdream")


def make_client(protocol: str = "zmq", *, address: str = "tcp://127.0.0.1:5555", folder: str | None = None,
                token: str | None = None, timeout: float = 10.0, retries: int = 5, backoff: float = 0.5,
                encoding: str = "raw", run: str = "", allow_remote: bool = False, stream_name: str = "mango",
                response_folder: str | None = None, shows: int = 1) -> Any:
    """A rig client for ``protocol`` (one of :data:`PROTOCOLS`) with ``present(Block) -> Reply``.

    ``address``/``token``/``encoding``/``allow_remote`` are for ZeroMQ; ``folder`` for the two folder
    transports; ``stream_name`` (the stream prefix) for LSL; ``run`` (the run id) for the file drop and
    LSL, which echo it so a leftover of another run is never taken for this run's answer;
    ``response_folder`` and ``shows`` for XDream (see :class:`XDreamClient`); they are refused for the others."""
    if protocol != "xdream" and (response_folder is not None or int(shows) != 1):
        raise ConfigError(f"response_folder and shows (--response-folder, --shows) are for the xdream protocol, "
                          f"not {protocol!r}")
    if protocol == "zmq":
        return ZmqRigClient(address, token=token, timeout=timeout, retries=retries, backoff=backoff,
                            encoding=encoding, allow_remote=allow_remote)
    if protocol == "filedrop":
        if not folder:
            raise ConfigError("the filedrop protocol needs a folder (folder=... / --folder)")
        return FileDropClient(folder, timeout=timeout, retries=retries, backoff=backoff, run=run)
    if protocol == "lsl":
        return LslRigClient(stream_name, run=run or None, token=token, timeout=timeout, retries=retries,
                            backoff=backoff)
    if protocol == "xdream":
        if not folder:
            raise ConfigError("the xdream protocol needs a folder (folder=... / --folder): XDream's write_dir")
        return XDreamClient(folder, timeout=timeout, retries=retries, backoff=backoff,
                            response_folder=response_folder, shows=shows, run=run or None)
    raise ConfigError(f"unknown rig protocol {protocol!r}; valid choices: {', '.join(PROTOCOLS)}")


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

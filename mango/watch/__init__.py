"""``mango watch FOLDER``: a live web page of a run, rig-run, compare or scan folder while it runs.

The page (served on 127.0.0.1 by default) updates by itself through server-sent events: the best
value and image so far (with the reported quantity, e.g. a spiking unit's rate, when the run
records one), the best-so-far curve against the expected best-of-n of random search, queries
per second, ETA and the optimizer's share of time; for rigs the per-block latency, retries,
dropped trials, rejected replies and the reference images' drift; for compare/scan folders a
table of runs with their status and their curves side by side.

It only reads the folder (never writes into it, never cuts a torn journal line), follows a
crash and a resume, and keeps showing the folder after the run ended.

Python::

    from mango.watch import serve
    url = serve("runs/x")            # background thread; port 0 picks a free port

Importing this package is cheap: the web stack (starlette, uvicorn) loads when serving.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["serve", "stop", "add_arguments", "main", "add_watch_option", "serve_option", "check_watch_option", "parse_watch",
           "DEFAULT_PORT"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
_SERVERS: dict[str, Any] = {}
_AT_EXIT = False                 # _stop_all registered with atexit


def serve(folder: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *,
          render: bool = True) -> str:
    """Serve the live view of ``folder`` in a background (daemon) thread and return its URL.

    Args:
        folder: a run, rig-run, compare or scan folder (only read; it may not exist yet).
        host: address to bind (default loopback). Any other address requires ``token``.
        port: TCP port; 0 picks a free one.
        token: secret required on every request (at least 8 characters); the URL carries it.
        render: also draw the latest batch (and the best image before ``best.png`` exists) from the
            journal's codes with the run's generator, in memory.

    Returns:
        The page's URL, e.g. ``http://127.0.0.1:38211/`` (``...?token=...`` with a token).

    Raises:
        mango.errors.ConfigError: a non-loopback ``host`` without a token, a short token, or an
            address that cannot be bound.
    """
    from .server import start

    srv = start(folder, host=host, port=port, token=token, render=render)
    _register(srv)
    return srv.url


def stop(url: str) -> None:
    """Stop the live view that :func:`serve` returned ``url`` for (no-op for an unknown URL)."""
    srv = _SERVERS.pop(url, None)
    if srv is not None:
        srv.stop()


def parse_watch(value: str) -> tuple[str, int]:
    """``--watch`` value -> ``(host, port)``: ``PORT``, ``HOST:PORT``, ``HOST`` or ``""`` (127.0.0.1, default port).

    Raises:
        mango.errors.ConfigError: a port that is not an integer in 0..65535.
    """
    from ..errors import ConfigError

    host, port = "127.0.0.1", str(DEFAULT_PORT)
    text = (value or "").strip()
    if text.startswith("["):  # [::1]:8765
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
        port = rest.lstrip(":") or port
    elif text.isdigit():
        port = text
    elif text.count(":") == 1:
        host, port = text.split(":")
        host = host or "127.0.0.1"
    elif text:
        host = text
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--watch {value!r}: the port must be an integer in 0..65535 (valid forms: PORT, "
                          "HOST:PORT, HOST)")
    return host, int(port)


def add_watch_option(p: argparse.ArgumentParser) -> None:
    """Add ``--watch [[HOST:]PORT]`` to a command that writes a run folder (run, compare, scan, rig-run)."""
    p.add_argument("--watch", nargs="?", const="", default=None, metavar="[HOST:]PORT",
                   help=f"serve the live view of the output folder while this runs (default 127.0.0.1:{DEFAULT_PORT}, "
                        "a free port when taken; another host needs $MANGO_WATCH_TOKEN); `mango watch FOLDER` "
                        "keeps showing it after the run")


def check_watch_option(value: str | None, token: str | None = None) -> None:
    """Refuse a bad ``--watch`` value (the address, or a non-loopback host without a token) before a command
    does any work; :func:`serve_option` starts the view later (a port taken then is still said there)."""
    if value is None:
        return
    from .server import check_binding

    host, _ = parse_watch(value)
    check_binding(host, token if token is not None else os.environ.get("MANGO_WATCH_TOKEN"))


def serve_option(value: str | None, folder: str | os.PathLike, token: str | None = None,
                 command: bool = True) -> str | None:
    """Start the live view a ``--watch`` value asks for (None: not asked); prints and returns the URL.

    The token defaults to ``$MANGO_WATCH_TOKEN``. The server is a daemon thread: it ends with the command
    (``command=True``: the printed line says so, and how to keep showing the folder afterwards).
    """
    if value is None:
        return None
    host, port = parse_watch(value)
    token = token if token is not None else os.environ.get("MANGO_WATCH_TOKEN")
    srv = _start(folder, host, port, token, render=True)
    _register(srv)
    after = (f" (served while this command runs; `mango watch {folder}` shows the folder afterwards)"
             if command else "")
    print(f"live view: {srv.url}{after}", file=sys.stderr, flush=True)
    return srv.url


def _stop_all() -> None:
    """Stop every live view this process serves (registered with ``atexit`` by :func:`_register`): a
    server thread killed mid-request at interpreter exit, after torch ran in both threads, aborted the
    process ("terminate called without an active exception", exit code 134)."""
    for url in list(_SERVERS):
        try:
            _SERVERS.pop(url).stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - exiting anyway: one server's failure must not block the others
            log.debug("stopping the live view %s failed", url, exc_info=True)


def _register(srv: Any) -> None:
    """Keep ``srv`` for :func:`stop` and stop it at exit."""
    global _AT_EXIT
    if not _AT_EXIT:
        import atexit

        atexit.register(_stop_all)
        _AT_EXIT = True
    _SERVERS[srv.url] = srv


def _start(folder: str | os.PathLike, host: str, port: int, token: str | None, render: bool) -> Any:
    """Start a server; the default port falls back to a free one when it is taken."""
    from ..errors import ConfigError
    from .server import start

    try:
        return start(folder, host=host, port=port, token=token, render=render)
    except ConfigError as exc:
        if port == DEFAULT_PORT and "cannot bind" in str(exc):
            log.warning("port %d is taken; using a free port", port)
            return start(folder, host=host, port=0, token=token, render=render)
        raise


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``mango watch``."""
    p.add_argument("folder", help="run, rig-run, compare or scan folder (it may not exist yet)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other address needs --token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}, a free one when it is taken; 0: any free port)")
    p.add_argument("--token", default=os.environ.get("MANGO_WATCH_TOKEN"),
                   help="secret every request must carry (or $MANGO_WATCH_TOKEN); 'auto' makes a random one")
    p.add_argument("--no-render", action="store_true",
                   help="do not draw images from the journal's codes (the latest batch; the best image before "
                        "best.png exists); saves loading the generator")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """``mango watch FOLDER``: serve until Ctrl-C; prints the URL."""
    from ..errors import ConfigError

    token = args.token
    if token == "auto":
        token = secrets.token_urlsafe(18)
    port = int(args.port)
    if port < 0 or port > 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    if Path(args.folder).exists() and not Path(args.folder).is_dir():
        raise ConfigError(f"{args.folder} is a file; mango watch takes a run folder (mango run --out), a compare "
                          "or scan folder, or a rig run folder")
    srv = _start(args.folder, args.host, port, token, render=not args.no_render)
    print(f"watching {args.folder}: {srv.url}", flush=True)
    if not Path(args.folder).exists():      # a typo, or a run not started yet: the page waits for it
        print(f"({args.folder} does not exist yet: the page waits for a run to write it; check the path if "
              "none is starting)", file=sys.stderr, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        import socket

        print(f"(from another machine: http://{socket.gethostname()}:{srv.port}/"
              + (f"?token={token}" if token else "") + ")", flush=True)
    print("Ctrl-C stops the server (the run is not affected)", flush=True)
    if getattr(args, "open", False):
        import webbrowser

        webbrowser.open(srv.url)
    try:
        while srv.thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    sys.stdout.flush()
    return 0

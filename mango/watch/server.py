"""The live view's web server: a Starlette app (page, state JSON, server-sent events, PNGs) run by uvicorn.

Routes (all GET, all read-only)::

    /              the page (mango.watch.page.PAGE)
    /api/state     the folder state now (JSON, see FolderWatcher.state)
    /events        text/event-stream: an ``event: state`` message whenever the state changes
    /files/<path>  a PNG under the watched folder (best.png of a run or of a compare run)

Security: bound to a loopback address, requests must name a loopback host (a page on another
site cannot reach it through DNS rebinding); bound to any other address, a token is required to
start and every request must carry it (``?token=``, the ``X-Mango-Token`` header,
``Authorization: Bearer``, or the cookie the page sets).
"""
from __future__ import annotations

import asyncio
import http.cookies
import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from ..errors import ConfigError
from .reader import FolderWatcher

__all__ = ["create_app", "start", "WatchServer", "is_loopback", "Hub", "COOKIE"]

log = logging.getLogger(__name__)

COOKIE = "mango_watch_token"
MIN_TOKEN_CHARS = 8


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    h = host.strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class Hub:
    """One :class:`FolderWatcher` shared by every connection; recomputes the state only when the files
    change (or every ``refresh`` seconds, so that "running" turns into "stalled" when a run dies)."""

    def __init__(self, folder: str | os.PathLike, refresh: float = 2.0, render: bool = True) -> None:
        self.watcher = FolderWatcher(folder, render=render)
        self.renderer = None
        self._warmed: set[str] = set()
        if render:
            from .render import Renderer

            self.renderer = Renderer()
        self.refresh = refresh
        self._lock = threading.Lock()
        self._fp: Any = None
        self._at = 0.0
        self._body = ""
        self._checked = 0.0
        self.min_gap = 0.2
        self.version = 0

    def get(self, fresh: bool = False) -> tuple[str, int]:
        """``(state JSON without the server time, version)``; the version grows when the state changes.

        Event streams share one look at the files per ``min_gap`` seconds; ``fresh`` always looks."""
        with self._lock:
            now = time.monotonic()
            if self._body and not fresh and now - self._checked < self.min_gap:
                return self._body, self.version  # several open pages: one look at the files per min_gap
            self._checked = now
            fp = self.watcher.fingerprint()
            if fp != self._fp or now - self._at >= self.refresh or not self._body:
                state = self.watcher.state()
                state.pop("now", None)
                body = json.dumps(state, allow_nan=False, default=str)
                self._fp, self._at = fp, now
                if body != self._body:
                    self._body = body
                    self.version += 1
                self._warm()
            return self._body, self.version

    def _warm(self) -> None:
        """Build the generator of the watched run in the background, so its first image comes quickly."""
        if self.renderer is None:
            return
        reader = self.watcher.run_reader(".")
        table = reader.generator_table() if reader is not None else None
        if table is None or json.dumps(table, sort_keys=True, default=str) in self._warmed:
            return
        self._warmed.add(json.dumps(table, sort_keys=True, default=str))

        def build() -> None:
            try:
                self.renderer.generator(table)
            except Exception:  # noqa: BLE001 - logged by the renderer; the page shows no image
                pass

        threading.Thread(target=build, name="mango-watch-warm", daemon=True).start()

    def codes(self, rel: str, what: str) -> tuple[dict[str, Any] | None, list[list[int]] | None]:
        """``(generator table, codes)`` of run folder ``rel``'s best query (``what="best"``) or latest batch."""
        with self._lock:
            reader = self.watcher.run_reader(rel)
            if reader is None:
                return None, None
            return reader.generator_table(), (reader.best_codes() if what == "best" else reader.latest_codes())

    def state_json(self) -> str:
        body, _ = self.get(fresh=True)
        return body[:-1] + f', "now": {time.time()}}}' if body.endswith("}") else body


class _Guard:
    """ASGI middleware: the token check (when a token is set) and the loopback Host check."""

    def __init__(self, app: Any, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    def _token_of(self, scope: dict[str, Any]) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if qs.get("token"):
            return qs["token"][0]
        if headers.get("x-mango-token"):
            return headers["x-mango-token"]
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if "cookie" in headers:
            c = http.cookies.SimpleCookie()
            try:
                c.load(headers["cookie"])
            except http.cookies.CookieError:
                return None
            if COOKIE in c:
                return c[COOKIE].value
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.responses import PlainTextResponse

        if self.loopback_only:
            host = ""
            for k, v in scope.get("headers", []):
                if k == b"host":
                    host = v.decode("latin-1")
            name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.split(":")[0]
            if not is_loopback(name):
                await PlainTextResponse(f"refused: host {host!r} is not a loopback name", status_code=403)(
                    scope, receive, send)
                return
        if self.token is not None:
            given = self._token_of(scope)
            if given is None or not secrets.compare_digest(given.encode(), self.token.encode()):
                await PlainTextResponse("refused: this live view needs its token (?token=...)", status_code=401)(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(folder: str | os.PathLike, token: str | None = None, loopback_only: bool = True,
               interval: float = 0.5, stopping: threading.Event | None = None, render: bool = True) -> Any:
    """The Starlette app watching ``folder``.

    Args:
        folder: the run / rig / compare / scan folder (it may not exist yet).
        token: when given, every request must carry it.
        loopback_only: refuse requests whose Host header is not a loopback name.
        interval: seconds between checks of the files for each open event stream.
        stopping: set it to end the event streams (server shutdown).
        render: draw the latest batch and the best code with the run's generator (in memory, at
            ``/render/{best,latest}.png?run=REL``; needs torch and the generator's weights).
    """
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    from .page import PAGE

    root = Path(folder).resolve()
    hub = Hub(root, render=render)
    renderer = hub.renderer
    stop = stopping or threading.Event()

    async def index(request: Any) -> Response:
        resp = HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})
        if token is not None:
            resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return resp

    async def state(request: Any) -> Response:
        body = await asyncio.to_thread(hub.state_json)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def events(request: Any) -> Response:
        async def stream() -> Any:
            sent = -1
            quiet = 0.0
            yield "retry: 1000\n\n"
            while not stop.is_set():
                body, version = await asyncio.to_thread(hub.get)
                if version != sent:
                    now = f', "now": {time.time()}}}'
                    data = body[:-1] + now if body.endswith("}") else body
                    yield f"id: {version}\nevent: state\ndata: {data}\n\n"
                    sent, quiet = version, 0.0
                else:
                    quiet += interval
                    if quiet >= 15.0:  # keep proxies and the browser from closing an idle stream
                        yield ": keep-alive\n\n"
                        quiet = 0.0
                await asyncio.sleep(interval)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def files(request: Any) -> Response:
        rel = request.path_params["path"]
        path = (root / rel).resolve()
        try:
            path.relative_to(root)
        except ValueError:
            return PlainTextResponse("refused: outside the watched folder", status_code=403)
        if path.suffix.lower() != ".png" or not path.is_file():
            return PlainTextResponse(f"no such image: {rel}", status_code=404)
        # read in one go: a replaced (atomically renamed) best.png is never served half-written
        data = await asyncio.to_thread(path.read_bytes)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def rendered(request: Any) -> Response:
        what = request.path_params["what"]
        rel = request.query_params.get("run", ".")
        if renderer is None or what not in ("best", "latest"):
            return PlainTextResponse("nothing to draw", status_code=404)
        table, codes = hub.codes(rel, what)
        if table is None or not codes:
            return PlainTextResponse("no codes or no generator to draw them", status_code=404)
        try:
            png = await asyncio.to_thread(renderer.render, table, codes, request.query_params.get("v", ""))
        except Exception as exc:  # noqa: BLE001 - the page shows "no image"
            return PlainTextResponse(f"cannot draw: {exc}", status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def favicon(request: Any) -> Response:
        return Response(status_code=204)

    routes = [Route("/", index), Route("/favicon.ico", favicon), Route("/api/state", state), Route("/events", events),
              Route("/files/{path:path}", files), Route("/render/{what}.png", rendered)]
    app = Starlette(routes=routes)
    app.state.hub = hub
    return _Guard(app, token, loopback_only)


@dataclass
class WatchServer:
    """A running live view (uvicorn in a daemon thread). :attr:`url` opens the page; :meth:`stop` ends it."""

    url: str
    host: str
    port: int
    folder: Path
    thread: threading.Thread
    _server: Any = field(repr=False)
    _stopping: threading.Event = field(repr=False)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (closes the event streams) and wait for the thread."""
        self._stopping.set()
        self._server.should_exit = True
        self.thread.join(timeout)


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot bind the live view to host {host!r}: {exc}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind the live view to {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(64)
    return sock


def check_binding(host: str, token: str | None) -> None:
    """Refuse a non-loopback ``host`` without a token, and a too short token."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the live view's token must have at least {MIN_TOKEN_CHARS} characters, got {len(token)}")
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve the live view on {host!r} without a token: anyone who can reach that address "
            "could read the run folder. Give --token TEXT (or $MANGO_WATCH_TOKEN, or --token auto for a random "
            "one), or bind to 127.0.0.1 (the default) and use an SSH tunnel")


def start(folder: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          interval: float = 0.5, render: bool = True) -> WatchServer:
    """Serve the live view of ``folder`` in a background thread; returns once it accepts connections.

    Args:
        folder: the run / rig-run / compare / scan folder (only read; it may not exist yet).
        host: address to bind; anything but a loopback address needs ``token``.
        port: TCP port; 0 picks a free one.
        token: the secret every request must carry (required off loopback, at least 8 characters).
        interval: seconds between file checks per open page.
        render: draw images from the journal's codes (see :func:`create_app`).

    Raises:
        ConfigError: a non-loopback host without a token, a short token, or an address that cannot be bound.
    """
    import uvicorn

    check_binding(host, token)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    stopping = threading.Event()
    app = create_app(folder, token=token, loopback_only=is_loopback(host), interval=interval, stopping=stopping,
                     render=render)
    # log_config=None: uvicorn's default runs logging.config.dictConfig, which closes every handler already
    # installed in the process (a notebook user's log file; jax's absl handler closed the stream it held)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                            timeout_graceful_shutdown=2, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="mango-watch", daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if not thread.is_alive():
            raise ConfigError(f"the live view's server stopped while starting on {host}:{bound_port}")
        if time.monotonic() - t0 > 20:
            raise ConfigError(f"the live view's server did not start on {host}:{bound_port} within 20 s")
        time.sleep(0.02)
    url_host = host
    if host in ("0.0.0.0", ""):
        url_host = "127.0.0.1"
    elif host == "::":
        url_host = "::1"
    if ":" in url_host:
        url_host = f"[{url_host}]"
    url = f"http://{url_host}:{bound_port}/" + (f"?token={quote(token, safe='')}" if token else "")
    log.info("live view of %s at %s", folder, url)
    return WatchServer(url=url, host=host, port=bound_port, folder=Path(folder), thread=thread, _server=server,
                       _stopping=stopping)

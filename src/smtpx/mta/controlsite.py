"""Where a control plane listens, and who may talk to it (F33): what the MTA's
(:mod:`smtpx.mta.control`) and a bare server's (:mod:`smtpx.mta.servercontrol`) control
planes share.

* a unix socket, created mode 0600 (no moment where others could connect), and/or a
  loopback TCP port that needs ``Authorization: Bearer <token>``;
* errors as JSON (``{"error": "..."}``): 400 for a bad request, 401 without the token;
* the error stream (``GET /v1/errors``: a log handler from start to close);
* a plugin's own endpoints (F35, F111), under ``/v1/plugin/``: :func:`mount_plugin`;
* the NDJSON streams being served (:class:`OpenStreams`), ended at once by ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from smtpx.errors import ParseError
from smtpx.server.events import ErrorStream

__all__ = [
    "PLUGIN_PREFIX",
    "ControlSite",
    "OpenStreams",
    "json_error",
    "list_limit",
    "mount_plugin",
    "token_refused",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PLUGIN_PREFIX = "/v1/plugin"


class OpenStreams:
    """The handlers streaming NDJSON right now, so that closing the control plane ends
    them at once instead of waiting (aiohttp's graceful shutdown, up to a minute) until
    each one's next write finds its client gone."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Count the running handler as a stream while the block runs."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._tasks.discard(task)

    def end_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class ControlSite:
    """An aiohttp application served on a unix socket and/or loopback TCP with a token.
    Subclasses give the routes (:meth:`routes`) and may map more errors
    (:meth:`error_reply`)."""

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        http: tuple[str, int] | None = None,
        token: str | None = None,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.http = http
        self.token = token
        self.started = time.time()
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self.errors: ErrorStream | None = None  # the error stream, from start() to close()
        self.streams = OpenStreams()  # ended at once by close()
        self.app = web.Application(middlewares=[self._guard])

    async def start(self) -> None:
        self.errors = ErrorStream(asyncio.get_running_loop())
        logging.getLogger().addHandler(self.errors)
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        self._runner = runner
        if self.socket_path is not None:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            # Created 0600 from the start: no moment where others could connect.
            old = os.umask(0o177)
            try:
                await web.UnixSite(runner, str(self.socket_path)).start()
            finally:
                os.umask(old)
        if self.http is not None:
            if not self.token:
                raise ValueError("the HTTP control listener needs a token (control.token_file)")
            await web.TCPSite(runner, self.http[0], self.http[1]).start()
            ports = [a[1] for a in runner.addresses if isinstance(a, tuple)]
            self.http_port = int(ports[0]) if ports else self.http[1]

    async def close(self) -> None:
        self.streams.end_all()
        if self.errors is not None:
            logging.getLogger().removeHandler(self.errors)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    def error_reply(self, exc: Exception) -> web.Response | None:
        """The reply for an error a handler raised (None: not an error of the API's)."""
        if isinstance(exc, ValueError | KeyError | TypeError | ParseError):
            return json_error(400, str(exc))
        return None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Requests over TCP need the bearer token; the unix socket is guarded by its
        file mode. Errors become JSON."""
        if token_refused(request, self.token):
            return json_error(401, "a valid bearer token is required")
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            reply = self.error_reply(exc)
            if reply is None:
                raise
            return reply


def token_refused(request: web.Request, token: str | None) -> bool:
    """Whether ``request`` came over TCP without the right bearer token (a unix socket's
    peer name is a str, or None: its file mode guards it)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peer, tuple):
        return False
    # A header is not always UTF-8: its undecodable bytes come back as surrogates.
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    expected = f"Bearer {token}" if token else None
    return expected is None or not hmac.compare_digest(given, expected.encode())


def json_error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def mount_plugin(app: web.Application, routes: Sequence[web.AbstractRouteDef]) -> None:
    """Serve a plugin's routes under :data:`PLUGIN_PREFIX` (``/v1/plugin/PATH``), behind
    the same socket, token and error handling as the rest (F35)."""
    if not routes:
        return
    plugin = web.Application()
    plugin.add_routes(routes)
    app.add_subapp(PLUGIN_PREFIX, plugin)


def list_limit(text: str | None) -> int | None:
    """``?limit=``: how many messages a listing shows at most (None: all)."""
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"limit: a whole number from 1, not {text[:20]!r}")
    return int(text)

"""What the control plane streams about the running MTA (async_smtp's RPC pipes, F107-F110):
its errors, the envelopes it receives, its connection cache, and the process itself.

=====================================  ===============================================
``GET  /v1/errors``                    NDJSON: every error-level log record
                                       (``{"kind": "error", "seq", "time", "level",
                                       "logger", "message", "exception"?, "fields"?}``)
                                       and a ``{"kind": "heartbeat", "seq"}`` every
                                       ``?ping=`` seconds (default 10); ``?recent=N``
                                       first replays the last N kept (up to 100)
``GET  /v1/server/envelopes``          NDJSON: each message received whole, before the
                                       relay takes it (``{"kind": "envelope", "time",
                                       "session", "id", "sender", "recipients", "size"}``),
                                       and a ``ping`` every ``?ping=`` seconds
``GET  /v1/cache/stream``              NDJSON: the connection cache's status (as
                                       ``GET /v1/cache``) every ``?interval=`` seconds
                                       (0.1 to 3600, default 10)
``GET  /v1/process``                   the process: pid, memory, CPU, threads, asyncio
                                       tasks, garbage collector counts
=====================================  ===============================================

Every stream ends when the client goes; a slow reader loses the oldest events, never
slows the MTA (:class:`~smtpx.server.events.EventBus`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from smtpx.server import Server
from smtpx.server.events import EnvelopeReceived, ErrorStream

if TYPE_CHECKING:
    from smtpx.mta.control import ControlPlane
    from smtpx.mta.controlsite import ControlSite

__all__ = ["routes", "server_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes(plane: ControlPlane, seconds: Callable[[str | None, str], float]) -> list[web.RouteDef]:
    """The endpoints above; ``seconds`` reads ``?ping=`` and ``?interval=`` (400 if bad)."""

    async def cache(request: web.Request) -> web.StreamResponse:
        interval = seconds(request.query.get("interval"), "interval")
        return await _ndjson(plane, request, _cache(plane, interval))

    return [
        *server_routes(plane, plane.mta.server, seconds),
        web.get("/v1/cache/stream", cache),
    ]


def server_routes(
    site: ControlSite, server: Server, seconds: Callable[[str | None, str], float]
) -> list[web.RouteDef]:
    """The endpoints above that a bare server has too (no connection cache)."""

    async def errors(request: web.Request) -> web.StreamResponse:
        if site.errors is None:
            raise ValueError("the control plane is not running")
        ping = seconds(request.query.get("ping"), "ping")
        recent = _count(request.query.get("recent"), "recent")
        return await _ndjson(site, request, _errors(site.errors, ping, recent))

    async def envelopes(request: web.Request) -> web.StreamResponse:
        ping = seconds(request.query.get("ping"), "ping")
        return await _ndjson(site, request, _envelopes(server, ping))

    async def process(request: web.Request) -> web.Response:
        return web.json_response(_process())

    return [
        web.get("/v1/errors", errors),
        web.get("/v1/server/envelopes", envelopes),
        web.get("/v1/process", process),
    ]


async def _ndjson(
    site: ControlSite, request: web.Request, lines: AsyncIterator[dict[str, Any]]
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    with site.streams.streaming():  # close() ends it at once
        async for line in lines:
            try:
                await response.write(json.dumps(line, default=str).encode() + b"\n")
            except (ConnectionError, RuntimeError):
                break
    return response


async def _errors(stream: ErrorStream, ping: float, recent: int) -> AsyncIterator[dict[str, Any]]:
    """Every error-level log record from now on (F109), with heartbeats."""
    with stream.bus.subscribe() as live:
        # Nothing can be published between these two lines: no event is lost or twice.
        for event in list(stream.recent)[-recent:] if recent else []:
            yield event.to_json()
        while True:
            try:
                async with asyncio.timeout(ping):
                    event = await anext(live)
            except TimeoutError:
                yield {"kind": "heartbeat", "seq": stream.seq, "time": time.time()}
            else:
                yield event.to_json()


async def _envelopes(server: Server, ping: float) -> AsyncIterator[dict[str, Any]]:
    """Each envelope the server receives (F108), with pings."""
    with server.events.subscribe() as received:
        while True:
            try:
                async with asyncio.timeout(ping):
                    event: EnvelopeReceived = await anext(received)
            except TimeoutError:
                yield {"kind": "ping", "time": time.time()}
                continue
            info = event.info
            yield {
                "kind": "envelope",
                "time": event.time,
                "session": event.session_id,
                "id": str(info.id),
                "sender": str(info.sender),
                "recipients": [str(r) for r in info.recipients],
                "size": event.size,
            }


async def _cache(plane: ControlPlane, interval: float) -> AsyncIterator[dict[str, Any]]:
    """The connection cache's status now, then every ``interval`` seconds (F107)."""
    while True:
        yield {"kind": "cache", "time": time.time(), **plane.cache_status()}
        await asyncio.sleep(interval)


def _process() -> dict[str, Any]:
    """The process's vital signs (F110)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "rss_bytes": _rss(),
        "max_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "cpu_user_seconds": usage.ru_utime,
        "cpu_system_seconds": usage.ru_stime,
        "threads": threading.active_count(),
        "asyncio_tasks": len(asyncio.all_tasks()),
        "gc_counts": list(gc.get_count()),
        "gc_collections": [s["collections"] for s in gc.get_stats()],
        "open_files": _open_files(),
    }


def _rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _open_files() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _count(text: str | None, name: str) -> int:
    """A count from the query (0 when absent)."""
    if text is None:
        return 0
    if not text.isdigit() or len(text) > 6:
        raise ValueError(f"{name}: a number, not {text[:20]!r}")
    return int(text)

"""The web console: one static page on the control plane's JSON API, served by the control
plane's own HTTP listener (same socket, same token; nothing new to open).

=====================================  ===============================================
``GET  /console/``                     the page (and ``app.js``, ``app.css`` beside it)
``GET  /v1/console/shape``             the queue by destination and age
                                       (:mod:`smtpx.spool.shape`, as ``smtpx spool
                                       shape --format json``); ``?by=sender``; the
                                       filters of ``/v1/spool/messages``
``GET  /v1/console/rates``             the last hour minute by minute: spooled,
                                       delivered, deferred, bounced, and the deferral
                                       reasons (:mod:`smtpx.mta.console.rates`)
=====================================  ===============================================

Security. The page's three files hold no data and are served without the token (a
browser cannot put a bearer token on a page load); everything they show comes from the
JSON API, which the token guards as before. The page reads the token once from its URL
fragment (``/console/#token=...``: a fragment never reaches a server, a log or a Referer),
keeps it in the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer``; no
cookie is ever set, so another site cannot make a browser act with it. On top of that,
requests that change something (anything but GET and HEAD) are refused (403) when a
browser says they come from another origin (``Origin``, ``Sec-Fetch-Site``): this also
covers the unix socket, which needs no token, forwarded to a TCP port. The page allows
only its own scripts and styles (Content-Security-Policy) and may not be framed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from smtpx.io.tasks import cancel_and_wait
from smtpx.mta.console.rates import Rates, RatesFeed
from smtpx.spool.filter import message_json
from smtpx.spool.shape import BY, shape
from smtpx.spool.spool import SpoolError
from smtpx.spool.types import SpoolEvent

if TYPE_CHECKING:
    from smtpx.mta.control import ControlPlane

__all__ = ["PAGE_HEADERS", "front", "install", "shape_json"]

log = logging.getLogger("smtpx.control")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_FILES = {
    "/console/": ("index.html", "text/html"),
    "/console/app.js": ("app.js", "text/javascript"),
    "/console/app.css": ("app.css", "text/css"),
}
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def install(app: web.Application, plane: ControlPlane) -> None:
    """Add the console to the control plane's ``app``: its page ahead of the token guard,
    the cross-origin check, its JSON endpoints and the listener that feeds the rates."""
    rates = Rates()
    app.middlewares.insert(0, front)

    async def feeding(app: web.Application) -> AsyncIterator[None]:
        feed = _Feed(plane, rates)
        with plane.mta.spool.events.listen(feed.counting.count):
            yield
        await feed.close()

    async def shape_handler(request: web.Request) -> web.Response:
        messages = [message_json(m) for m in await plane._selected(request)]
        return web.json_response(shape_json(messages, request.query.get("by", "recipient")))

    async def rates_handler(request: web.Request) -> web.Response:
        return web.json_response(rates.as_json(time.time()))

    app.cleanup_ctx.append(feeding)
    app.add_routes(
        [
            web.get("/v1/console/shape", shape_handler),
            web.get("/v1/console/rates", rates_handler),
        ]
    )


def shape_json(messages: list[dict[str, Any]], by: str) -> dict[str, Any]:
    """``GET /v1/console/shape``'s answer for ``messages`` (as the API lists them)."""
    if by not in BY:
        raise ValueError(f"by: one of {', '.join(BY)}")
    return shape(messages, time.time(), by=by).as_json()


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before the token guard: the page's files (no data in them), and the refusal of
    state-changing requests a browser says come from another origin."""
    if request.method not in _SAFE_METHODS and _cross_origin(request):
        return web.json_response(
            {"error": "refused: a request from another origin may not change anything"},
            status=403,
        )
    if request.path == "/console":
        raise web.HTTPFound("/console/")
    page = _FILES.get(request.path)
    if page is None or request.method not in ("GET", "HEAD"):
        return await handler(request)
    name, content_type = page
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=content_type, headers=PAGE_HEADERS)


def _cross_origin(request: web.Request) -> bool:
    """Whether the browser that sent ``request`` says it comes from another site: its
    ``Sec-Fetch-Site``, or an ``Origin`` whose host and port are not the request's."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser's cross-origin request (curl, the CLI, a same-origin GET)
    parts = urlsplit(origin)
    return parts.scheme not in ("http", "https") or parts.netloc != request.host


class _Feed:
    """The rates' listener (:class:`RatesFeed`, compiled) and the lookups it asks for: a
    deferral whose event does not say why (an older node's) is counted once its reason
    is looked up, in a task of its own."""

    def __init__(self, plane: ControlPlane, rates: Rates) -> None:
        self.plane = plane
        self.rates = rates
        self.counting = RatesFeed(rates, self._look_up)
        self._lookups: set[asyncio.Task[None]] = set()

    def _look_up(self, event: SpoolEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._count_looked_up(event))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _count_looked_up(self, event: SpoolEvent) -> None:
        self.rates.count(event.kind, event.time, await _reason(self.plane, event))

    async def close(self) -> None:
        await cancel_and_wait(self._lookups)


async def _reason(plane: ControlPlane, event: SpoolEvent) -> str | None:
    """Why a deferred message was deferred: its last attempt's error, looked up (the
    events of today's nodes carry it; an older node's do not); None when the message is
    gone meanwhile or the store cannot answer."""
    try:
        message = await plane.mta.spool.find(event.id)
    except SpoolError:
        return None
    except Exception as exc:  # a shared store that cannot answer: count it anyway
        log.warning("console: cannot read %s: %s", event.id, exc)
        return None
    last = message.last_attempt
    return last[1] if last else None

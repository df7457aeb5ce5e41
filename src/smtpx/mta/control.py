"""The control plane: HTTP + JSON for operators, on a unix socket (mode 0600) and optionally
on a loopback TCP port with a bearer token. Also ``/metrics`` (Prometheus) and ``/healthz``.

Endpoints (all JSON unless said otherwise; errors are ``{"error": "..."}`` with 400, 401,
404 or 409):

=====================================  ============================================
``GET  /healthz``                      ``{"status": "ok", "version", "uptime"}``
``GET  /metrics``                      Prometheus text exposition
``GET  /v1/spool/messages``            ``{"messages": [message...], "total": n}``; filters
                                       below; ``?limit=N``: the N oldest only (``total``
                                       counts all that matched)
``GET  /v1/spool/count``               ``{"count": n, "by_status": {...}}``; filters
``GET  /v1/spool/messages/{id}``       one message, plus ``headers``; ``?raw=1``: the
                                       message itself (``message/rfc822``)
``POST /v1/spool/freeze``              ``{"ids": [...]}``
``POST /v1/spool/send``                ``{"ids": [...]}`` or ``{"all": true}`` or
                                       ``{"frozen": true}``; ``"retry_intervals": [...]``
``POST /v1/spool/remove``              ``{"ids": [...]}`` (any state; recoverable until purged)
``POST /v1/spool/recover``             ``{"ids": [...], "from": "removed"|"quarantine"}``
``POST /v1/spool/quarantine``          ``{"ids": [...], "reason": "..."}`` (any state)
``POST /v1/spool/purge``               ``{"ids": [...]}`` (removed or quarantined: gone for good)
``GET  /v1/spool/events``              NDJSON stream of spool events, with a ping
                                       every ``?ping=`` seconds (0.1 to 3600, default 10);
                                       ``?kind=spooled,frozen``, ``?queue=frozen`` (where
                                       the message is after it) filter; ``?existing=1``
                                       first lists the queue's messages (``listed``)
``GET  /v1/errors``, ``/v1/server/envelopes``, ``/v1/cache/stream``, ``/v1/process``:
                                       see :mod:`smtpx.mta.observe`
``GET  /v1/cache``                     connection cache status
``GET  /v1/server``                    server statistics, listeners and ports
``POST /v1/tls/reload``                reload the TLS certificate from its files
``POST /v1/server/serve``               start accepting (a worker: its supervisor's word
                                        that every worker is ready; else nothing to do)
=====================================  ============================================

Filters (query parameters, combined with AND): ``sender``, ``recipient``, ``next_hop``
(regular expressions, any case; a message matches if any of its values does),
``status`` (a status or a queue: active, frozen, removed, quarantine), ``older`` and
``younger`` (durations like ``10m``), ``select`` (an envelope selector, :mod:`smtpx.selector`:
header terms read the stored messages that the other filters let through).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from smtpx._version import __version__
from smtpx.content import chunks_in_thread
from smtpx.envelope import Envelope, RetryInterval
from smtpx.mta import console, observe
from smtpx.mta.controlsite import ControlSite, json_error, list_limit, mount_plugin
from smtpx.selector import Fields, Selector
from smtpx.server.deadlines import TimedOut
from smtpx.server.events import Listening
from smtpx.server.limits import Refused
from smtpx.server.session import EARLY_TALKERS_GREETING, EARLY_TALKERS_PIPELINING
from smtpx.spool.filter import MessageFilter, message_json, read_selector, selector_fields
from smtpx.spool.journal_store import JournalStore
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.spool import EventKind, Spool, SpoolError, SpoolEvent

if TYPE_CHECKING:
    from smtpx.mta.app import Mta

__all__ = ["ControlPlane"]

log = logging.getLogger("smtpx.control")

PING_SECONDS = 10.0
PING_RANGE = (0.1, 3600.0)  # what ``?ping=`` may ask for: no busy loop, no silent hour


# -- metrics -------------------------------------------------------------------------------


class _MtaCollector(Collector):
    """Reads the MTA's counters at scrape time: nothing is counted twice on hot paths."""

    def __init__(self, mta: Mta) -> None:
        self.mta = mta
        # The queue by status, read (asynchronously: a shared store asks its database)
        # by the /metrics handler just before it collects.
        self.queue_counts: dict[str, int] = {}

    def collect(self) -> Iterable[Any]:
        server, spool = self.mta.server, self.mta.spool
        counters = {
            "smtpx_messages_received_total": (
                "Messages accepted (250 after DATA)",
                server.stats["messages"],
            ),
            "smtpx_messages_delivered_total": (
                "Messages fully delivered",
                spool.stats["delivered"],
            ),
            "smtpx_messages_deferred_total": (
                "Delivery attempts deferred to a retry",
                spool.stats["deferred"],
            ),
            "smtpx_messages_bounced_total": (
                "Bounces sent for failed recipients",
                spool.stats["bounces"],
            ),
            "smtpx_sessions_total": ("SMTP sessions accepted", server.stats["sessions"]),
            "smtpx_connections_refused_total": (
                "Connections refused (session caps)",
                server.stats["refused_connections"],
            ),
        }
        for name, (text, value) in counters.items():
            family = CounterMetricFamily(name.removesuffix("_total"), text)
            family.add_metric([], value)
            yield family
        tls = CounterMetricFamily(
            "smtpx_tls_handshakes",
            "Server TLS handshakes (STARTTLS; implicit TLS counts successes only)",
            labels=["outcome"],
        )
        tls.add_metric(["ok"], server.stats["tls_sessions"])
        tls.add_metric(["failed"], server.stats["tls_failures"])
        yield tls
        auth = CounterMetricFamily("smtpx_auth_attempts", "AUTH attempts", labels=["outcome"])
        auth.add_metric(["ok"], server.stats["auth_successes"])
        auth.add_metric(["failed"], server.stats["auth_failures"])
        yield auth
        yield from _abuse_families(server.stats)
        active = GaugeMetricFamily("smtpx_sessions_active", "SMTP sessions open now")
        active.add_metric([], server.sessions)
        yield active
        queue = GaugeMetricFamily(
            "smtpx_queue_messages", "Messages in the spool", labels=["status"]
        )
        counts = {status.value: 0 for status in Status if status is not Status.DELIVERED}
        counts.update(self.queue_counts)
        for status, count in counts.items():
            queue.add_metric([status], count)
        yield queue
        yield from _spool_faults(spool)
        for guard in self.mta.guards:  # DNS lists, rate limits, greylisting
            yield from guard.metrics()
        if self.mta.config.milters or self.mta.milter_stats.verdicts:
            yield from self.mta.milter_stats.metrics()
        if self.mta.spool_watch is not None:
            yield from self.mta.spool_watch.metrics()


def _spool_faults(spool: Spool) -> Iterable[Any]:
    """What went wrong with the spool's disk: failed appends by the operation that
    failed, appends refused while it could not write, bodies found damaged."""
    damaged = CounterMetricFamily(
        "smtpx_spool_damaged_bodies",
        "Stored bodies that failed their checksum (quarantined, never sent)",
    )
    damaged.add_metric([], spool.stats["damaged_bodies"])
    yield damaged
    if not isinstance(spool.store, JournalStore):
        store_errors = CounterMetricFamily(
            "smtpx_spool_store_errors", "Spool database operations that failed"
        )
        store_errors.add_metric([], spool.stats["store_errors"])
        yield store_errors
        return
    journal = spool.journal
    errors = CounterMetricFamily(
        "smtpx_spool_write_errors",
        "Journal appends that failed (their mail got a 4xx), by the operation that failed",
        labels=["operation"],
    )
    errors.add_metric(["write"], journal.write_errors)
    errors.add_metric(["fsync"], journal.fsync_errors)
    yield errors
    refused = CounterMetricFamily(
        "smtpx_spool_appends_refused", "Appends refused without trying, right after a failure"
    )
    refused.add_metric([], journal.refused)
    yield refused
    failing = GaugeMetricFamily(
        "smtpx_spool_failing", "1 while the last journal write failed (none succeeded since)"
    )
    failing.add_metric([], int(journal.failing))
    yield failing


def _abuse_families(stats: Counter[str]) -> Iterable[CounterMetricFamily]:
    """Connections a per-client limit turned away, sessions a deadline ended, clients
    that did not wait for the greeting."""
    limited = CounterMetricFamily(
        "smtpx_connections_limited",
        "Connections refused by a per-client limit (421 4.7.0)",
        labels=["limit"],
    )
    for refused in Refused:
        limited.add_metric([refused.value], stats[f"refused_{refused.value}"])
    yield limited
    timeouts = CounterMetricFamily(
        "smtpx_session_timeouts",
        "Sessions ended by a deadline (421 4.4.2): a command not complete in time, no "
        "content for data_timeout, content slower than min_data_rate; or dropped with "
        "their replies unread for command_timeout",
        labels=["reason"],
    )
    for reason in TimedOut:
        timeouts.add_metric([reason.value], stats[f"timeouts_{reason.value}"])
    yield timeouts
    proxy = CounterMetricFamily(
        "smtpx_proxy_refused",
        "Connections to a proxied listener refused before the greeting (421 4.7.0): from a "
        "peer not in proxy_from, or without a valid PROXY header in time",
        labels=["reason"],
    )
    proxy.add_metric(["peer"], stats["refused_proxy_peer"])
    proxy.add_metric(["header"], stats["refused_proxy_header"])
    yield proxy
    early = CounterMetricFamily(
        "smtpx_early_talkers",
        "Clients sent away (554) for talking before the greeting ([server] greeting_delay) "
        "or before a reply they must wait for ([server] reject_unauth_pipelining)",
        labels=["when"],
    )
    early.add_metric(["greeting"], stats[EARLY_TALKERS_GREETING])
    early.add_metric(["pipelining"], stats[EARLY_TALKERS_PIPELINING])
    yield early


# -- the application -----------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlPlane(ControlSite):
    """The operators' API for one :class:`~smtpx.mta.app.Mta`."""

    def __init__(
        self,
        mta: Mta,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        http: tuple[str, int] | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(socket_path=socket_path, http=http, token=token)
        self.mta = mta
        self.registry = CollectorRegistry(auto_describe=True)
        self._collector = _MtaCollector(mta)
        self.registry.register(self._collector)
        self.latency = Histogram(
            "smtpx_delivery_latency_seconds",
            "From acceptance to full delivery",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
            registry=self.registry,
        )
        self._build()
        self._watching: Listening[SpoolEvent] | None = None

    def _build(self) -> None:
        app = self.app
        app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/metrics", self.metrics),
                web.get("/v1/spool/messages", self.list_messages),
                web.get("/v1/spool/count", self.count),
                web.get("/v1/spool/messages/{id}", self.show),
                web.post("/v1/spool/freeze", self.freeze),
                web.post("/v1/spool/send", self.send),
                web.post("/v1/spool/remove", self.remove),
                web.post("/v1/spool/recover", self.recover),
                web.post("/v1/spool/quarantine", self.quarantine),
                web.post("/v1/spool/purge", self.purge),
                web.get("/v1/spool/events", self.events),
                web.get("/v1/cache", self.cache),
                web.get("/v1/server", self.server),
                web.post("/v1/tls/reload", self.reload_tls),
                web.post("/v1/server/serve", self.serve),
                *observe.routes(self, _ping),
            ]
        )
        mount_plugin(app, self.mta.server.plugin.control_routes())
        console.install(app, self)  # the web console (/console/): smtpx.mta.console

    # -- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._watching = self.mta.spool.events.listen(self._delivered)
        await super().start()

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.close()
            self._watching = None
        await super().close()

    def _delivered(self, event: SpoolEvent) -> None:
        """The delivery latency histogram, fed as each delivery is published."""
        if event.kind is EventKind.DELIVERED and event.spool_date is not None:
            self.latency.observe(max(0.0, event.time - event.spool_date))

    def error_reply(self, exc: Exception) -> web.Response | None:
        if isinstance(exc, SpoolError):
            return _error(404 if "not found" in str(exc) else 409, str(exc))
        return super().error_reply(exc)

    # -- handlers -------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        # "serving": false while a worker waits for its supervisor's word (alive, but not
        # accepting yet): the supervisor's /healthz is ok only once every worker serves.
        return web.json_response(
            {
                "status": "ok",
                "version": __version__,
                "uptime": time.time() - self.started,
                "serving": self.mta.server.serving,
            }
        )

    async def serve(self, request: web.Request) -> web.Response:
        await self.mta.serve()
        return web.json_response({"serving": True})

    async def metrics(self, request: web.Request) -> web.Response:
        self._collector.queue_counts = await self.mta.spool.count_by_status()
        body = generate_latest(self.registry)
        return web.Response(
            body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    async def _selected(self, request: web.Request) -> list[SpooledMessage]:
        try:
            chosen = MessageFilter.from_query(request.query)
        except (RecursionError, OverflowError) as exc:
            # How re.compile refuses "((((..." and "a{99999999999}": not with re.error.
            raise ValueError(f"a filter is too complex: {exc}") from None
        selector = read_selector(request.query.get("select"))
        selected = chosen.select(await self.mta.spool.list_all(), time.time())
        if selector is None:
            return selected
        chosen_ones = []
        for message in selected:
            fields = await self._fields(message, selector)
            if fields is not None and selector.matches(fields):
                chosen_ones.append(message)
        return chosen_ones

    async def _fields(self, message: SpooledMessage, selector: Selector) -> Fields | None:
        """What ``selector`` sees of ``message``: its stored header fields only if it
        looks at headers (its header section is then read, in a thread; not the body).
        None: it could not be read (delivered meanwhile, say), so it is not selected."""
        if not selector.uses_headers:
            return selector_fields(message)
        try:
            content = await self.mta.spool.store.head(message)  # damaged or not
        except OSError as exc:
            log.warning("select: cannot read %s: %s", message.id, exc)
            return None
        return selector_fields(message, content)

    async def list_messages(self, request: web.Request) -> web.Response:
        limit = list_limit(request.query.get("limit"))
        selected = await self._selected(request)
        shown = selected if limit is None else selected[:limit]
        return web.json_response(
            {"messages": [message_json(m) for m in shown], "total": len(selected)}
        )

    async def count(self, request: web.Request) -> web.Response:
        messages = await self._selected(request)
        by_status: dict[str, int] = {}
        for message in messages:
            by_status[message.status.value] = by_status.get(message.status.value, 0) + 1
        return web.json_response({"count": len(messages), "by_status": by_status})

    async def show(self, request: web.Request) -> web.StreamResponse:
        spool = self.mta.spool
        message = await spool.find(request.match_info["id"])
        if request.query.get("raw"):
            return await self._raw(request, message)
        # The header section, and a check of the body a chunk at a time: a large message
        # is never whole in memory to show its fields.
        head = await spool.store.head(message)
        damage = await spool.store.damage(message)
        headers = Envelope.create(sender="<>", recipients=[], message=head).headers()
        shown = {**message_json(message), "headers": [list(h) for h in headers]}
        if damage is not None:
            shown["damaged"] = str(damage)
        return web.json_response(shown)

    async def _raw(self, request: web.Request, message: SpooledMessage) -> web.StreamResponse:
        """The message as received, streamed a chunk at a time once its body checked
        sound; a damaged one whole, as stored, with what is wrong in a header."""
        store = self.mta.spool.store
        damage = await store.damage(message)
        if damage is not None:
            content, _ = await store.inspect(message)
            headers = {"X-Smtpx-Damaged": damage.problem}
            return web.Response(body=content, content_type="message/rfc822", headers=headers)
        response = web.StreamResponse(headers={"Content-Type": "message/rfc822"})
        async with store.content(message) as stored:
            await response.prepare(request)
            async for chunk in chunks_in_thread(stored):
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _ids(self, request: web.Request) -> tuple[list[str], dict[str, Any]]:
        try:
            body = await request.json()
        except RecursionError:  # "[[[[...": json gives up at the interpreter's depth
            raise ValueError("the request body is nested too deeply") from None
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        ids = body.get("ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids: a list of message ids")
        return ids, body

    async def freeze(self, request: web.Request) -> web.Response:
        ids, _ = await self._ids(request)
        await self.mta.spool.freeze(ids)
        return web.json_response({"frozen": ids})

    async def send(self, request: web.Request) -> web.Response:
        ids, body = await self._ids(request)
        intervals = [RetryInterval.parse(text) for text in body.get("retry_intervals", [])]
        if body.get("all") or body.get("frozen"):
            if ids:
                raise ValueError("give ids, or all, or frozen: not several")
            released = await self.mta.spool.send(
                None, frozen_only=bool(body.get("frozen")), retry_intervals=intervals
            )
        else:
            if not ids:
                raise ValueError("give ids, or all, or frozen")
            released = await self.mta.spool.send(ids, retry_intervals=intervals)
        return web.json_response({"released": released})

    async def remove(self, request: web.Request) -> web.Response:
        ids, _ = await self._ids(request)
        await self.mta.spool.remove(ids)
        return web.json_response({"removed": ids})

    async def recover(self, request: web.Request) -> web.Response:
        ids, body = await self._ids(request)
        source = body.get("from")
        if source not in ("removed", "quarantine"):
            raise ValueError('from: "removed" or "quarantine"')
        await self.mta.spool.recover(ids, from_=source)
        return web.json_response({"recovered": ids})

    async def quarantine(self, request: web.Request) -> web.Response:
        ids, body = await self._ids(request)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("reason: why the messages are held (text)")
        await self.mta.spool.quarantine_messages(ids, reason)
        return web.json_response({"quarantined": ids})

    async def purge(self, request: web.Request) -> web.Response:
        ids, _ = await self._ids(request)
        await self.mta.spool.purge(ids)
        return web.json_response({"purged": ids})

    async def events(self, request: web.Request) -> web.StreamResponse:
        ping = _ping(request.query.get("ping"))  # checked before the 200 goes out
        wanted = _EventFilter.from_query(request.query)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        with self.streams.streaming(), self.mta.spool.events.subscribe() as events:
            # Subscribed first, listed second: a message spooled meanwhile is in both
            # (a reader goes by id), none is in neither.
            listed = await self._listed(wanted) if request.query.get("existing") else []
            backlog = iter(listed)
            while True:
                line = next(backlog, None)
                if line is None:
                    try:
                        async with asyncio.timeout(ping):
                            event = await anext(events)
                    except TimeoutError:
                        event = SpoolEvent(time.time(), EventKind.PING)
                    if not wanted(event):
                        continue
                    line = _event_line(event)
                try:
                    await response.write(json.dumps(line).encode() + b"\n")
                except (ConnectionError, RuntimeError):
                    break
        return response

    async def _listed(self, wanted: _EventFilter) -> list[dict[str, Any]]:
        """The messages already in the wanted queue, as ``listed`` events, oldest first."""
        return [
            {"time": m.spool_date, "kind": "listed", "id": m.id, "detail": "", "queue": m.queue}
            for m in await self.mta.spool.list_all()
            if wanted.queue is None or m.queue == wanted.queue
        ]

    def cache_status(self) -> dict[str, Any]:
        cache = self.mta.spool.cache
        return {
            "open": cache.open_connections,
            "opened": cache.opened,
            "reused": cache.reused,
            "destinations": cache.status(),
        }

    async def cache(self, request: web.Request) -> web.Response:
        return web.json_response(self.cache_status())

    async def server(self, request: web.Request) -> web.Response:
        server = self.mta.server
        return web.json_response(
            {
                "version": __version__,
                "hostname": self.mta.config.hostname,
                "sessions": server.sessions,
                "stats": dict(server.stats),
                "spool": dict(self.mta.spool.stats),
                "listeners": [
                    {"name": listener.name or str(listener), "port": port}
                    for listener, port in zip(server.config.listeners, server.ports, strict=True)
                ],
            }
        )

    async def reload_tls(self, request: web.Request) -> web.Response:
        self.mta.reload_tls()
        return web.json_response({"reloaded": self.mta.server.tls_context is not None})


def _ping(text: str | None, name: str = "ping") -> float:
    """Seconds between pings: ``?ping=`` (or ``?{name}=``) within :data:`PING_RANGE`, or
    the default."""
    if text is None:
        return PING_SECONDS
    low, high = PING_RANGE
    try:
        ping = float(text)
    except ValueError:
        ping = math.nan
    if not low <= ping <= high:  # NaN fails too
        raise ValueError(f"{name}: a number of seconds from {low:g} to {high:g}, not {text[:20]!r}")
    return ping


def _event_line(event: SpoolEvent) -> dict[str, Any]:
    line: dict[str, Any] = {
        "time": event.time,
        "kind": event.kind.value,
        "id": event.id,
        "detail": event.detail,
    }
    queue = event.queue or _KIND_QUEUE.get(event.kind, "")
    if queue:
        line["queue"] = queue
    if event.node:
        line["node"] = event.node
    return line


# Where a message is after an event heard from another node (which says no queue).
_KIND_QUEUE = {
    EventKind.SPOOLED: "active",
    EventKind.PRESEND: "active",
    EventKind.DELAYED: "active",
    EventKind.DELAYED_RATE_LIMITED: "active",
    EventKind.UNFROZEN: "active",
    EventKind.FROZEN: "frozen",
    EventKind.RECOVERED: "frozen",
    EventKind.REMOVED: "removed",
    EventKind.QUARANTINED: "quarantine",
    EventKind.DELIVERED: "delivered",
}
_QUEUES = ("active", "frozen", "removed", "quarantine", "delivered")


class _EventFilter:
    """``?kind=spooled,frozen`` (any of these) and ``?queue=frozen`` (the message is in
    that queue after the event); pings always pass."""

    def __init__(self, kinds: frozenset[EventKind] | None, queue: str | None) -> None:
        self.kinds = kinds
        self.queue = queue

    @classmethod
    def from_query(cls, query: Any) -> _EventFilter:
        kinds = None
        if query.get("kind"):
            try:
                kinds = frozenset(EventKind(k.strip()) for k in query["kind"].split(","))
            except ValueError:
                names = ", ".join(k.value for k in EventKind if k is not EventKind.PING)
                raise ValueError(f"kind: one or more of {names}, with commas") from None
        queue = query.get("queue")
        if queue is not None and queue not in _QUEUES:
            raise ValueError(f"queue: one of {', '.join(_QUEUES)}")
        return cls(kinds, queue)

    def __call__(self, event: SpoolEvent) -> bool:
        if event.kind is EventKind.PING:
            return True
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        return self.queue is None or (event.queue or _KIND_QUEUE.get(event.kind)) == self.queue


_error = json_error

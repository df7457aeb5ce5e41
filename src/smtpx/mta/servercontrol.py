"""The control plane of a bare :class:`~smtpx.server.Server` (F33, async_smtp's built-in
RPC server): what a program that runs its own server, without the MTA, can serve::

    async with Server(MyPlugin(), config) as server, ServerControl(server, socket_path=P):
        ...

=====================================  ============================================
``GET  /healthz``                      ``{"status": "ok", "version", "uptime"}``
``GET  /metrics``                      Prometheus: messages, sessions, TLS, AUTH,
                                       per-client refusals, timeouts
``GET  /v1/server``                    sessions, counters, listeners and ports
``GET  /v1/errors``, ``/v1/server/envelopes``, ``/v1/process``: see
                                       :mod:`smtpx.mta.observe`
``*    /v1/plugin/...``                the plugin's own endpoints
                                       (:meth:`~smtpx.server.Plugin.control_routes`)
=====================================  ============================================

It listens as the MTA's does (:mod:`smtpx.mta.controlsite`): a unix socket (mode 0600)
and/or loopback TCP with a bearer token. The spool's endpoints come with a spool: the
MTA's control plane (:mod:`smtpx.mta.control`) has them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from smtpx._version import __version__
from smtpx.mta import observe
from smtpx.mta.control import _ping  # one reading of ?ping= for both planes
from smtpx.mta.controlsite import ControlSite, mount_plugin
from smtpx.server import Server

__all__ = ["ServerControl"]

_COUNTERS = {
    "smtpx_messages_received": ("Messages accepted (250 after DATA)", "messages"),
    "smtpx_sessions": ("SMTP sessions accepted", "sessions"),
    "smtpx_connections_refused": ("Connections refused (session caps)", "refused_connections"),
    "smtpx_plugin_errors": ("Plugin hooks that failed (answered 451 4.3.0)", "plugin_errors"),
}


class _ServerCollector(Collector):
    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterable[Any]:
        stats = self.server.stats
        for name, (text, key) in _COUNTERS.items():
            family = CounterMetricFamily(name, text)
            family.add_metric([], stats[key])
            yield family
        for name, text, ok, failed in (
            ("smtpx_tls_handshakes", "Server TLS handshakes", "tls_sessions", "tls_failures"),
            ("smtpx_auth_attempts", "AUTH attempts", "auth_successes", "auth_failures"),
        ):
            outcome = CounterMetricFamily(name, text, labels=["outcome"])
            outcome.add_metric(["ok"], stats[ok])
            outcome.add_metric(["failed"], stats[failed])
            yield outcome
        active = GaugeMetricFamily("smtpx_sessions_active", "SMTP sessions open now")
        active.add_metric([], self.server.sessions)
        yield active


class ServerControl(ControlSite):
    """The control plane of ``server``; an async context manager (start, then close)."""

    def __init__(
        self,
        server: Server,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        http: tuple[str, int] | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(socket_path=socket_path, http=http, token=token)
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ServerCollector(server))
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/metrics", self.metrics),
                web.get("/v1/server", self.status),
                *observe.server_routes(self, server, _ping),
            ]
        )
        mount_plugin(self.app, server.plugin.control_routes())

    async def __aenter__(self) -> ServerControl:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "version": __version__, "uptime": time.time() - self.started}
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def status(self, request: web.Request) -> web.Response:
        server = self.server
        return web.json_response(
            {
                "version": __version__,
                "sessions": server.sessions,
                "stats": dict(server.stats),
                "listeners": [
                    {"name": listener.name or str(listener), "port": port}
                    for listener, port in zip(server.config.listeners, server.ports, strict=True)
                ],
            }
        )

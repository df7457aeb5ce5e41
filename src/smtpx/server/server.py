"""The SMTP server: listeners, sessions, graceful close.

::

    server = Server(MyPlugin(), ServerConfig(listeners=[Listener(host="127.0.0.1", port=2525)]))
    async with server:
        print(server.ports)
        await server.serve_forever()

Each accepted connection becomes a :class:`~smtpx.server.session.SessionRunner` task. A
listener at its ``max_sessions``, or a client at its limits (``config.client_limits``:
sessions at once, connections a minute), gets ``421 4.7.0`` and the connection is closed.
:meth:`Server.close` stops listening, ends the sessions that wait for a command, lets the
others finish their transaction for ``close_timeout`` seconds, then ends the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import socket
import ssl
from collections import Counter
from typing import Any

from smtpx.io.accept import SharedListener
from smtpx.io.balance import SessionBalance
from smtpx.io.stream import Stream, TransportStream, server_protocol_factory
from smtpx.io.tasks import cancel_and_wait
from smtpx.protocol import replies
from smtpx.protocol.connection import Limits
from smtpx.protocol.replies import Reply
from smtpx.server.buffer import BufferBudget
from smtpx.server.config import Listener, ServerConfig
from smtpx.server.events import EnvelopeReceived, EventBus
from smtpx.server.limits import Admitted, ClientLimiter, Refused
from smtpx.server.plugin import Plugin
from smtpx.server.proxy import ProxyHeaderError, peer_allowed, unwrap
from smtpx.server.session import SessionRunner

__all__ = ["Server"]

log = logging.getLogger("smtpx.server")


class Server:
    """An SMTP server running ``plugin``; an async context manager (start, then close)."""

    def __init__(self, plugin: Plugin, config: ServerConfig | None = None) -> None:
        self.plugin = plugin
        self.config = config or ServerConfig()
        self.limits = Limits(
            max_command_line=self.config.max_command_line,
            max_text_line=self.config.max_text_line,
            max_message_size=self.config.max_message_size,
            max_recipients=self.config.max_recipients,
            bare_newlines=self.config.bare_newlines,
            require_helo=self.config.require_helo,
            addresses=self.config.addresses,
        )
        self.tls_context: ssl.SSLContext | None = self.config.ssl_context()
        self.events: EventBus[EnvelopeReceived] = EventBus()
        self.buffers = BufferBudget(self.config.max_buffered, self.config.max_spilled)
        self.stats: Counter[str] = Counter()
        self.closing = False
        self._servers: list[tuple[Listener, asyncio.Server | SharedListener]] = []
        # A worker's count of sessions, shared with the other workers (set before start():
        # its shared listeners take connections by it; smtpx.io.balance).
        self.balance: SessionBalance | None = None
        self._runners: dict[asyncio.Task[None], SessionRunner] = {}
        self._unwrapping: set[asyncio.Task[None]] = set()  # PROXY headers being read
        self._per_listener: Counter[str] = Counter()
        self.clients = ClientLimiter(self.config.client_limits, self.loop_time)
        self._ids = itertools.count(1)
        self._sweeper: asyncio.Task[None] | None = None
        self._id_prefix = f"{os.getpid():x}"
        # The loop, looked up at first use (and again once that loop has stopped): on
        # Python 3.11, asyncio.get_running_loop() is a getpid system call, and the time
        # is asked per read.
        self._loop: asyncio.AbstractEventLoop | None = None

    def new_session_id(self) -> str:
        return f"{self._id_prefix}.{next(self._ids)}"

    def loop_time(self) -> float:
        self._ensure_sweeper()
        return self._running_loop().time()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # Read timeouts are enforced by one periodic sweep, not a timer per read: on a busy
    # server that is tens of thousands of timers a second saved. Precision: the period.
    SWEEP_PERIOD = 1.0

    def _ensure_sweeper(self) -> None:
        sweeper = self._sweeper
        if sweeper is None or sweeper.done() or sweeper.cancelling():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        # Runs while sessions exist (or, for a listening server, until close()); started
        # again by the next session that needs it.
        while self._runners or (self._servers and not self.closing):
            await asyncio.sleep(self.SWEEP_PERIOD)
            now = loop.time()
            for runner in list(self._runners.values()):
                deadline = runner.deadline
                if deadline is not None and now >= deadline:
                    runner.stream.interrupt(TimeoutError())

    # -- life -----------------------------------------------------------------------------

    async def start(self, *, serving: bool = True) -> None:
        """Bind every listener; listen and accept now, or (``serving=False``) only from
        :meth:`start_serving` on: bound, not listening, the port refuses connections (with
        ``reuse_port``, the kernel gives them to the others that listen)."""
        loop = asyncio.get_running_loop()
        for listener in self.config.listeners:
            if (listener.implicit_tls or listener.require_tls) and self.tls_context is None:
                raise ValueError(f"listener {listener} wants TLS but no certificate is set")
            if listener.proxied and listener.implicit_tls:
                # The TLS handshake would start before the PROXY header could be read.
                raise ValueError(f"listener {listener}: PROXY headers need a plain listener")
            factory = server_protocol_factory(
                functools.partial(self._accept, listener=listener, key=str(listener)),
                tls=listener.implicit_tls,
            )
            if listener.fd is not None:  # shared with other processes (io.accept)
                shared = SharedListener(
                    socket.socket(fileno=os.dup(listener.fd)),
                    factory,
                    tls=self.tls_context if listener.implicit_tls else None,
                    takes_more=None if self.balance is None else self.balance.takes_more,
                )
                self._servers.append((listener, shared))
                if serving:
                    await shared.start_serving()
                    _log_listening(shared)
                continue
            server = await loop.create_server(
                factory,
                listener.host,
                listener.port,
                ssl=self.tls_context if listener.implicit_tls else None,
                reuse_address=True,
                reuse_port=self.config.reuse_port,
                backlog=1024,
                start_serving=serving,
            )
            self._servers.append((listener, server))
            if serving:
                _log_listening(server)
        if serving:
            self._beat()

    async def start_serving(self) -> None:
        """Listen and accept on every listener bound by ``start(serving=False)``."""
        for _, server in self._servers:
            if not server.is_serving():
                await server.start_serving()
                _log_listening(server)
        self._beat()

    def _beat(self) -> None:
        """A worker that serves says so to the others (smtpx.io.balance), from now on."""
        if self.balance is not None:
            self.balance.start_beating(asyncio.get_running_loop())

    @property
    def ports(self) -> list[int]:
        """The bound port of each listener, in configuration order (port 0 resolved)."""
        return [int(_sockets(server)[0].getsockname()[1]) for _, server in self._servers]

    @property
    def sessions(self) -> int:
        return len(self._runners)

    @property
    def serving(self) -> bool:
        """Every listener accepts (not bound only: see ``start(serving=False)``)."""
        return all(server.is_serving() for _, server in self._servers)

    async def serve_forever(self) -> None:
        await asyncio.gather(*(server.serve_forever() for _, server in self._servers))

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float | None = None) -> bool:
        """Stop accepting, end idle sessions with ``421``, give the busy ones up to
        ``timeout`` (default ``config.close_timeout``) to finish, then end them.

        Returns False if sessions had to be cut off.
        """
        self.closing = True
        for _, server in self._servers:
            server.close()
        for pending_header in list(self._unwrapping):
            pending_header.cancel()
        for runner in list(self._runners.values()):
            runner.interrupt()
        tasks = list(self._runners)
        clean = True
        if tasks:
            _, pending = await asyncio.wait(
                tasks, timeout=self.config.close_timeout if timeout is None else timeout
            )
            if pending:
                clean = False
                log.warning("close: cutting off %d sessions still busy", len(pending))
                await cancel_and_wait(pending)
        for _, server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
        return clean

    # -- connections ----------------------------------------------------------------------

    def limits_for(self, listener: Listener) -> Limits:
        """The protocol limits of a session on ``listener``: the server's, and the
        listener's TLS and AUTH requirements."""
        if not (listener.require_tls or listener.require_auth or listener.lmtp):
            return self.limits
        return dataclasses.replace(
            self.limits,
            require_tls=listener.require_tls,
            require_auth=listener.require_auth,
            lmtp=listener.lmtp,
        )

    async def serve_stream(self, stream: Stream, listener: str | Listener = "stream") -> None:
        """Run one session over any stream (an in-memory one in tests, say) until it
        ends. A :class:`Listener` given lends its name and its TLS and AUTH requirements;
        its session limit does not apply."""
        if isinstance(listener, str):
            runner = SessionRunner(self, stream, listener, self.limits)
        else:
            runner = SessionRunner(self, stream, str(listener), self.limits_for(listener))
        task = asyncio.current_task()
        assert task is not None
        self._runners[task] = runner
        try:
            await runner.run()
        finally:
            self._runners.pop(task, None)
            if not self._runners and not self._servers and self._sweeper is not None:
                # No session left and no listener to bring one: the sweeper is not kept
                # for its last second (a test's loop may close before it would end).
                self._sweeper.cancel()

    def _accept(self, stream: TransportStream, *, listener: Listener, key: str) -> None:
        """A new connection on ``listener`` (``key``: its name, made once per listener)."""
        limit = listener.max_sessions
        if self.closing or (limit is not None and self._per_listener[key] >= limit):
            reply = replies.shutting_down() if self.closing else replies.too_many_connections()
            _turn_away(stream, reply)
            self.stats["refused_connections"] += 1
            return
        if listener.proxied:
            self._accept_proxied(stream, listener, key)
            return
        self._start(stream, listener, key)

    def _start(self, stream: Stream, listener: Listener, key: str) -> None:
        """Admit the client (its limits) and run its session (``key``: the listener's
        name)."""
        peer = stream.peername()
        admitted = self.clients.admit(peer[0] if peer is not None else None)
        if isinstance(admitted, Refused):
            _turn_away(stream, _CLIENT_REFUSALS[admitted]())
            self.stats[f"refused_{admitted.value}"] += 1
            return
        self._per_listener[key] += 1
        if self.balance is not None:
            self.balance.change(1)
        runner = SessionRunner(self, stream, key, self.limits_for(listener))
        task = self._running_loop().create_task(runner.run())
        self._runners[task] = runner
        task.add_done_callback(functools.partial(self._done, listener=key, admitted=admitted))

    def _accept_proxied(self, stream: TransportStream, listener: Listener, key: str) -> None:
        """A proxied listener: the peer must be a configured proxy, and its PROXY header
        is read (the listener's slot held meanwhile) before the client's limits apply."""
        if not peer_allowed(stream.peername(), listener.proxy_from):
            _turn_away(stream, Reply.of(421, "Not a trusted proxy; closing connection", "4.7.0"))
            self.stats["refused_proxy_peer"] += 1
            return
        self._per_listener[key] += 1
        task = asyncio.get_running_loop().create_task(self._unwrap(stream, listener, key))
        self._unwrapping.add(task)
        task.add_done_callback(self._unwrapping.discard)

    async def _unwrap(self, stream: TransportStream, listener: Listener, key: str) -> None:
        try:
            proxied = await unwrap(stream, self.config.proxy_timeout)
        except (ProxyHeaderError, TimeoutError) as exc:
            log.info("listener %s: refused %s: %s", listener, _peer(stream), exc)
            _turn_away(stream, Reply.of(421, "Bad or missing PROXY header", "4.7.0"))
            self.stats["refused_proxy_header"] += 1
            return
        except (ConnectionError, OSError, asyncio.CancelledError):
            stream.close()
            return
        finally:
            self._per_listener[key] -= 1
        if self.closing:
            _turn_away(proxied, replies.shutting_down())
            return
        self._start(proxied, listener, key)

    def _done(self, task: asyncio.Task[None], *, listener: str, admitted: Admitted) -> None:
        self._runners.pop(task, None)
        self._per_listener[listener] -= 1
        if self.balance is not None:
            self.balance.change(-1)
        self.clients.release(admitted)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task failed", exc_info=task.exception())


_CLIENT_REFUSALS = {
    Refused.SESSIONS: replies.too_many_sessions_from_client,
    Refused.RATE: replies.connection_rate_exceeded,
}


def _turn_away(stream: Stream, reply: Reply) -> None:
    stream.write(reply.to_bytes())
    stream.close()


def _peer(stream: Stream) -> str:
    peer = stream.peername()
    return "an unknown peer" if peer is None else f"{peer[0]} port {peer[1]}"


def _log_listening(server: asyncio.Server | SharedListener) -> None:
    log.info("listening on %s", ", ".join(_where(s) for s in _sockets(server)))


def _sockets(server: asyncio.Server | SharedListener) -> list[Any]:
    """The server's sockets. uvloop's server gives a list where typeshed says a tuple,
    which the compiled build's check of the declared type refuses: read untyped."""
    return list(getattr(server, "sockets"))  # noqa: B009


def _where(sock: object) -> str:
    name = sock.getsockname()  # type: ignore[attr-defined]
    return f"[{name[0]}]:{name[1]}" if ":" in str(name[0]) else f"{name[0]}:{name[1]}"

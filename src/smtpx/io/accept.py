"""Serving a listening socket that other processes serve too, one connection at a time.

The workers of ``smtpx serve`` (``[server] workers = N``) used to listen each on a
socket of their own, bound with ``SO_REUSEPORT``: the kernel hashes every new connection
to one of them, busy or not, and it waits in that worker's queue, behind a worker that
is busy, stopped or restarting, while another may be free. Here every worker serves the
one socket their supervisor bound, as Postfix's ``smtpd`` processes share theirs: a
worker takes a connection only when its event loop comes round to it, so a busy worker
leaves the next connection to one that is free. (What that changed in messages a second
on a two-core machine is within the noise: docs/performance.md.)

:class:`SharedListener` takes at most one connection each time its loop finds the socket
readable, never a whole queue at once (as ``loop.create_server`` would: with kept
connections, the first worker to wake would take every connection of a burst and keep
them). It stands in for the :class:`asyncio.Server` that ``create_server`` returns, with
the part of its interface :class:`smtpx.server.Server` uses. Taking one at a time is not
enough for a burst of connections that stay open (the first worker to wake may still
take most of them): given ``takes_more`` (:class:`smtpx.io.balance.SessionBalance`),
a listener that has more than its share lets a connection wait :data:`DEFER` seconds
for another worker, then takes it if it is still there.

On uvloop the listener serves through uvloop's own server (accepting in C, no task per
connection: 5-6% more messages a second with a new connection each, measured). uvloop
takes every connection queued at once, but it asks for each one's protocol as it takes
it: the listener counts them there, and once it has more than its share it closes that
server after the pass (closing it during the pass would drop the connection being
taken), to open another after :data:`DEFER`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable

__all__ = ["DEFER", "RETRY_ACCEPT", "SharedListener"]

log = logging.getLogger("smtpx.server")

# After an error that may pass (out of file descriptors, of memory), the socket is left
# alone this long before taking connections again (asyncio's own accept loop waits 1 s).
RETRY_ACCEPT = 1.0
# How long a worker with more than its share of sessions leaves a connection to the others.
DEFER = 0.002

_Connected = tuple[asyncio.Transport, asyncio.BaseProtocol]

# The connection went before it was taken, or a signal came: nothing to report.
_PASSING = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR, errno.EPROTO)


class SharedListener:
    """Serve ``sock`` (bound, and shared with other processes) with
    ``protocol_factory``'s protocols, TLS from the first byte with ``tls``. The socket
    listens from :meth:`start_serving` on (whichever process asks first; again is
    harmless)."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        tls: ssl.SSLContext | None = None,
        tls_handshake_timeout: float | None = None,
        backlog: int = 1024,
        takes_more: Callable[[int], bool] | None = None,
    ) -> None:
        sock.setblocking(False)
        self._backlog = backlog
        self._takes_more = takes_more
        self._sock = sock
        self._factory = protocol_factory
        self._tls = tls
        self._handshake_timeout = tls_handshake_timeout if tls is not None else None
        self._loop = asyncio.get_running_loop()
        self._serving = False  # started and not closed (what is_serving() says)
        self._reading = False  # taking connections now (not during a pause or a deferral)
        self._closed = False
        self._connecting: set[asyncio.Task[_Connected]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        # uvloop's server (see the module's text): the one open now, the one being
        # opened, the connections taken since the loop's last pass.
        self._native = type(self._loop).__module__.startswith("uvloop")
        self._server: asyncio.Server | None = None
        self._opening: asyncio.Task[None] | None = None
        self._taken_now = 0

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else (self._sock,)

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._serving or self._closed:
            return
        self._sock.listen(self._backlog)
        self._serving = True
        self._start_taking()

    async def serve_forever(self) -> None:
        await self.start_serving()
        await asyncio.shield(self._done)

    def close(self) -> None:
        """Stop taking connections and close this process's socket (the others keep
        theirs); the connections taken so far go on."""
        if self._closed:
            return
        self._closed = True
        self._serving = False
        self._stop_taking()
        if self._retry is not None:
            self._retry.cancel()
        self._sock.close()
        if not self._done.done():
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        """Once closed: the connections still being set up (a TLS handshake, which may
        take up to its timeout) are cut off, and waited for."""
        if not self._closed:
            await asyncio.shield(self._done)
        pending = set(self._connecting)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def _start_taking(self) -> None:
        if not self._serving or self._reading:
            return
        self._reading = True
        if not self._native:
            self._loop.add_reader(self._sock.fileno(), self._take)
        elif self._opening is None:
            self._opening = self._loop.create_task(self._open_native())

    def _stop_taking(self) -> None:
        if not self._reading:
            return
        self._reading = False
        if not self._native:
            self._loop.remove_reader(self._sock.fileno())
            return
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        if self._server is not None:
            self._server.close()  # (its copy of the socket: ours stays open)
            self._server = None

    async def _open_native(self) -> None:
        copy = socket.socket(fileno=os.dup(self._sock.fileno()))  # (the server closes it)
        try:
            server = await self._loop.create_server(
                self._counted,
                sock=copy,
                backlog=self._backlog,
                ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except BaseException as exc:
            copy.close()  # (not the server's: there is none)
            if not isinstance(exc, OSError):
                raise  # (cancelled by _stop_taking, which let go of this task)
            self._opening = None
            self._pause(exc)
            return
        self._opening = None
        if self._reading:
            self._server = server
        else:  # stopped meanwhile
            server.close()

    def _counted(self) -> asyncio.BaseProtocol:
        """uvloop's server took a connection: its protocol; and no more connections
        taken now when this listener has more than its share."""
        protocol = self._factory()
        if self._takes_more is not None:
            if not self._taken_now:
                self._loop.call_soon(self._after_pass)
            self._taken_now += 1
        return protocol

    def _after_pass(self) -> None:
        """After uvloop's server took connections: leave the next ones to the others a
        moment if this listener has more than its share now. (Its sessions count the
        connections taken from here on.)"""
        taken, self._taken_now = self._taken_now, 0
        assert self._takes_more is not None
        if self._reading and not self._takes_more(taken):
            self._stop_taking()
            self._retry = self._loop.call_later(DEFER, self._resume)

    def _take(self, *, insist: bool = False) -> None:
        """The socket is readable: take one connection (another process may have), or
        leave it to the others a moment when this one has more than its share."""
        if not insist and self._takes_more is not None and not self._takes_more(0):
            self._stop_taking()
            self._retry = self._loop.call_later(DEFER, self._after_deferring)
            return
        try:
            conn, _ = self._sock.accept()
        except OSError as exc:
            if exc.errno not in _PASSING:
                self._pause(exc)
            return
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # gone already
            conn.close()
            return
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(
                self._factory,
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        )
        self._connecting.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[_Connected]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A client gone during the set-up or the TLS handshake: as create_server's.
            log.debug("connection not set up: %s", task.exception())

    def _pause(self, exc: OSError) -> None:
        log.error(
            "listener %s: cannot accept (%s); again in %g s", _name(self._sock), exc, RETRY_ACCEPT
        )
        self._stop_taking()
        self._retry = self._loop.call_later(RETRY_ACCEPT, self._resume)

    def _resume(self) -> None:
        self._retry = None
        self._start_taking()

    def _after_deferring(self) -> None:
        """Take the connection left to the others if nobody did (nobody may be able to:
        a worker stopped or stuck), then go on as usual."""
        self._resume()
        if self._reading:
            self._take(insist=True)


def _name(sock: socket.socket) -> str:
    try:
        return str(sock.getsockname())
    except OSError:
        return "?"

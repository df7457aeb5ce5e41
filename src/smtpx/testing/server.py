"""A scriptable SMTP server for testing clients, over any stream or on a TCP port.

It runs a :class:`~smtpx.testing.transcript.Handler` (override its methods to script
replies) on top of :class:`~smtpx.protocol.ServerConnection`. Faults for client tests:

* a handler method returning None leaves the command unanswered (a stalled server);
* raising :class:`Hangup` closes the connection on the spot (say, in the middle of DATA).

This is a test tool, not the production server (:mod:`smtpx.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from smtpx.errors import RemoteProtocolError
from smtpx.io.stream import Stream, TransportStream, server_protocol_factory
from smtpx.protocol.commands import StartTls
from smtpx.protocol.connection import Limits, ServerConnection
from smtpx.protocol.events import NEED_DATA, PAUSED, ConnectionClosed
from smtpx.protocol.states import State
from smtpx.testing.transcript import Handler

__all__ = ["Hangup", "ScriptedServer", "serve_stream"]


class Hangup(Exception):
    """Raised by a handler method: the server drops the connection without a word."""


async def serve_stream(
    stream: Stream,
    handler: Handler,
    *,
    limits: Limits | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> None:
    """Run one session over ``stream`` until QUIT, EOF or a hang-up."""
    conn = ServerConnection(limits)
    conn.send(handler.greeting)
    try:
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                conn.send(handler.protocol_error(exc))
                continue
            if event is NEED_DATA or event is PAUSED:
                out = conn.data_to_send()
                if out:
                    stream.write(out)
                    await stream.drain()
                data = await stream.read()
                conn.receive_data(data)
                if not data and event is PAUSED:
                    return
                continue
            if isinstance(event, ConnectionClosed):
                out = conn.data_to_send()
                if out and conn.state is State.CLOSED:
                    stream.write(out)
                    await stream.drain()
                return
            reply = handler.handle(event)
            if reply is None:
                continue
            conn.send(reply)
            if isinstance(event, StartTls) and reply.code == 220:
                stream.write(conn.data_to_send())
                await stream.drain()
                if tls_context is None:
                    raise RuntimeError("STARTTLS accepted but the server has no TLS context")
                await stream.start_tls(tls_context, server_side=True, timeout=10)
    except (Hangup, ConnectionError):
        pass
    finally:
        stream.close()


@dataclass
class ScriptedServer:
    """A TCP server on 127.0.0.1 (port chosen by the OS) running one handler per session.

    ``async with ScriptedServer(MyHandler) as server:`` then connect to ``server.port``
    (give ``port`` to listen on a chosen one).
    ``handlers`` holds each session's handler, for looking at what was received.
    """

    handler_factory: Callable[[], Handler] = Handler
    tls_context: ssl.SSLContext | None = None
    implicit_tls: bool = False
    limits: Limits | None = None
    handlers: list[Handler] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> ScriptedServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            server_protocol_factory(self._on_stream, tls=self.implicit_tls),
            "127.0.0.1",
            self.port,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _on_stream(self, stream: TransportStream) -> None:
        handler = self.handler_factory()
        self.handlers.append(handler)
        task = asyncio.get_running_loop().create_task(
            serve_stream(stream, handler, limits=self.limits, tls_context=self.tls_context)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()

    def messages(self) -> list[bytes]:
        return [m.data for h in self.handlers for m in h.messages]


@contextlib.asynccontextmanager
async def scripted_server(
    handler_factory: Callable[[], Handler] = Handler, **options: object
) -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer(handler_factory, **options) as server:  # type: ignore[arg-type]
        yield server

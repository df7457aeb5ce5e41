"""Shared helpers for client tests: in-memory sessions with a transcript."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from smtpx.auth import Credentials
from smtpx.client import Client, ClientConfig, connect
from smtpx.errors import ReplyTimeout
from smtpx.io import memory_pair
from smtpx.testing import Handler, Transcript, serve_stream
from smtpx.testing.clock import run_virtual

T = TypeVar("T")

# MemoryStream emulates TLS, so the server needs a context object but never uses it.
EMULATED_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


@dataclass
class Run:
    """What happened in one in-memory client session."""

    transcript: Transcript = field(default_factory=Transcript)
    error: BaseException | None = None

    def text(self) -> str:
        self.transcript.flush()
        return self.transcript.text()

    def lines(self) -> list[str]:
        self.transcript.flush()
        return list(self.transcript.lines)


async def in_memory(
    handler: Handler,
    use: Callable[[Client], Awaitable[T]] | None = None,
    *,
    config: ClientConfig | None = None,
    credentials: Credentials | None = None,
    host: str = "mx.test",
) -> Run:
    """Connect a client to ``handler`` through memory, run ``use``, QUIT; record it all."""
    run = Run()
    client_stream, server_stream = memory_pair(tap=run.transcript.record)
    server = asyncio.get_running_loop().create_task(
        serve_stream(server_stream, handler, tls_context=EMULATED_TLS)
    )
    try:
        async with connect(
            host,
            25,
            config=config or ClientConfig.for_testing(),
            credentials=credentials,
            stream=client_stream,
        ) as client:
            if use is not None:
                await use(client)
    except Exception as exc:
        run.error = exc
    await asyncio.wait_for(server, 5)
    return run


class Trickling(asyncio.Protocol):
    """A tarpit: its greeting comes an octet every ``every`` seconds (then it reads
    nothing). For a virtual clock."""

    def __init__(self, every: float, greeting: bytes = b"220 tarpit.example ESMTP\r\n") -> None:
        self.every = every
        self.left = greeting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._next()

    def _next(self) -> None:
        if self.left and not self.transport.is_closing():
            self.transport.write(self.left[:1])
            self.left = self.left[1:]
            asyncio.get_running_loop().call_later(self.every, self._next)


def against_peer(
    peer: Callable[[], asyncio.BaseProtocol], attempt: Callable[[int], Awaitable[object]]
) -> tuple[BaseException | None, float]:
    """On a virtual clock, ``attempt(port)`` against a misbehaving ``peer`` (a protocol
    factory) listening on 127.0.0.1: the timeout it ended with (None when it ended
    otherwise) and the time it took."""

    async def scenario() -> tuple[BaseException | None, float]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(peer, "127.0.0.1", 0)
        started = loop.time()
        error: BaseException | None = None
        try:
            await attempt(server.sockets[0].getsockname()[1])
        except (ReplyTimeout, TimeoutError) as exc:
            error = exc
        server.close()
        return error, loop.time() - started

    return run_virtual(scenario())

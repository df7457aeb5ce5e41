"""An in-memory network of scripted SMTP servers, for testing code that delivers mail.

:class:`MemoryNetwork` is an opener for :class:`~smtpx.client.ConnectionCache` (and so for
the spool): connecting to ``host:port`` starts a session with a fresh
:class:`~smtpx.testing.Handler` from the factory registered for that host, over
in-memory streams. Hosts can be marked down. It records every session, what each server
received, and the most sessions open at once per host.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from smtpx.auth import Credentials
from smtpx.client import Client, ClientConfig, connect
from smtpx.envelope import HostPort
from smtpx.io.stream import memory_pair
from smtpx.testing.server import serve_stream
from smtpx.testing.transcript import Handler, ReceivedMessage

__all__ = ["MemoryNetwork"]


@dataclass
class MemoryNetwork:
    handlers: dict[str, Callable[[], Handler]] = field(default_factory=dict)
    default: Callable[[], Handler] | None = Handler
    down: set[str] = field(default_factory=set)
    config: ClientConfig = field(default_factory=ClientConfig.for_testing)
    sessions: dict[str, list[Handler]] = field(default_factory=dict)
    open_now: Counter[str] = field(default_factory=Counter)
    most_open: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # connections refused (down)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __call__(self, address: HostPort, credentials: Credentials | None) -> Client:
        host = address.host
        if host in self.down:
            self.refused[host] += 1
            raise ConnectionRefusedError(f"{address}: connection refused (down)")
        factory = self.handlers.get(host, self.default)
        if factory is None:
            raise ConnectionRefusedError(f"{address}: no such host in the memory network")
        client_end, server_end = memory_pair()
        handler = factory()
        self.sessions.setdefault(host, []).append(handler)
        self.open_now[host] += 1
        self.most_open[host] = max(self.most_open[host], self.open_now[host])

        async def serve() -> None:
            try:
                await serve_stream(server_end, handler)
            finally:
                self.open_now[host] -= 1

        self.tasks.append(asyncio.get_running_loop().create_task(serve()))
        return await connect(
            host, address.port, config=self.config, credentials=credentials, stream=client_end
        )

    def received(self, host: str) -> list[ReceivedMessage]:
        return [m for handler in self.sessions.get(host, []) for m in handler.messages]

"""Helpers for server tests: a raw client over memory, and a plugin that keeps messages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from smtpx.envelope import Envelope
from smtpx.io import MemoryStream, memory_pair
from smtpx.protocol import Reply, ReplyParser
from smtpx.server import Plugin, Server, ServerConfig, Session, Transaction


class Keep(Plugin):
    """Accepts everything and keeps what it gets; counts hook calls."""

    hostname = "mx.test"

    def __init__(self) -> None:
        self.kept: list[Envelope] = []
        self.calls: list[str] = []

    async def connect(self, session: Session) -> None:
        self.calls.append("connect")

    async def disconnect(self, session: Session) -> None:
        self.calls.append("disconnect")

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        self.kept.append(envelope.in_memory())
        return f"Ok: kept {len(self.kept)}"


@dataclass
class Raw:
    """A hand-driven client on one end of an in-memory connection to a server session."""

    stream: MemoryStream
    task: asyncio.Task[None]
    parser: ReplyParser = field(default_factory=ReplyParser)

    async def replies(self, count: int) -> list[Reply]:
        got: list[Reply] = []
        while len(got) < count:
            reply = self.parser.next_reply()
            if reply is not None:
                got.append(reply)
                continue
            data = await self.stream.read()
            if not data:
                break
            self.parser.feed(data)
        return got

    async def send(self, data: bytes, expect: int = 1) -> list[Reply]:
        self.stream.write(data)
        return await self.replies(expect)

    async def codes(self, data: bytes, expect: int = 1) -> list[int]:
        return [r.code for r in await self.send(data, expect)]

    async def closed(self) -> bool:
        """True once the server has closed its end (after any last replies)."""
        while True:
            data = await self.stream.read()
            if not data:
                return True
            self.parser.feed(data)

    async def finish(self) -> None:
        self.stream.close()
        await asyncio.wait_for(self.task, 5)


async def raw_session(server: Server) -> Raw:
    """Start a session with ``server`` over memory; the greeting is read already."""
    client, server_end = memory_pair()
    task = asyncio.get_running_loop().create_task(server.serve_stream(server_end))
    raw = Raw(client, task)
    (greeting,) = await raw.replies(1)
    assert greeting.code == 220, greeting
    return raw


def server(plugin: Plugin | None = None, **config: object) -> Server:
    return Server(plugin or Keep(), ServerConfig(**config))  # type: ignore[arg-type]

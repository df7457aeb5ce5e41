"""A scripted milter for tests: answers each command from a script, records what it got."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from smtpx.mta.milter import protocol as wire

HANG = b"<hang>"  # a script entry: never answer
CONTINUE = wire.command(b"c")
ACCEPT = wire.command(b"a")
REJECT = wire.command(b"r")
TEMPFAIL = wire.command(b"t")
DISCARD = wire.command(b"d")
SKIP = wire.command(b"s")
PROGRESS = wire.command(b"p")


def reply(code: bytes, *strings: str, index: int | None = None, data: bytes = b"") -> bytes:
    """A reply packet: strings NUL-terminated, after an index when given."""
    head = b"" if index is None else struct.pack(">I", index)
    return wire.command(code, head + b"".join(s.encode() + b"\0" for s in strings) + data)


@dataclass
class FakeMilter:
    """``script`` maps a command code to the answers to its successive occurrences
    (each a list of packets, or ``[HANG]``); unscripted commands get CONTINUE.
    ``received`` holds every (code, data) packet, ``macros`` command code -> dict."""

    actions: int = 0x1FF
    protocol: int = 0
    macro_lists: Mapping[int, str] = field(default_factory=dict)
    script: dict[bytes, list[Sequence[bytes]]] = field(default_factory=dict)
    pauses: dict[bytes, float] = field(default_factory=dict)  # seconds before each packet
    received: list[tuple[bytes, bytes]] = field(default_factory=list)
    macros: dict[bytes, dict[str, str]] = field(default_factory=dict)
    sessions: int = 0

    def codes(self) -> bytes:
        return b"".join(code for code, _ in self.received if code != b"D")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        decoder = wire.Decoder()
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                for code, payload in decoder.feed(data):
                    if not await self._answer(code, payload, writer):
                        return
        writer.close()

    async def _answer(self, code: bytes, payload: bytes, writer: asyncio.StreamWriter) -> bool:
        self.received.append((code, payload))
        if code == b"O":
            extra = b"".join(
                struct.pack(">I", stage) + names.encode() + b"\0"
                for stage, names in self.macro_lists.items()
            )
            data = struct.pack(">III", 6, self.actions, self.protocol) + extra
            writer.write(wire.command(b"O", data))
            return True
        if code == b"D":
            parts = payload[1:].split(b"\0")
            pairs = dict(zip(parts[::2], parts[1::2], strict=False))
            self.macros[payload[:1]] = {k.decode(): v.decode() for k, v in pairs.items()}
            return True
        if code == b"Q":
            writer.close()
            return False
        if code == b"A" or self._no_reply(code):
            return True
        queue = self.script.get(code)
        packets = queue.pop(0) if queue else [CONTINUE]
        if HANG in packets:
            return True
        for packet in packets:
            if code in self.pauses:
                await asyncio.sleep(self.pauses[code])
            writer.write(packet)
            await writer.drain()
        return True

    def _no_reply(self, code: bytes) -> bool:
        for stage in wire.STAGES.values():
            if stage.code == code:
                return bool(self.protocol & stage.no_reply)
        return False


@contextlib.asynccontextmanager
async def serving(milter: FakeMilter) -> AsyncIterator[str]:
    """The milter on 127.0.0.1, a free port; yields its ``inet:`` address."""
    server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"inet:127.0.0.1:{port}"

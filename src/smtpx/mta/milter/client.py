"""One milter connection (asyncio): open it, negotiate, send a stage, read the answer.

Addresses are Postfix's: ``inet:host:port`` (``inet6:`` too; IPv6 hosts in brackets) or
``unix:/path``. Every wait has its limit: ``connect_timeout`` for the connection and
the negotiation, ``command_timeout`` for CONNECT, HELO, MAIL, RCPT and DATA,
``content_timeout`` for the header, the body and the end of the message (each PROGRESS
reply starts it again). Any failure raises :class:`MilterUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from smtpx.errors import SMTPXError
from smtpx.mta.milter import protocol as wire
from smtpx.mta.milter.protocol import MilterProtocolError, Modification, Negotiated, Verdict

__all__ = ["Answer", "MilterConnection", "MilterUnavailable", "Opener", "open_address"]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Streams]]


class MilterUnavailable(SMTPXError):
    """The milter could not be reached, timed out, or broke the protocol."""


def open_address(address: str) -> Opener:
    """An opener for ``inet:host:port``, ``inet6:[host]:port`` or ``unix:/path``."""
    kind, _, where = address.partition(":")
    if kind == "unix":
        return lambda: asyncio.open_unix_connection(where)
    host, _, port = where.rpartition(":")
    host = host.strip("[]")
    return lambda: asyncio.open_connection(host, int(port))


@dataclass(frozen=True, slots=True)
class Answer:
    """The milter's answer to a stage: its verdict (None when it sends no reply), the
    text of a REPLYCODE, and at the end of the message its changes."""

    verdict: Verdict | None
    reply: str | None = None
    changes: tuple[Modification, ...] = ()


CONTINUE = Answer(Verdict.CONTINUE)
NO_REPLY = Answer(None)


class MilterConnection:
    """An open, negotiated connection."""

    def __init__(self, streams: Streams, negotiated: Negotiated, timeouts: tuple[float, float]):
        self.reader, self.writer = streams
        self.negotiated = negotiated
        self.command_timeout, self.content_timeout = timeouts
        self._decoder = wire.Decoder()
        self._packets: list[tuple[bytes, bytes]] = []

    @classmethod
    async def open(
        cls, opener: Opener, connect_timeout: float, timeouts: tuple[float, float]
    ) -> MilterConnection:
        """Connect and negotiate (:class:`MilterUnavailable` when it fails)."""
        try:
            async with asyncio.timeout(connect_timeout):
                streams = await opener()
        except (OSError, TimeoutError, ValueError) as exc:
            raise MilterUnavailable(f"cannot connect: {exc or 'timed out'}") from None
        link = cls(streams, Negotiated(0, wire.Act(0), wire.Proto(0), {}), timeouts)
        try:
            await link._write(wire.optneg())
            code, data = await link._packet(connect_timeout)
            link.negotiated = wire.parse_optneg(code, data)
        except (MilterUnavailable, MilterProtocolError) as exc:
            await link.close()
            raise MilterUnavailable(str(exc)) from None
        return link

    async def stage(self, stage: str, packets: Iterable[bytes]) -> Answer:
        """Send a stage's packets (macros, then its command) and read the answer."""
        await self._write(b"".join(packets))  # the macros and the command: one send
        if not self.negotiated.replies(stage):
            return NO_REPLY
        return await self._answer(stage)

    async def _answer(self, stage: str) -> Answer:
        content = wire.STAGES[stage].content
        timeout = self.content_timeout if content else self.command_timeout
        changes: list[Modification] = []
        while True:
            code, data = await self._packet(timeout)
            try:
                got = wire.parse_reply(code, data)
            except MilterProtocolError as exc:
                raise MilterUnavailable(str(exc)) from None
            if got is None:
                continue  # PROGRESS: the timer starts again
            if isinstance(got, str):
                return Answer(None, got, tuple(changes))
            if isinstance(got, Verdict):
                return Answer(got, None, tuple(changes))
            self._check_change(stage, got)
            changes.append(got)

    def _check_change(self, stage: str, change: Modification) -> None:
        if stage != "eom":
            raise MilterUnavailable(f"milter sent a change ({change.kind!r}) at {stage}")
        if not self.negotiated.actions & wire.MOD_ACTIONS[change.kind]:
            raise MilterUnavailable(f"milter sent a change ({change.kind!r}) it did not ask for")

    async def abort(self) -> None:
        """SMFIC_ABORT: forget the message (no reply)."""
        await self._write(wire.command(b"A"))

    async def close(self) -> None:
        """SMFIC_QUIT, then close (errors ignored: the milter may be gone)."""
        with contextlib.suppress(OSError, MilterUnavailable):
            await self._write(wire.command(b"Q"))
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()

    async def _write(self, packet: bytes) -> None:
        try:
            self.writer.write(packet)
            async with asyncio.timeout(self.content_timeout):
                await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise MilterUnavailable(f"cannot write: {exc or 'timed out'}") from None

    async def _packet(self, timeout: float) -> tuple[bytes, bytes]:
        while not self._packets:
            try:
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(65536)
            except TimeoutError:
                raise MilterUnavailable(f"no answer in {timeout:g}s") from None
            except OSError as exc:
                raise MilterUnavailable(f"cannot read: {exc}") from None
            if not data:
                raise MilterUnavailable("the milter closed the connection")
            try:
                self._packets += self._decoder.feed(data)
            except MilterProtocolError as exc:
                raise MilterUnavailable(str(exc)) from None
        return self._packets.pop(0)

"""Local delivery over LMTP (RFC 2033): hand mail for the local domains to Dovecot, Cyrus
or any LMTP server, on a unix socket or a fixed ``host:port`` (no MX lookup).

:class:`LmtpAgent` is a :class:`~smtpx.spool.types.LocalAgent`: for each spooled message
it opens a session (greeting, ``LHLO``), pipelines MAIL, every RCPT and DATA (an LMTP
server must offer PIPELINING, RFC 2033 section 5), sends the content and reads one reply
per accepted recipient (section 4.2). Every recipient gets its own reply back, which the
spool settles on its own: 2xx delivered, 4xx tried again later (that recipient only),
5xx bounced. A server that cannot be reached, or breaks off, fails the attempt as a whole
(everything is tried again). The server itself adds ``Return-Path`` and
``Delivered-To``; the content goes as the spool holds it, read and sent a slice at a
time (a large message is never whole in memory; the reads of a stored body are made in
a worker thread). A body found damaged as it is read breaks the session off before the
final dot: nothing is delivered.

DSN parameters are not passed on: the spool sends the notices itself (``delivered``
for NOTIFY=SUCCESS). Mail whose addresses need SMTPUTF8 goes only to a server that
offers it (else ``553 5.6.7``); ``BODY=BINARYMIME`` content only if it fits 8bit MIME
(else ``554 5.6.3``), as with SMTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from smtpx.client.session import receive_response
from smtpx.content import CHUNK, Content, chunks_in_thread, chunks_of, read_with
from smtpx.envelope import HostPort
from smtpx.errors import ConnectionLost, ReplyTimeout, SessionError
from smtpx.io.resolve import connect_first
from smtpx.io.stream import Stream, open_unix
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.commands import Command, Data, Lhlo, Mail, Quit, Rcpt
from smtpx.protocol.connection import ClientConnection
from smtpx.protocol.data import EightBitCheck
from smtpx.protocol.events import DataChunk, EndOfData
from smtpx.protocol.params import MailParams
from smtpx.protocol.replies import Reply
from smtpx.spool.message import SpooledMessage

__all__ = ["LmtpAgent"]

Results = list[tuple[str, Reply]]
SLICE = CHUNK  # octets of content encoded and sent at a time


class LmtpAgent:
    """Delivers to the LMTP server at ``target`` (a unix socket's path, or host:port),
    greeting it as ``hostname``. ``timeout``: the longest wait for a reply (the final
    replies may take as long: the server delivers before it answers)."""

    reads_chunks = True  # takes content read a chunk at a time (ChunkReadingAgent)

    def __init__(
        self,
        target: HostPort | Path,
        hostname: str,
        *,
        timeout: float = 300.0,
        connect_timeout: float = 30.0,
    ) -> None:
        self.target = target
        self.hostname = hostname
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def __str__(self) -> str:
        return f"lmtp:{'unix:' if isinstance(self.target, Path) else ''}{self.target}"

    async def _connect(self) -> Stream:
        target = self.target
        if isinstance(target, Path):
            return await open_unix(str(target), timeout=self.connect_timeout)
        return await connect_first(target.host, target.port, timeout=self.connect_timeout)

    async def deliver(self, message: SpooledMessage, content: Content) -> Results:
        """One reply per remaining recipient of ``message``; raises (OSError, a
        :class:`~smtpx.errors.ClientError`, a damaged body's error) when the session
        fails as a whole."""
        # One pass first (MAIL FROM needs the size and the octets' kind): a message of
        # one slice comes back whole and is not read again.
        traits, whole = await read_with(_Traits.of, content)
        content = whole if whole is not None else content
        unsendable = _unsendable(message, traits)
        if unsendable is not None:
            return [(r, unsendable) for r in message.recipients]
        stream = await self._connect()
        session = _Session(stream, str(self), self.timeout)
        try:
            await session.open(self.hostname)
            results = await session.transaction(message, content, traits)
            await session.quit()
            return results
        finally:
            stream.close()


@dataclass(frozen=True, slots=True)
class _Traits:
    """What MAIL FROM needs to know of the content."""

    size: int
    ascii: bool
    fits_8bit: bool

    @classmethod
    def of(cls, content: Content) -> tuple[_Traits, bytes | None]:
        """The content's traits, and the content itself when it is one slice or less."""
        size, ascii_only, check = 0, True, EightBitCheck()
        first: list[bytes] = []
        for chunk in chunks_of(content, SLICE):
            size += len(chunk)
            ascii_only = ascii_only and chunk.isascii()
            check.feed(chunk)
            if len(first) < 2:
                first.append(chunk)
        whole = first[0] if len(first) == 1 else b"" if not first else None
        return cls(size, ascii_only, check.result()), whole


def _unsendable(message: SpooledMessage, traits: _Traits) -> Reply | None:
    params = MailParams.parse(message.sender_args)
    if params.body == "BINARYMIME" and not traits.fits_8bit:
        return Reply.of(554, "Binary content cannot go over LMTP DATA", "5.6.3")
    return None


class _Session:
    def __init__(self, stream: Stream, name: str, timeout: float) -> None:
        self.stream = stream
        self.name = name
        self.timeout = timeout
        self.conn = ClientConnection(lmtp=True)
        self.clock = asyncio.get_running_loop().time

    async def reply(self) -> Reply:
        """The next reply, whole within ``timeout`` (as the SMTP client's)."""
        response = await receive_response(
            self.conn, self.stream, self.timeout, self.name, self.clock
        )
        return response.reply

    async def send(self, *items: Command | DataChunk | EndOfData) -> None:
        for item in items:
            self.conn.send(item)
        self.stream.write(self.conn.data_to_send())
        try:
            await self.stream.drain(self.timeout)
        except TimeoutError:
            raise ReplyTimeout(f"{self.name} took no data for {self.timeout}s") from None

    async def open(self, hostname: str) -> None:
        greeting = await self.reply()
        if greeting.code != 220:
            raise SessionError(f"{self.name} greeted with {greeting}", greeting)
        await self.send(Lhlo(hostname))
        reply = await self.reply()
        if reply.code != 250:
            raise SessionError(f"{self.name} refused LHLO: {reply}", reply)

    def _mail(self, message: SpooledMessage, traits: _Traits) -> Mail | Reply:
        """MAIL FROM with what this server takes, or the reply when it cannot be sent."""
        ext = self.conn.extensions
        sender = Sender.parse(message.sender)
        addresses = [sender.address, *(Address.parse(r) for r in message.recipients)]
        utf8 = any(a is not None and a.is_utf8 for a in addresses)
        if utf8 and not ext.smtputf8:
            return Reply.of(553, f"{self.name} does not offer SMTPUTF8", "5.6.7")
        eight_bit = not traits.ascii and ext.eightbitmime
        return Mail(
            sender,
            MailParams(
                body="8BITMIME" if eight_bit else None,
                smtputf8=utf8,
                size=traits.size if ext.size is not None else None,
            ),
        )

    async def transaction(
        self, message: SpooledMessage, content: Content, traits: _Traits
    ) -> Results:
        recipients = list(message.recipients)
        mail = self._mail(message, traits)
        if isinstance(mail, Reply):
            return [(r, mail) for r in recipients]
        await self.send(mail, *(Rcpt(Address.parse(r)) for r in recipients), Data())
        mail_reply = await self.reply()
        outcome: dict[str, Reply] = {}
        accepted = []
        for recipient in recipients:
            reply = await self.reply()
            if reply.code < 300 and mail_reply.code < 300:
                accepted.append(recipient)
            else:
                outcome[recipient] = reply if mail_reply.code < 300 else mail_reply
        data_reply = await self.reply()
        if data_reply.code == 354:
            # A slice at a time: the dot-stuffed copy of a large message is never whole.
            # An error reading the content (a damaged body) ends the session here,
            # before the final dot: the server delivers nothing.
            async for chunk in chunks_in_thread(content, SLICE):
                await self.send(DataChunk(chunk))
            await self.send(EndOfData())
            finals = [await self.reply() for _ in accepted or [""]]  # one each, RCPT order
            outcome.update(zip(accepted, finals, strict=False))
        else:
            outcome.update(dict.fromkeys(accepted, data_reply))
        return [(r, outcome[r]) for r in recipients]

    async def quit(self) -> None:
        with contextlib.suppress(OSError, ConnectionLost, ReplyTimeout):
            await self.send(Quit())
            await self.reply()

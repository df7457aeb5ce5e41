"""One SMTP client session: connect, greet, STARTTLS, AUTH, send envelopes, QUIT.

::

    async with connect("mx.example.org", 25) as client:
        status = await client.send(envelope)

The session drives a :class:`~smtpx.protocol.ClientConnection` over a
:class:`~smtpx.io.Stream`. With PIPELINING, MAIL, every RCPT and DATA go out in one
write (RFC 2920), so an envelope costs two round trips whatever its recipient count.

With CHUNKING (RFC 3030) the content goes with BDAT instead, as ``ClientConfig.chunking``
says: a small message with its MAIL and RCPTs in one write (one round trip), a large one
after the RCPT replies, as one ``BDAT n LAST`` when its size is known. ``BODY=BINARYMIME``
content goes only this way, byte for byte.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import IO, Any, TypeAlias

from smtpx.auth import Credentials, run_client_mechanism
from smtpx.client.chunking import PIECE, Piece, mapped, pieces, wire_pieces
from smtpx.client.config import ClientConfig, PeerTls, TlsConfig, TlsMode
from smtpx.client.status import (
    Accepted,
    EnvelopeStatus,
    RejectedAllRecipients,
    RejectedBody,
    RejectedSender,
    RejectedSenderAndRecipients,
    Unsendable,
)
from smtpx.envelope import Envelope, EnvelopeInfo
from smtpx.errors import (
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
    ReplyTimeout,
    SessionError,
    TlsRequiredError,
)
from smtpx.io.resolve import Resolver, connect_first
from smtpx.io.stream import Stream, file_size
from smtpx.protocol import replies
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.commands import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Helo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
)
from smtpx.protocol.connection import ClientConnection
from smtpx.protocol.data import LineEndings, dot_unstuff, fits_8bit
from smtpx.protocol.domains import domain_to_ascii
from smtpx.protocol.events import AuthResponse, DataChunk, EndOfData, Response
from smtpx.protocol.extensions import Extensions
from smtpx.protocol.params import RcptParams
from smtpx.protocol.replies import Reply
from smtpx.protocol.states import State

__all__ = ["Client", "WireFile", "connect"]

log = logging.getLogger("smtpx.client")

# Replies to EHLO after which HELO is worth a try (RFC 5321 4.1.4 / 3.2: old servers).
_EHLO_FALLBACK = frozenset({500, 502, 504, 550})
# Replies to an unadvertised STARTTLS that mean "not here": go on in plaintext.
_NO_STARTTLS = frozenset({500, 502, 504, 454})
_CHUNK = PIECE
# A run of a wire file at least this long goes with sendfile; shorter ones are copied.
_SENDFILE_MIN = 64 * 1024

_NO_RCPT_PARAMS = RcptParams()


@dataclass(frozen=True, slots=True)
class WireFile:
    """A message already encoded for DATA (CRLF line endings, dots doubled, no final
    ``.CRLF``), as the spool stores it: sent with ``sendfile``, without being read.

    ``offset`` and ``size`` select a part of the file (a body inside a journal segment);
    without ``size`` the rest of the file is sent.
    """

    path: str | os.PathLike[str]
    size: int | None = None
    offset: int = 0


Body: TypeAlias = bytes | IO[bytes] | os.PathLike[str] | AsyncIterable[bytes] | WireFile


def _read_part(path: str | os.PathLike[str], offset: int, size: int) -> bytes:
    """``size`` octets of the file at ``offset`` (fewer if it ends first): three system
    calls, where open(), seek() and read() make six and a file object."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Transaction:
    """An envelope whose commands are out: what its replies and content need."""

    mail: Mail
    recipients: list[Address]
    body: Body
    params: list[RcptParams] = field(default_factory=list)  # each recipient's, as sent
    reset: bool = False
    rejected: tuple[tuple[Address, Reply], ...] = ()
    chunked: bool = False  # the content goes with BDAT, not DATA
    binary: bool = False  # BODY=BINARYMIME: the content goes byte for byte
    inline: bool = False  # its BDAT LAST and content left with MAIL and the RCPTs
    lockstep: bool = False  # no PIPELINING: each BDAT chunk waits for its reply
    unread: int = 0  # BDAT commands out whose replies have not been read
    final: Reply | None = None  # the last reply read to a BDAT
    failure: Reply | None = None  # the first refusal of a BDAT chunk


def _split(item: Envelope | tuple[EnvelopeInfo, Body]) -> tuple[EnvelopeInfo, Body]:
    if isinstance(item, Envelope):
        return item.info, item.message
    return item


class Client:
    """An established SMTP session (greeted, TLS and AUTH done as configured).

    Made by :func:`connect`; also an async context manager that QUITs on exit.
    Peer information: ``greeting``, ``ehlo_reply``, ``extensions``, ``is_using_tls``,
    ``remote_address``, ``local_address``.
    """

    def __init__(
        self,
        stream: Stream,
        *,
        host: str,
        port: int,
        config: ClientConfig,
        tls: TlsConfig | None = None,
    ) -> None:
        self._stream = stream
        self._conn = ClientConnection()
        self.host = host
        self.port = port
        self.config = config
        self.tls_config = config.tls_for(host) if tls is None else tls
        self.greeting: Reply | None = None
        self._closed = False
        # The stream's loop, looked up at first use (on Python 3.11 each lookup is a
        # getpid system call).
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- peer information -----------------------------------------------------------

    @property
    def extensions(self) -> Extensions:
        return self._conn.extensions

    @property
    def ehlo_reply(self) -> Reply | None:
        return self._conn.ehlo_reply

    @property
    def is_using_tls(self) -> bool:
        return self._stream.tls

    @property
    def authenticated(self) -> bool:
        return self._conn.authenticated

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self._stream.peername()

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self._stream.sockname()

    @property
    def is_closed(self) -> bool:
        return self._closed or self._conn.state is State.CLOSED

    def supports(self, keyword: str) -> bool:
        return self._conn.extensions.supports(keyword)

    def __repr__(self) -> str:
        state = self._conn.state.value
        return f"<Client {self.host}:{self.port} tls={self.is_using_tls} state={state}>"

    # -- the wire ---------------------------------------------------------------------

    def _send(self, item: Command | DataChunk | EndOfData | AuthResponse) -> None:
        self._conn.send(item)

    async def _flush(self, timeout: float | None = None) -> None:
        data = self._conn.data_to_send()
        if data:
            timeout = timeout or self.config.command_timeout
            self._stream.write(data)
            try:
                await self._stream.drain(timeout)
            except TimeoutError:
                raise self._send_timed_out(timeout) from None
            except OSError as exc:
                raise self._send_lost(exc) from exc

    async def _sendfile(self, file: IO[bytes], offset: int, count: int | None) -> int:
        """Content straight from ``file``; the server must take each block within
        ``data_block_timeout`` (one that stops reading mid-message is given up on)."""
        timeout = self.config.data_block_timeout
        try:
            return await self._stream.sendfile(file, offset, count, timeout)
        except TimeoutError:
            raise self._send_timed_out(timeout) from None
        except OSError as exc:
            raise self._send_lost(exc) from exc

    # A send that fails ends the session: the connection is closed at once (a server that
    # takes nothing would take no QUIT either). Not a context manager: _flush is hot.

    def _send_timed_out(self, timeout: float) -> ReplyTimeout:
        self.close()
        return ReplyTimeout(f"timeout after {timeout}s sending to {self.host}")

    def _send_lost(self, exc: OSError) -> ConnectionLost:
        self.close()
        return ConnectionLost(f"{self.host} closed the connection: {exc}")

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    async def _receive(self, timeout: float) -> Response:
        try:
            return await receive_response(self._conn, self._stream, timeout, self.host, self._now)
        except (ReplyTimeout, ConnectionLost):
            # Out of step for good (a late reply would pass for the next one's): the
            # connection is closed, no QUIT.
            self.close()
            raise

    async def _command(self, command: Command, timeout: float | None = None) -> Reply:
        self._send(command)
        await self._flush()
        return (await self._receive(timeout or self.config.command_timeout)).reply

    async def command(self, command: Command) -> Reply:
        """Send one command and return its reply (a low-level escape hatch)."""
        return await self._command(command)

    # -- session setup ----------------------------------------------------------------

    async def _setup(self, credentials: Credentials | None) -> None:
        greeting = (await self._receive(self.config.greeting_timeout)).reply
        self.greeting = greeting
        if greeting.code != 220:
            raise SessionError(f"{self.host} greeted with {greeting}", greeting)
        await self._hello()
        await self._tls()
        if credentials is not None:
            await self._authenticate(credentials)

    async def _hello(self) -> None:
        name = self.config.helo_name
        reply = await self._command(Ehlo(name))
        if reply.code in _EHLO_FALLBACK:
            reply = await self._command(Helo(name))
        if reply.code != 250:
            raise SessionError(f"{self.host} refused EHLO/HELO: {reply}", reply)

    async def _tls(self) -> None:
        """STARTTLS as configured, then the configured check of the outcome, if any."""
        check = self.tls_config.check
        if check is None:
            await self._maybe_starttls()
            return
        try:
            await self._maybe_starttls()
        except (SessionError, TlsRequiredError) as exc:
            check.failed(self.peer_tls(), exc)
            raise
        check.verify(self.peer_tls())

    def peer_tls(self) -> PeerTls:
        """The session's TLS as a :class:`~smtpx.client.TlsCheck` sees it."""
        version = self._stream.tls_version() if self.is_using_tls else None
        return PeerTls(
            host=self.host,
            remote=self.remote_address,
            local=self.local_address,
            chain=self._stream.peer_certificates() if self.is_using_tls else (),
            version=version,
        )

    async def _maybe_starttls(self) -> None:
        tls = self.tls_config
        if self.is_using_tls or tls.mode in (TlsMode.NONE, TlsMode.IMPLICIT):
            return
        advertised = self._conn.extensions.starttls
        if tls.mode is TlsMode.IF_AVAILABLE and not advertised:
            return
        reply = await self._command(StartTls())
        if reply.code == 220:
            try:
                discarded = await self._stream.start_tls(
                    tls.context(),
                    server_hostname=domain_to_ascii(tls.server_name or self.host),
                    timeout=self.config.command_timeout,
                )
            except (OSError, ValueError) as exc:
                raise SessionError(f"TLS handshake with {self.host} failed: {exc}", None) from exc
            if discarded:
                raise RemoteProtocolError(
                    "data arrived with the 220 to STARTTLS (response injection)",
                    replies.local_error("STARTTLS response injection"),
                    fatal=True,
                )
            await self._hello()
        elif reply.code in _NO_STARTTLS and tls.mode is not TlsMode.IF_AVAILABLE:
            log.info("%s refused STARTTLS (%s); continuing in plaintext", self.host, reply)
        else:
            raise SessionError(f"{self.host} refused STARTTLS: {reply}", reply)
        if tls.mode is TlsMode.REQUIRED and not self.is_using_tls:
            raise TlsRequiredError(f"TLS required for {self.host}:{self.port} but not negotiated")

    async def _authenticate(self, credentials: Credentials) -> None:
        mechanism = credentials.select(self._conn.extensions.auth, tls=self.is_using_tls)
        if mechanism is None:
            return

        async def exchange(item: Auth | AuthResponse) -> Reply:
            self._send(item)
            await self._flush()
            return (await self._receive(self.config.command_timeout)).reply

        await run_client_mechanism(
            mechanism, exchange=exchange, log=log, remote=f"{self.host}:{self.port}"
        )

    # -- envelopes --------------------------------------------------------------------

    async def send(self, envelope: Envelope) -> EnvelopeStatus:
        """Send an :class:`~smtpx.envelope.Envelope` (its info and message)."""
        return await self.send_envelope(envelope.info, envelope.message)

    async def send_envelope(
        self, info: EnvelopeInfo, body: Body, *, size: int | None = None
    ) -> EnvelopeStatus:
        """Send one envelope; the outcome is a value (see :mod:`smtpx.client.status`).

        ``body`` is the message: ``bytes``, a binary file, a path, an async iterator of
        chunks (all encoded on the way), or a :class:`WireFile` (sent as is with DATA,
        without its dot-stuffing with BDAT). ``size`` (octets) is announced with SIZE
        when known; for bytes and files it is found.
        """
        if not (self.config.pipelining and self._conn.extensions.pipelining):
            return await self._lockstep(info, body, size)
        tx = self._begin(info, body, size)
        if isinstance(tx, Unsendable):
            return tx
        await self._flush()
        status = await self._answers(tx)
        if status is not None:
            return status
        await self._write_body(tx)
        await self._flush(self.config.data_block_timeout)
        return await self._final(tx)

    async def send_many(
        self, envelopes: Iterable[Envelope | tuple[EnvelopeInfo, Body]]
    ) -> AsyncIterator[EnvelopeStatus]:
        """Send several envelopes, yielding each outcome in order.

        With PIPELINING, each message's content and terminator leave in the same write as
        the next envelope's MAIL, RCPTs and DATA (RFC 2920 section 3.1 lets the content
        open a group), so a batch costs one round trip per message instead of two. A
        message sent with BDAT costs one round trip too: a small one leaves whole with its
        commands; after a large one, the final reply is read before the next envelope
        (after a refused chunk the server wants RSET, RFC 3030 section 2). If the session
        breaks, the exception comes after the outcomes already known.
        """
        if not (self.config.pipelining and self._conn.extensions.pipelining):
            for item in envelopes:
                info, body = _split(item)
                yield await self._lockstep(info, body, None)
            return
        pending: _Transaction | None = None  # content and "." queued, final reply unread
        for item in envelopes:
            info, body = _split(item)
            tx = self._begin(info, body, None)
            if isinstance(tx, Unsendable):
                if pending is not None:
                    await self._flush(self.config.data_block_timeout)
                    yield await self._final(pending)
                    pending = None
                yield tx
                continue
            await self._flush(self.config.data_block_timeout)
            if pending is not None:
                yield await self._final(pending)
                pending = None
            status = await self._answers(tx)
            if status is not None:
                yield status
                continue
            await self._write_body(tx)
            if tx.chunked:
                await self._flush(self.config.data_block_timeout)
                yield await self._final(tx)
            else:
                pending = tx
        if pending is not None:
            await self._flush(self.config.data_block_timeout)
            yield await self._final(pending)

    def _begin(self, info: EnvelopeInfo, body: Body, size: int | None) -> _Transaction | Unsendable:
        """Queue (not send) RSET if a transaction is open, MAIL, every RCPT, and DATA or
        (a small message with BDAT) the whole content in one ``BDAT n LAST``."""
        tx = self._transaction(info, body, size)
        if isinstance(tx, Unsendable):
            return tx
        content = self._small_content(tx) if tx.chunked else None  # read before queuing
        # A transaction left open by a refusal is closed first (RFC 5321 4.1.1.5). In DATA,
        # the terminator has been queued: the final reply will end that transaction.
        tx.reset = self._conn.state not in (State.READY, State.DATA)
        if tx.reset:
            self._send(Rset())
        self._send(tx.mail)
        for recipient, params in zip(tx.recipients, tx.params, strict=True):
            self._send(Rcpt(recipient, params))
        if not tx.chunked:
            self._send(Data())
        elif content is not None:
            # RFC 3030 section 4.2 lets BDAT be pipelined; a refused envelope gets its
            # chunk refused, so the content may leave before the RCPT replies are in.
            self._send_chunk(tx, content, last=True)
            tx.inline = True
        return tx

    def _small_content(self, tx: _Transaction) -> bytes | None:
        """The whole content for BDAT of a body of known size up to :data:`_CHUNK`."""
        body = tx.body
        if isinstance(body, bytes) and len(body) <= _CHUNK:
            content, tail = self._chunk_content(tx, body)
            return content + tail
        size = _size_of(body) if isinstance(body, WireFile) else None  # with its dots
        if isinstance(body, WireFile) and size is not None and size <= _CHUNK:
            with open(body.path, "rb") as file:
                file.seek(body.offset)
                wire = file.read(size)
            if len(wire) != size:
                raise OSError(f"{body.path}: ended {size - len(wire)} octets early")
            open_line = bool(wire) and wire[-2:] != b"\r\n" and not tx.binary
            return dot_unstuff(wire) + (b"\r\n" if open_line else b"")
        return None

    def _transaction(
        self, info: EnvelopeInfo, body: Body, size: int | None
    ) -> _Transaction | Unsendable:
        """MAIL and the recipients for ``info``, and DATA or BDAT (not queued)."""
        if size is None:
            size = _size_of(body)
        mail = self._mail_command(info, body, size)
        if isinstance(mail, Unsendable):
            return mail
        binary = mail.params.body == "BINARYMIME"
        return _Transaction(
            mail,
            [self._recipient(r, mail) for r in info.recipients],
            body,
            params=[self._rcpt_params(info, r) for r in info.recipients],
            chunked=binary or self._prefers_bdat(body),
            binary=binary,
        )

    def _prefers_bdat(self, body: Body) -> bool:
        """BDAT or DATA, per ``config.chunking``. "auto" takes BDAT except for a wire file
        over :data:`_CHUNK`: sendfile sends that as it is with DATA, while BDAT must look
        for its doubled dots first (about 1 ms per MB: docs/operators-guide.md)."""
        choice = self.config.chunking
        if not self._conn.extensions.chunking or choice is False:
            return False
        if choice is True:
            return True
        return not (isinstance(body, WireFile) and (_size_of(body) or 0) > _CHUNK)

    async def _replies_to_envelope(self, tx: _Transaction) -> Reply:
        """Read the replies to RSET (if sent), MAIL and the RCPTs; return MAIL's."""
        timeout = self.config.command_timeout
        if tx.reset:
            await self._receive(timeout)
        mail_reply = (await self._receive(timeout)).reply
        rejected: list[tuple[Address, Reply]] = []
        for recipient in tx.recipients:
            reply = (await self._receive(timeout)).reply
            if reply.code >= 300:
                rejected.append((recipient, reply))
        tx.rejected = tuple(rejected)
        return mail_reply

    async def _answers(self, tx: _Transaction) -> EnvelopeStatus | None:
        """Read the replies to :meth:`_begin`'s commands: the outcome if the envelope
        failed or (BDAT in the same write) is done, or None when the content is to be
        sent (after a 354, or before BDAT)."""
        mail_reply = await self._replies_to_envelope(tx)
        failed = mail_reply.code >= 300 or len(tx.rejected) == len(tx.recipients)
        if tx.inline:
            await self._read_chunk_replies(tx)
        elif not tx.chunked:
            data_reply = (await self._receive(self.config.data_start_timeout)).reply
            if data_reply.code == 354 and failed:
                # A server that says 354 with nobody to deliver to: end the content at once.
                self._send(EndOfData())
                await self._flush()
                await self._receive(self.config.final_reply_timeout)
            if data_reply.code != 354 and not failed:
                return RejectedSenderAndRecipients(data_reply, rejected=tx.rejected)
        if mail_reply.code >= 300:
            return RejectedSender(mail_reply, rejected=tx.rejected)
        if failed:
            return RejectedAllRecipients(tx.rejected[0][1], rejected=tx.rejected)
        if tx.inline:
            return self._outcome(tx)
        return None

    async def _final(self, tx: _Transaction) -> EnvelopeStatus:
        if tx.chunked:
            await self._read_chunk_replies(tx)
            return self._outcome(tx)
        final = (await self._receive(self.config.final_reply_timeout)).reply
        if final.code >= 300:
            return RejectedBody(final, rejected=tx.rejected)
        return Accepted(final, rejected=tx.rejected)

    def _outcome(self, tx: _Transaction) -> EnvelopeStatus:
        assert tx.final is not None
        if tx.failure is not None:
            return RejectedBody(tx.failure, rejected=tx.rejected)
        return Accepted(tx.final, rejected=tx.rejected)

    async def _lockstep(self, info: EnvelopeInfo, body: Body, size: int | None) -> EnvelopeStatus:
        """Without PIPELINING: one command, one reply."""
        tx = self._transaction(info, body, size)
        if isinstance(tx, Unsendable):
            return tx
        if self._conn.state is not State.READY:
            await self._command(Rset())
        reply = await self._command(tx.mail)
        if reply.code >= 300:
            return RejectedSender(reply)
        rejected: list[tuple[Address, Reply]] = []
        for recipient, params in zip(tx.recipients, tx.params, strict=True):
            reply = await self._command(Rcpt(recipient, params))
            if reply.code >= 300:
                rejected.append((recipient, reply))
        tx.rejected = tuple(rejected)
        if len(rejected) == len(tx.recipients):
            return RejectedAllRecipients(rejected[0][1], rejected=tx.rejected)
        if not tx.chunked:
            reply = await self._command(Data(), self.config.data_start_timeout)
            if reply.code != 354:
                return RejectedSenderAndRecipients(reply, rejected=tx.rejected)
        tx.lockstep = True
        await self._write_body(tx)
        await self._flush(self.config.data_block_timeout)
        return await self._final(tx)

    # -- content ----------------------------------------------------------------------

    async def _write_body(self, tx: _Transaction) -> None:
        if tx.chunked:
            await self._write_chunks(tx)
        else:
            await self._write_content(tx.body)

    async def _write_content(self, body: Body) -> None:
        """Queue the DATA content and the terminator; large or streamed content is
        written out (with backpressure) as it goes, small bytes wait for the next flush."""
        block = self.config.data_block_timeout
        if isinstance(body, bytes) and len(body) <= _CHUNK:
            self._send(DataChunk(body))
        elif isinstance(body, WireFile):
            await self._flush(block)
            if body.size is not None and body.size <= _CHUNK:
                # Small (most mail): read at once and written with the terminator in one
                # go; sendfile's set-up costs more than the copy (and uvloop has none).
                data = _read_part(body.path, body.offset, body.size)
                self._stream.write(data)
                sent, ends_with_crlf = len(data), not data or data.endswith(b"\r\n")
            else:
                with open(body.path, "rb") as file:
                    sent = await self._sendfile(file, body.offset, body.size)
                    ends_with_crlf = _ends_with_crlf(file, body.offset, sent)
            self._conn.send_encoded_content(sent, ends_with_crlf=ends_with_crlf)
        else:
            async for piece in pieces(body):
                self._send(DataChunk(piece))
                await self._flush(block)
        self._send(EndOfData())

    def _chunk_content(self, tx: _Transaction, body: bytes) -> tuple[bytes, bytes]:
        """The content of ``body`` for BDAT, and the CRLF that ends its last line if
        needed: as DATA would deliver it (CRLF line endings), or as is for BINARYMIME."""
        if tx.binary:
            return body, b""
        endings = LineEndings()
        return endings.encode(body), endings.end()

    def _send_chunk(self, tx: _Transaction, data: bytes, *, last: bool) -> None:
        self._send(Bdat(len(data), last=last))
        if data:
            self._send(DataChunk(data))
        tx.unread += 1

    async def _read_chunk_replies(self, tx: _Transaction) -> None:
        """Read the replies to the BDAT commands out; keep the last, and the first
        refusal."""
        while tx.unread:
            reply = (await self._receive(self.config.final_reply_timeout)).reply
            tx.unread -= 1
            tx.final = reply
            if reply.code >= 300 and tx.failure is None:
                tx.failure = reply

    async def _write_chunks(self, tx: _Transaction) -> None:
        body = tx.body
        if isinstance(body, WireFile):
            await self._send_wire_chunks(tx, body)
        elif isinstance(body, bytes):
            content, tail = self._chunk_content(tx, body)
            self._send(Bdat(len(content) + len(tail), last=True))
            tx.unread += 1
            for start in range(0, len(content), _CHUNK):
                self._send(DataChunk(content[start : start + _CHUNK]))
                await self._flush(self.config.data_block_timeout)
            if tail:
                self._send(DataChunk(tail))
        else:
            await self._send_streamed_chunks(tx, body)

    async def _send_streamed_chunks(
        self, tx: _Transaction, body: IO[bytes] | os.PathLike[str] | AsyncIterable[bytes]
    ) -> None:
        """A body of unknown encoded size: one BDAT per :data:`_CHUNK` octets, the rest
        (perhaps nothing) with LAST. Without PIPELINING each chunk waits for its reply,
        and a refused one ends the content (RFC 3030 section 2)."""
        endings = None if tx.binary else LineEndings()
        held: list[bytes] = []
        size = 0
        async for piece in pieces(body):
            data = piece if endings is None else endings.encode(piece)
            held.append(data)
            size += len(data)
            if size >= _CHUNK:
                self._send_chunk(tx, b"".join(held), last=False)
                held.clear()
                size = 0
                await self._flush(self.config.data_block_timeout)
                if tx.lockstep:
                    await self._read_chunk_replies(tx)
                    if tx.failure is not None:
                        return
        if endings is not None:
            held.append(endings.end())
        self._send_chunk(tx, b"".join(held), last=True)

    async def _send_wire_chunks(self, tx: _Transaction, body: WireFile) -> None:
        """A wire-ready file, its dot-stuffing undone (see :mod:`smtpx.client.chunking`):
        a file with no line starting with a dot goes as one ``BDAT n LAST`` with sendfile;
        otherwise each stretch with doubled dots is a chunk of its own."""
        with open(body.path, "rb") as file:
            end = body.offset + _size_of_wire(body, file)
            with mapped(file, end) as view:
                held: Piece | None = None
                for piece in wire_pieces(view, body.offset, end):
                    if held is not None:
                        await self._send_piece(tx, file, held, b"", last=False)
                    held = piece
                open_line = end > body.offset and view[end - 2 : end] != b"\r\n"
                tail = b"\r\n" if open_line and not tx.binary else b""
                await self._send_piece(tx, file, held or (0, 0, b""), tail, last=True)

    async def _send_piece(
        self, tx: _Transaction, file: IO[bytes], piece: Piece, tail: bytes, *, last: bool
    ) -> None:
        start, stop, data = piece
        if data is not None or stop - start < _SENDFILE_MIN:
            if data is None:
                file.seek(start)
                data = file.read(stop - start)
            self._send_chunk(tx, data + tail, last=last)
        else:
            self._send(Bdat(stop - start + len(tail), last=last))
            tx.unread += 1
            await self._flush(self.config.data_block_timeout)
            sent = await self._sendfile(file, start, stop - start)
            self._conn.send_chunk_content(sent)
            if sent != stop - start:
                raise OSError(f"{file.name}: ended {stop - start - sent} octets early")
            if tail:
                self._send(DataChunk(tail))
        await self._flush(self.config.data_block_timeout)
        if tx.lockstep and not last:
            await self._read_chunk_replies(tx)

    # -- parameters -------------------------------------------------------------------

    def _mail_command(self, info: EnvelopeInfo, body: Body, size: int | None) -> Mail | Unsendable:
        """MAIL FROM with the parameters this server can take, or why it can't be sent."""
        ext = self._conn.extensions
        params = info.sender_args
        needs_utf8 = (
            params.smtputf8
            or _utf8_local_part(info.sender.address)
            or any(_utf8_local_part(r) for r in info.recipients)
        )
        if needs_utf8 and not ext.smtputf8:
            return Unsendable(
                Reply.of(
                    553, f"{self.host} does not support SMTPUTF8, which this message needs", "5.6.7"
                )
            )
        if size is not None and ext.size and size > ext.size:
            return Unsendable(
                Reply.of(
                    552,
                    f"Message of {size} octets is over {self.host}'s limit of {ext.size}",
                    "5.3.4",
                )
            )
        body_type = self._body_type(params.body, body)
        if isinstance(body_type, Unsendable):
            return body_type
        keep_dsn = ext.dsn
        new = replace(
            params,
            size=size if ext.size is not None and size is not None else None,
            body=body_type,
            smtputf8=needs_utf8,
            auth=params.auth if ext.auth and self._conn.authenticated else None,
            ret=params.ret if keep_dsn else None,
            envid=params.envid if keep_dsn else None,
            extra=tuple((k, v) for k, v in params.extra if ext.supports(k)),
        )
        sender = info.sender
        if sender.address is not None and not needs_utf8 and not sender.address.domain.isascii():
            sender = Sender(sender.address.to_ascii())
        return Mail(sender, new)

    def _rcpt_params(self, info: EnvelopeInfo, recipient: Address) -> RcptParams:
        """The recipient's DSN parameters (NOTIFY, ORCPT), passed on when the server
        offers DSN (RFC 3461 5.2.1), else left out: the notices are then ours to send."""
        return info.params_of(recipient) if self._conn.extensions.dsn else _NO_RCPT_PARAMS

    def _body_type(self, declared: str | None, body: Body) -> str | Unsendable | None:
        """The BODY parameter to send. BINARYMIME goes only to a server that offers it
        with CHUNKING (and with chunking not turned off); elsewhere a message declared
        binary goes only if its content fits 8bit MIME unchanged (RFC 3030 section 3:
        convert or bounce; smtpx does not convert)."""
        ext = self._conn.extensions
        if declared == "BINARYMIME":
            if self.config.chunking is not False and ext.chunking and ext.binarymime:
                return declared
            if not (isinstance(body, bytes) and fits_8bit(body)):
                return Unsendable(
                    Reply.of(
                        554,
                        f"{self.host} does not take BINARYMIME with CHUNKING, "
                        "which this message needs",
                        "5.6.3",
                    )
                )
            declared = None
        if declared is None and isinstance(body, bytes) and not body.isascii():
            declared = "8BITMIME"
        return declared if declared in ("7BIT", "8BITMIME") and ext.eightbitmime else None

    @staticmethod
    def _recipient(address: Address, mail: Mail) -> Address:
        # A UTF-8 domain alone travels as an A-label (IDNA 2008) unless MAIL said SMTPUTF8:
        # the server may not take UTF-8 in RCPT otherwise (RFC 6531 3.4), offered or not.
        # (Without SMTPUTF8, every local part is ASCII: _mail_command checked.)
        return address if mail.params.smtputf8 else address.to_ascii()

    # -- other commands ---------------------------------------------------------------

    async def noop(self) -> Reply:
        return await self._command(Noop())

    async def rset(self) -> Reply:
        return await self._command(Rset())

    async def quit(self, timeout: float | None = None) -> None:
        """Say QUIT (a closed connection counts as its 221) and close the stream; wait
        ``timeout`` seconds at most for the reply (default: the command timeout)."""
        if self._closed:
            return
        wait = self.config.command_timeout if timeout is None else timeout
        try:
            if self._conn.state not in (State.CLOSED, State.DATA, State.AUTH):
                self._send(Quit())
                await self._flush(wait)
                reply = (await self._receive(wait)).reply
                if reply.code != 221:
                    log.info("%s answered QUIT with %s", self.host, reply)
        except (ConnectionLost, ReplyTimeout, OSError) as exc:
            log.debug("QUIT to %s: %s", self.host, exc)
        except LocalProtocolError as exc:  # cut off where no command may go (in a chunk)
            log.debug("no QUIT to %s: %s", self.host, exc)
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection without QUIT."""
        self._closed = True
        self._stream.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.quit()


async def receive_response(
    conn: ClientConnection, stream: Stream, timeout: float, peer: str, clock: Callable[[], float]
) -> Response:
    """The next reply from ``peer``, whole within ``timeout`` seconds of ``clock`` (the
    loop's time): one that trickles its reply an octet at a time (a tarpit) does not
    extend the wait. A reply already received reads no clock; one that must be waited for
    reads it once, and again for each further read.
    Raises :class:`~smtpx.errors.ReplyTimeout` or :class:`~smtpx.errors.ConnectionLost`."""
    wait = timeout
    deadline: float | None = None
    while True:
        event = conn.next_event()
        if isinstance(event, Response):
            return event
        if conn.state is State.CLOSED:
            raise ConnectionLost(f"{peer} closed the connection")
        if deadline is None:
            deadline = clock() + timeout
        else:
            wait = deadline - clock()
        try:
            if wait <= 0:
                raise TimeoutError
            data = await stream.read(wait)
        except TimeoutError:
            raise ReplyTimeout(f"Timeout {timeout}s waiting for a reply from {peer}") from None
        except OSError as exc:
            raise ConnectionLost(f"{peer}: {exc}") from exc
        conn.receive_data(data)


def _size_of(body: Body) -> int | None:
    if isinstance(body, bytes):
        return len(body)
    if isinstance(body, WireFile):
        if body.size is not None:
            return body.size
        return os.stat(body.path).st_size - body.offset
    if isinstance(body, os.PathLike):
        return os.stat(body).st_size
    return file_size(body)  # an open file; None for what is not one


def _size_of_wire(body: WireFile, file: IO[bytes]) -> int:
    if body.size is not None:
        return body.size
    return os.fstat(file.fileno()).st_size - body.offset


def _utf8_local_part(address: Address | None) -> bool:
    return address is not None and not address.local_part.isascii()


def _ends_with_crlf(file: IO[bytes], offset: int, size: int) -> bool:
    """Whether the ``size`` octets at ``offset`` end with CRLF (nothing at all counts as
    ending a line)."""
    if size < 2:
        return size == 0
    file.seek(offset + size - 2)
    return file.read(2) == b"\r\n"


class _Connect:
    """The result of :func:`connect`: await it, or use it with ``async with``."""

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._coro.__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> Client:
        self._client = await self._coro
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.quit()


def connect(
    host: str,
    port: int = 25,
    *,
    config: ClientConfig | None = None,
    credentials: Credentials | None = None,
    resolver: Resolver | None = None,
    stream: Stream | None = None,
    tls: TlsConfig | None = None,
) -> _Connect:
    """Open a session with ``host:port``: resolve (A and AAAA), connect to the first
    address that answers (Happy Eyeballs, RFC 8305: ``config.happy_eyeballs_delay``),
    read the greeting, EHLO (HELO as fallback), STARTTLS per ``tls`` (default:
    ``config.tls_for(host)``), AUTH with ``credentials``.

    ``stream`` skips the connecting (an in-memory stream in tests, say). On a failure
    after the connection is up, QUIT is sent and the connection closed before the error
    is raised; after a timeout or a lost connection, it is closed without QUIT.
    """
    return _Connect(_open(host, port, config or ClientConfig(), credentials, resolver, stream, tls))


async def _open(  # noqa: PLR0917 - private, called from one place
    host: str,
    port: int,
    config: ClientConfig,
    credentials: Credentials | None,
    resolver: Resolver | None,
    stream: Stream | None,
    tls: TlsConfig | None,
) -> Client:
    tls = config.tls_for(host) if tls is None else tls
    if stream is None:
        context = tls.context() if tls.mode is TlsMode.IMPLICIT else None
        stream = await connect_first(
            host,
            port,
            resolver=resolver,
            timeout=config.connect_timeout,
            ssl_context=context,
            attempt_delay=config.happy_eyeballs_delay,
        )
    client = Client(stream, host=host, port=port, config=config, tls=tls)
    try:
        await client._setup(credentials)
    except BaseException:
        await client.quit()
        raise
    return client

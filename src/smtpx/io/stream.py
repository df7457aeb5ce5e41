"""Byte streams for the SMTP client and server: over asyncio transports, or in memory.

A :class:`Stream` reads whatever bytes have arrived (``b""`` at end of stream), writes
with backpressure, upgrades to TLS in place, and can ``sendfile`` a wire-ready message.
:class:`TransportStream` is the real one, built on an :class:`asyncio.Protocol` (leaner
than asyncio's StreamReader/StreamWriter: one buffer, no line splitting, since the
protocol core does the framing). :func:`memory_pair` gives two connected in-memory
streams for tests; their TLS upgrade is emulated.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import IO, cast

from smtpx.compiled import mypyc_attr
from smtpx.io.tasks import within
from smtpx.io.tls import peer_chain

__all__ = [
    "MemoryStream",
    "Stream",
    "TransportStream",
    "file_size",
    "memory_pair",
    "open_unix",
    "server_protocol_factory",
]

# Stop reading from the socket when this much has arrived unread (the session is busy,
# say waiting on a plugin): a client cannot make us buffer without bound.
_HIGH_WATER = 256 * 1024

# What Stream.sendfile's timeout applies to (RFC 5321 4.5.3.2.5 gives each TCP send of the
# content 3 minutes; Postfix's smtp_data_xfer_timeout is the time without progress).
SENDFILE_BLOCK = 256 * 1024

# Linux's TCP_QUICKACK (absent elsewhere): acknowledge what arrives at once.
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

# Each read lands in one buffer shared by all the connections of a thread (of its event
# loop), and what came is copied out at once. asyncio's own read path allocates 256 KiB
# per read instead, which glibc serves with mmap, mremap and munmap: three system calls
# and fresh pages per read.
_READ_SIZE = 256 * 1024
_read_buffers = threading.local()


def _read_buffer() -> memoryview:
    view: memoryview | None = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(_READ_SIZE))
    return view


# A transport of your own implements Stream (the server's ProxiedStream does): in the
# compiled build (this module is compiled) a Python class may still subclass it.
@mypyc_attr(allow_interpreted_subclasses=True)
class Stream(abc.ABC):
    """A bidirectional byte stream. ``proxy_peer``: the address of the proxy the
    connection came through, when a PROXY header named the client behind it (the
    server's ``ProxiedStream``)."""

    tls: bool = False
    proxy_peer: tuple[str, int] | None = None

    @abc.abstractmethod
    async def read(self, timeout: float | None = None) -> bytes:
        """The bytes that have arrived (waiting for some), or ``b""`` at end of stream.

        Raises :class:`TimeoutError` when nothing arrives within ``timeout`` seconds.
        """

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue bytes; call :meth:`drain` to wait until the peer keeps up."""

    @abc.abstractmethod
    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the write buffer is below its high-water mark (TimeoutError after
        ``timeout`` seconds)."""

    @abc.abstractmethod
    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Upgrade to TLS in place. Plaintext received but not yet read is discarded (it
        must not be taken as if it came over TLS: CVE-2011-0411); the number of discarded
        octets is returned so a client can refuse injected data."""

    async def sendfile(
        self,
        file: IO[bytes],
        offset: int = 0,
        count: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Send ``count`` octets of ``file`` from ``offset`` (zero-copy where possible).

        ``timeout``: seconds the peer may take for each block (:data:`SENDFILE_BLOCK`
        octets at most) before TimeoutError: a peer that stops reading mid-message is
        given up on, not waited for without end."""
        file.seek(offset)
        sent = 0
        while count is None or sent < count:
            chunk = file.read(65536 if count is None else min(65536, count - sent))
            if not chunk:
                break
            self.write(chunk)
            await self.drain(timeout)
            sent += len(chunk)
        return sent

    @abc.abstractmethod
    def close(self) -> None:
        """Close without waiting."""

    def abort(self) -> None:
        """Close at once, dropping what is written and not sent yet (a peer that does
        not read would otherwise hold the connection open until it does)."""
        self.close()

    @property
    def write_blocked(self) -> bool:
        """True while the peer lags behind: what is written and not sent yet is above
        the high-water mark, and :meth:`drain` would wait."""
        return False

    @property
    @abc.abstractmethod
    def is_closing(self) -> bool: ...

    @abc.abstractmethod
    def interrupt(self, exc: BaseException) -> None:
        """Make a :meth:`read` that is waiting raise ``exc`` (a server shutting down wakes
        its idle sessions this way); without a waiting read, nothing happens."""

    @property
    @abc.abstractmethod
    def has_input(self) -> bool:
        """True when bytes or the end of stream have arrived and not been read. On an
        idle client connection this means the server spoke unasked (a 421 before closing):
        the connection is not fit for reuse."""

    def peername(self) -> tuple[str, int] | None:
        return None

    def sockname(self) -> tuple[str, int] | None:
        return None

    def tls_version(self) -> str | None:
        return None

    def peer_certificates(self) -> tuple[bytes, ...]:
        """The certificate chain the peer presented in the TLS handshake (DER, its own
        first, unverified); empty without TLS (or for an emulated handshake)."""
        return ()


class _Protocol(asyncio.BufferedProtocol):
    """Buffers what arrives and wakes the one reader; tracks write flow control.

    It is a :class:`asyncio.BufferedProtocol`: the transport reads into the thread's
    shared buffer (``get_buffer``) and ``buffer_updated`` copies the bytes out before any
    other connection can read. The event loop is looked up once, when the protocol is
    made: Python 3.11's ``asyncio.get_running_loop()`` costs a ``getpid`` system call.

    With ``quickack`` (client connections, on Linux), every arrival is acknowledged at
    once. A server that leaves Nagle's algorithm on (Postfix's smtpd does) and writes two
    replies in a row, as it does when pipelined input overruns its 4 KB read buffer, holds
    the second until the first is acknowledged; a delayed acknowledgement costs 40 ms
    there, per message (bench/chunking.py measured 22 messages/s instead of 700).
    """

    def __init__(
        self, *, quickack: bool = False, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._view = _read_buffer()  # this thread's: the loop's, as the protocol is
        self.transport: asyncio.Transport | None = None
        self._quickack = quickack and _QUICKACK is not None
        self._socket: socket.socket | None = None
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        if self._quickack:
            self._socket = transport.get_extra_info("socket")

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        data = self._view[:nbytes].tobytes()
        if self._socket is not None and _QUICKACK is not None:
            # Not a lasting mode: the kernel may go back to delaying, so it is set again
            # at each arrival.
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake(self) -> None:
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> bytes:
        data = self.buffer[0] if len(self.buffer) == 1 else b"".join(self.buffer)
        self.buffer.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    async def wait_readable(self, timeout: float | None) -> None:
        assert self._read_waiter is None, "only one reader at a time"
        waiter = self._loop.create_future()
        self._read_waiter = waiter
        try:
            if timeout is None:
                await waiter  # the server's reads: its sweeper keeps their deadlines
            else:
                await _wait(waiter, timeout)
        finally:
            self._read_waiter = None

    async def wait_writable(self, timeout: float | None) -> None:
        if not self.writing_paused:
            return
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection lost")
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        await _wait(waiter, timeout)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _wait(waiter: asyncio.Future[None], timeout: float | None) -> None:
    """Await ``waiter``, failing with TimeoutError after ``timeout`` seconds. Cheaper than
    ``asyncio.timeout()`` on this hot path (one timer, no task cancellation)."""
    if timeout is None:
        await waiter
        return
    handle = waiter.get_loop().call_later(timeout, _expire, waiter)
    try:
        await waiter
    finally:
        handle.cancel()


class TransportStream(Stream):
    """A :class:`Stream` over an asyncio transport."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._peer: tuple[str, int] | None = _address(transport.get_extra_info("peername"))
        self._sock: tuple[str, int] | None = _address(transport.get_extra_info("sockname"))

    @classmethod
    async def from_socket(
        cls,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> TransportStream:
        """A client stream over a connected socket (with TLS from the start when
        ``ssl_context`` is given: a handshake of at most ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        tls = ssl_context is not None
        transport, protocol = await loop.create_connection(
            lambda: _Protocol(quickack=True),
            sock=sock,
            ssl=ssl_context,
            server_hostname=server_hostname if tls else None,
            ssl_handshake_timeout=timeout if tls else None,
        )
        stream = cls(transport, protocol)
        stream.tls = tls
        return stream

    async def read(self, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        while not protocol.buffer:
            if protocol.eof:
                return b""
            await protocol.wait_readable(timeout)
        return protocol.take()

    def write(self, data: bytes) -> None:
        if data:
            self._transport.write(data)

    async def drain(self, timeout: float | None = None) -> None:
        if self._protocol.error is not None:
            raise ConnectionResetError(f"connection lost: {self._protocol.error}")
        await self._protocol.wait_writable(timeout)

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> int:
        discarded = self._protocol.buffered
        if discarded:
            self._protocol.take()
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            self._transport,
            self._protocol,
            context,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
            ssl_handshake_timeout=timeout,
        )
        if transport is None:  # the connection was closed during the handshake
            raise ConnectionResetError("connection closed during the TLS handshake")
        self._transport = transport
        self._protocol.transport = self._transport
        self.tls = True
        return discarded

    async def sendfile(
        self,
        file: IO[bytes],
        offset: int = 0,
        count: int | None = None,
        timeout: float | None = None,
    ) -> int:
        await self.drain(timeout)
        loop = asyncio.get_running_loop()
        if count is None:
            size = file_size(file)
            if size is None:  # not a file on disk: through the write buffer
                return await super().sendfile(file, offset, None, timeout)
            count = max(0, size - offset)
        # Zero-copy on a plain socket; asyncio falls back to read-and-write under TLS. A
        # block at a time, each within ``timeout``: one call for the whole file could
        # only have a deadline for the whole file. (No ``async with``, no await in an
        # except block: this module is compiled, tests/test_compiled.py.)
        sent = 0
        native = True
        while sent < count:
            block = min(SENDFILE_BLOCK, count - sent)
            try:  # (a loop may refuse when called or when awaited)
                sending = loop.sendfile(self._transport, file, offset + sent, block, fallback=True)
                done = await within(sending, timeout)
            except NotImplementedError:  # uvloop has no loop.sendfile
                native = False
                break
            sent += done
            if done < block:  # the file ended
                break
        if not native:  # copied through the write buffer instead
            return sent + await super().sendfile(file, offset + sent, count - sent, timeout)
        return sent

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    @property
    def write_blocked(self) -> bool:
        return self._protocol.writing_paused

    def interrupt(self, exc: BaseException) -> None:
        waiter = self._protocol._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    @property
    def has_input(self) -> bool:
        return bool(self._protocol.buffer) or self._protocol.eof

    @property
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def peername(self) -> tuple[str, int] | None:
        return self._peer

    def sockname(self) -> tuple[str, int] | None:
        return self._sock

    def tls_version(self) -> str | None:
        ssl_object = self._transport.get_extra_info("ssl_object")
        return None if ssl_object is None else str(ssl_object.version())

    def peer_certificates(self) -> tuple[bytes, ...]:
        ssl_object = self._transport.get_extra_info("ssl_object")
        return () if ssl_object is None else peer_chain(ssl_object)


async def open_unix(path: str, *, timeout: float | None = None) -> TransportStream:
    """A client stream over a unix socket (an LMTP server's, say): connected within
    ``timeout`` seconds, or OSError / TimeoutError. It has no peer or socket address."""
    loop = asyncio.get_running_loop()
    connecting = loop.create_unix_connection(_Protocol, path)
    transport, protocol = await within(connecting, timeout)
    return TransportStream(transport, protocol)


def file_size(file: object) -> int | None:
    """The size of the file on disk behind ``file``; None when it has none (a
    ``BytesIO``, a closed file, no ``fileno`` at all)."""
    fileno = getattr(file, "fileno", None)
    if fileno is None:
        return None
    try:
        return os.fstat(fileno()).st_size
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None


class _ServerProtocol(_Protocol):
    def __init__(
        self,
        on_stream: Callable[[TransportStream], None],
        tls: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(loop=loop)
        self._on_stream = on_stream
        self._tls = tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        stream = TransportStream(self.transport, self)
        stream.tls = self._tls
        self._on_stream(stream)


def server_protocol_factory(
    on_stream: Callable[[TransportStream], None], *, tls: bool = False
) -> Callable[[], asyncio.BaseProtocol]:
    """For ``loop.create_server``: each accepted connection is handed to ``on_stream`` as a
    :class:`TransportStream` (``tls`` for implicit-TLS listeners). Call it in the loop
    the server runs in (its protocols are made there)."""
    loop = asyncio.get_running_loop()
    return lambda: _ServerProtocol(on_stream, tls, loop)


# ---------------------------------------------------------------------------------------
# In memory
# ---------------------------------------------------------------------------------------


class MemoryStream(Stream):
    """One end of an in-memory connection (see :func:`memory_pair`).

    ``start_tls`` is emulated: no handshake, but the same rules (unread plaintext is
    discarded) and ``tls`` becomes True on this end.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.peer: MemoryStream | None = None
        self._buffer: list[bytes] = []
        self._eof = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self.on_write: Callable[[bytes], None] | None = None  # a tap, for transcripts
        self._tls_started = asyncio.Event()

    async def read(self, timeout: float | None = None) -> bytes:
        while not self._buffer:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(self._waiter, timeout)
            finally:
                self._waiter = None
        data = b"".join(self._buffer)
        self._buffer.clear()
        return data

    def _deliver(self, data: bytes) -> None:
        if data:
            self._buffer.append(data)
        else:
            self._eof = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError(f"{self.name}: stream is closed")
        if data and self.peer is not None:
            if self.on_write is not None:
                self.on_write(data)
            self.peer._deliver(data)

    async def drain(self, timeout: float | None = None) -> None:
        if self._closed:
            raise ConnectionResetError(f"{self.name}: stream is closed")
        await asyncio.sleep(0)

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> int:
        # Unread plaintext goes, as over a real connection. Then wait for the peer to
        # start too, standing in for the handshake: without it, bytes the peer sends just
        # after its upgrade could land here before ours and be thrown away.
        discarded = sum(map(len, self._buffer))
        self._buffer.clear()
        self._tls_started.set()
        if self.peer is not None:
            await within(self.peer._tls_started.wait(), timeout)
        self.tls = True
        return discarded

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._eof = True
            if self.peer is not None:
                self.peer._deliver(b"")
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    @property
    def is_closing(self) -> bool:
        return self._closed

    @property
    def has_input(self) -> bool:
        return bool(self._buffer) or self._eof

    def interrupt(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def peername(self) -> tuple[str, int] | None:
        return ("127.0.0.1", 25)

    def sockname(self) -> tuple[str, int] | None:
        return ("127.0.0.1", 2525)

    def tls_version(self) -> str | None:
        return "emulated" if self.tls else None


def memory_pair(
    tap: Callable[[str, bytes], None] | None = None,
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory streams: (client end, server end).

    ``tap(who, data)`` sees every write, with ``who`` "C" or "S".
    """
    client, server = MemoryStream("client"), MemoryStream("server")
    client.peer, server.peer = server, client
    if tap is not None:
        client.on_write = lambda data: tap("C", data)
        server.on_write = lambda data: tap("S", data)
    return client, server

"""TransportStream over real sockets: the reads of many connections share one buffer per
thread, so each stream must still get exactly its own bytes, in order."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from smtpx.io.stream import SENDFILE_BLOCK, TransportStream, server_protocol_factory
from smtpx.server.proxy import ProxiedStream
from tests.conftest import server_tls_context


async def _pair(
    accepted: asyncio.Queue[TransportStream], port: int, context: ssl.SSLContext | None = None
) -> tuple[TransportStream, TransportStream]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    client = await TransportStream.from_socket(
        sock, ssl_context=context, server_hostname="localhost" if context else None
    )
    return client, await accepted.get()


async def _read_exactly(stream: TransportStream, count: int) -> bytes:
    got = b""
    while len(got) < count:
        data = await asyncio.wait_for(stream.read(), 10)
        assert data, "end of stream before all the bytes came"
        got += data
    return got


def _payload(tag: int, size: int) -> bytes:
    # Distinct per connection and per position: a byte from another stream, or one out
    # of order, cannot go unnoticed.
    pattern = bytes((tag * 31 + i * 7) % 251 for i in range(251 * 7))
    return (pattern * (size // len(pattern) + 1))[:size]


def _tls(ca: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A client context trusting ``ca``, and a server context for localhost."""
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return client_context, server_tls_context(ca, "localhost")


@contextlib.asynccontextmanager
async def _connections(
    count: int,
    context: ssl.SSLContext | None = None,
    server_context: ssl.SSLContext | None = None,
) -> AsyncIterator[list[tuple[TransportStream, TransportStream]]]:
    """``count`` connections over loopback as (client end, server end), closed after."""
    accepted: asyncio.Queue[TransportStream] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        server_protocol_factory(accepted.put_nowait, tls=server_context is not None),
        "127.0.0.1",
        0,
        ssl=server_context,
    )
    port = server.sockets[0].getsockname()[1]
    pairs = [await _pair(accepted, port, context) for _ in range(count)]
    try:
        yield pairs
    finally:
        for client, server_end in pairs:
            client.close()
            server_end.close()
        server.close()
        await server.wait_closed()


async def _exchange(context: ssl.SSLContext | None, server_context: ssl.SSLContext | None) -> None:
    # Sizes above the shared buffer (256 KiB) and above the read high-water mark too.
    sizes = [1, 4096, 300_000, 700_000]
    payloads = [_payload(tag, size) for tag, size in enumerate(sizes)]
    async with _connections(len(sizes), context, server_context) as pairs:
        for (client, _), payload in zip(pairs, payloads, strict=True):
            client.write(payload)
        reads = [
            _read_exactly(server_end, len(payload))
            for (_, server_end), payload in zip(pairs, payloads, strict=True)
        ]
        received = await asyncio.gather(*reads)
        assert received == payloads
        # And back the other way, all at once.
        for (_, server_end), payload in zip(pairs, reversed(payloads), strict=True):
            server_end.write(payload)
        replies = await asyncio.gather(
            *(
                _read_exactly(client, len(payload))
                for (client, _), payload in zip(pairs, reversed(payloads), strict=True)
            )
        )
        assert replies == list(reversed(payloads))


async def test_interleaved_connections_each_read_their_own_bytes() -> None:
    await _exchange(None, None)


async def test_interleaved_tls_connections_each_read_their_own_bytes(ca: Any) -> None:
    await _exchange(*_tls(ca))


def test_interleaved_connections_on_uvloop(ca: Any) -> None:
    """uvloop reads into a protocol's buffer through its own code: the same guarantee."""
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_exchange(None, None))
        loop.run_until_complete(_exchange(*_tls(ca)))
    finally:
        loop.close()


async def _held_back_then_aborted(
    context: ssl.SSLContext | None = None, server_context: ssl.SSLContext | None = None
) -> None:
    """A peer that reads nothing: ``write_blocked`` goes up once the writes pass the
    high-water mark (through a ProxiedStream too), and ``abort`` drops the rest at once."""
    async with _connections(1, context, server_context) as [(client, server_end)]:
        wrapped = ProxiedStream(server_end, ("192.0.2.1", 1), 2, b"")
        assert not wrapped.write_blocked
        chunk = _payload(5, 65536)
        written = 0
        while not wrapped.write_blocked:
            wrapped.write(chunk)
            written += len(chunk)
            await asyncio.sleep(0)
            assert written < 256 * 1024 * 1024, "never blocked"
        wrapped.abort()
        assert server_end.is_closing
        received = 0
        with contextlib.suppress(ConnectionError):
            while data := await asyncio.wait_for(client.read(), 10):
                received += len(data)
        assert received < written  # what was queued went with the connection


async def test_a_peer_that_reads_nothing_blocks_writes_and_abort_drops_them(ca: Any) -> None:
    await _held_back_then_aborted()
    await _held_back_then_aborted(*_tls(ca))


def test_blocked_writes_and_abort_on_uvloop(ca: Any) -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_held_back_then_aborted())
        loop.run_until_complete(_held_back_then_aborted(*_tls(ca)))
    finally:
        loop.close()


async def _sendfile_round_trip(
    path: Path, context: ssl.SSLContext | None = None, server_context: ssl.SSLContext | None = None
) -> None:
    """``sendfile`` goes a block at a time (each with its own deadline): every octet still
    arrives once and in order, from an offset, to a count or to the end of the file."""
    data = path.read_bytes()
    async with _connections(1, context, server_context) as [(client, server_end)]:
        with open(path, "rb") as file:
            sent = await client.sendfile(file, 7, None, timeout=60)
            assert sent == len(data) - 7
            assert await _read_exactly(server_end, sent) == data[7:]
            sent = await client.sendfile(file, 3, SENDFILE_BLOCK + 5, timeout=60)
            assert sent == SENDFILE_BLOCK + 5
            assert await _read_exactly(server_end, sent) == data[3 : 3 + sent]
        # Not a file on disk: its octets go too.
        sent = await client.sendfile(io.BytesIO(data), 5, None, timeout=60)
        assert await _read_exactly(server_end, sent) == data[5:]


async def test_sendfile_in_blocks_sends_every_octet_once(tmp_path: Path, ca: Any) -> None:
    path = tmp_path / "content"
    path.write_bytes(_payload(9, 3 * SENDFILE_BLOCK + 1234))
    await _sendfile_round_trip(path)
    await _sendfile_round_trip(path, *_tls(ca))  # asyncio's read-and-write fallback


def test_sendfile_in_blocks_on_uvloop(tmp_path: Path) -> None:
    import uvloop

    path = tmp_path / "content"
    path.write_bytes(_payload(9, 3 * SENDFILE_BLOCK + 1234))
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_sendfile_round_trip(path))
    finally:
        loop.close()

"""A client that sends commands and does not read the replies (each EHLO's reply is
about 30 times the command): the server stops reading from it while its replies wait, and
drops it after ``command_timeout``, instead of buffering replies without end."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from smtpx.protocol import ReplyParser
from smtpx.server import Listener, Server, ServerConfig, Session
from smtpx.testing.clock import run_virtual
from tests.server.helpers import Keep

EHLO = b"EHLO client.example\r\n"


class Counting(Keep):
    """Counts the EHLO commands answered."""

    def __init__(self) -> None:
        super().__init__()
        self.greeted = 0

    async def helo(self, session: Session, name: str) -> None:
        self.greeted += 1


def _server(command_timeout: float = 300.0) -> Server:
    config = ServerConfig(listeners=[Listener(port=0)], command_timeout=command_timeout)
    return Server(Counting(), config)


async def _connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def _kernel_send_buffer_max() -> int:
    with open("/proc/sys/net/ipv4/tcp_wmem") as file:
        return int(file.read().split()[2])


async def _ehlo_reply_size(port: int) -> int:
    sock = await _connect(port)
    loop = asyncio.get_running_loop()
    greeting = await loop.sock_recv(sock, 4096)
    await loop.sock_sendall(sock, EHLO)
    reply = b""
    while not reply.endswith(b"\r\n") or b"\r\n250 " not in b"\r\n" + reply:
        reply += await loop.sock_recv(sock, 4096)
    sock.close()
    assert greeting.startswith(b"220 ")
    return len(reply)


def test_a_client_that_reads_no_reply_is_held_back_then_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpx.mail")
    offered = 400_000  # EHLO commands: 8.4 MB

    async def main() -> tuple[int, BaseException | None, float, int, int, int]:
        loop = asyncio.get_running_loop()
        async with _server() as server:
            reply_size = await _ehlo_reply_size(server.ports[0])
            sock = await _connect(server.ports[0])
            started = loop.time()
            sent = 0
            error: BaseException | None = None
            blob = EHLO * 1000
            try:
                for _ in range(offered // 1000):
                    await loop.sock_sendall(sock, blob)
                    sent += len(blob)
            except OSError as exc:  # the server dropped the connection
                error = exc
            elapsed = loop.time() - started
            sock.close()
            assert isinstance(server.plugin, Counting)
            greeted = server.plugin.greeted - 1  # the EHLO of _ehlo_reply_size
            dropped = server.stats["timeouts_unread_replies"]
            return sent, error, elapsed, dropped, greeted, reply_size

    sent, error, elapsed, dropped, greeted, reply_size = run_virtual(main())
    # Without the hold, the server read all 8.4 MB and kept the 400,000 replies (some
    # 100 MB) in memory. Now it answers until the kernel's send buffer (at most
    # tcp_wmem's maximum) and the transport's high-water mark are full, then reads no
    # more (the kernel's receive buffer holds what the client could still send).
    assert greeted * reply_size < _kernel_send_buffer_max() + 512 * 1024, (greeted, reply_size)
    assert sent < offered * len(EHLO)
    assert isinstance(error, ConnectionError), error
    assert elapsed >= 300  # command_timeout: a slow reader is given that long
    assert dropped == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "smtpx.mail"]
    assert "dropped: replies not read" in lines


async def _read_replies(sock: socket.socket, count: int) -> list[int]:
    loop = asyncio.get_running_loop()
    parser = ReplyParser()
    codes: list[int] = []
    while len(codes) < count:
        reply = parser.next_reply()
        if reply is not None:
            codes.append(reply.code)
            continue
        data = await loop.sock_recv(sock, 65536)
        if not data:
            break
        parser.feed(data)
    return codes


async def test_a_client_that_reads_late_gets_every_reply_in_order() -> None:
    commands = 20_000  # 420 KB in, about 3 MB of replies: past every buffer on the way
    async with _server() as server:
        sock = await _connect(server.ports[0])
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, EHLO * 100)  # then read nothing for a while
        sender = asyncio.ensure_future(loop.sock_sendall(sock, EHLO * (commands - 100)))
        for _ in range(50):
            await asyncio.sleep(0)
        codes = await _read_replies(sock, commands + 1)
        await sender
        sock.close()
    assert codes == [220] + [250] * commands
    assert server.stats["timeouts_unread_replies"] == 0


async def test_many_replies_to_one_batch_all_come_in_order() -> None:
    # 200 replies from one batch of input (written 64 at a time), read as they come.
    async with _server() as server:
        sock = await _connect(server.ports[0])
        loop = asyncio.get_running_loop()
        batch = b"MAIL FROM:<a@example.org>\r\n" + b"RCPT TO:<b@example.org>\r\n" * 199
        await loop.sock_sendall(sock, EHLO + batch)
        codes = await _read_replies(sock, 202)
        sock.close()
    assert codes == [220, 250, 250] + [250] * 199
    assert server.stats["timeouts_unread_replies"] == 0

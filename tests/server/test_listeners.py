"""The server on real sockets: listeners, TLS, per-listener caps, graceful close."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Any

import pytest

from smtpx.auth import Credentials
from smtpx.client import CertificateCheck, ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.io import StaticResolver
from smtpx.io.balance import SessionBalance, make_balance
from smtpx.protocol import ReplyParser
from smtpx.server import Listener, Offer, Server, ServerConfig, Session, password_mechanisms
from tests.conftest import server_tls_context
from tests.server.helpers import Keep

ENVELOPE = Envelope.create(
    sender="a@example.com", recipients=["b@example.org"], message=b"Subject: l\r\n\r\nx\r\n"
)
RESOLVER = StaticResolver({"mx.test": ["127.0.0.1"]})


class AuthKeep(Keep):
    def extensions(self, session: Session) -> Offer:
        return Offer(auth=password_mechanisms(lambda s, u, p: (u, p) == ("user", "secret")))


async def read_reply(reader: asyncio.StreamReader, parser: ReplyParser | None = None) -> str:
    parser = parser or ReplyParser()
    while (reply := parser.next_reply()) is None:
        data = await reader.read(4096)
        if not data:
            return ""
        parser.feed(data)
    return str(reply)


async def test_port_zero_is_reported_and_several_listeners_work() -> None:
    plugin = Keep()
    config = ServerConfig(listeners=[Listener(port=0), Listener(port=0)])
    async with Server(plugin, config) as server:
        ports = server.ports
        assert len(ports) == 2 and all(ports) and ports[0] != ports[1]
        for port in ports:
            async with connect("127.0.0.1", port, config=ClientConfig.for_testing()) as client:
                assert (await client.send(ENVELOPE)).ok
    assert len(plugin.kept) == 2


async def test_ipv6_listener() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    plugin = Keep()
    config = ServerConfig(listeners=[Listener(host="::1")])
    async with (
        Server(plugin, config) as server,
        connect("::1", server.ports[0], config=ClientConfig.for_testing()) as client,
    ):
        assert client.remote_address is not None and client.remote_address[0] == "::1"
        assert (await client.send(ENVELOPE)).ok
    assert len(plugin.kept) == 1


async def test_a_listener_at_its_cap_answers_421() -> None:
    config = ServerConfig(listeners=[Listener(max_sessions=1)])
    async with Server(Keep(), config) as server:
        port = server.ports[0]
        first_reader, first_writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await read_reply(first_reader)).startswith("220")
        second_reader, second_writer = await asyncio.open_connection("127.0.0.1", port)
        assert (
            await read_reply(second_reader)
            == "421 4.7.0 Too many concurrent sessions, try again later"
        )
        assert await second_reader.read() == b""
        second_writer.close()
        first_writer.close()
        assert server.stats["refused_connections"] == 1


async def test_starttls_discards_injected_plaintext_then_auth(ca: Any, ca_file: str) -> None:
    plugin = AuthKeep()
    config = ServerConfig(tls_context=server_tls_context(ca, "mx.test"))
    async with Server(plugin, config) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        parser = ReplyParser()
        assert (await read_reply(reader, parser)).startswith("220")
        writer.write(b"EHLO c.example\r\n")
        ehlo = await read_reply(reader, parser)
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo
        # The injection: a command in the same packet as STARTTLS.
        writer.write(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        assert await read_reply(reader, parser) == "220 2.0.0 Ready to start TLS"
        context = ssl.create_default_context(cafile=ca_file)
        await writer.start_tls(context, server_hostname="mx.test")
        writer.write(b"EHLO c.example\r\n")
        ehlo = await read_reply(reader, parser)
        assert "AUTH PLAIN LOGIN" in ehlo and "STARTTLS" not in ehlo
        # No MAIL was run: RCPT is out of sequence.
        writer.write(b"RCPT TO:<b@example.org>\r\n")
        assert (await read_reply(reader, parser)).startswith("503")
        writer.write(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n")
        assert (await read_reply(reader, parser)).startswith("235")
        writer.write(b"QUIT\r\n")
        assert (await read_reply(reader, parser)).startswith("221")
        writer.close()
    assert server.stats["tls_sessions"] == 1 and server.stats["auth_successes"] == 1


async def test_client_and_server_with_verified_tls_and_auth(ca: Any, ca_file: str) -> None:
    plugin = AuthKeep()
    config = ServerConfig(tls_context=server_tls_context(ca, "mx.test"))
    policy = TlsConfig(mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=ca_file)
    async with (
        Server(plugin, config) as server,
        connect(
            "mx.test",
            server.ports[0],
            config=ClientConfig.for_testing(tls=[("", policy)]),
            credentials=Credentials.login("user", "secret"),
            resolver=RESOLVER,
        ) as client,
    ):
        assert client.is_using_tls and client.authenticated
        assert (await client.send(ENVELOPE)).ok
    assert len(plugin.kept) == 1


async def test_implicit_tls_listener(ca: Any, ca_file: str) -> None:
    plugin = Keep()
    config = ServerConfig(
        listeners=[Listener(implicit_tls=True)], tls_context=server_tls_context(ca, "mx.test")
    )
    policy = TlsConfig(mode=TlsMode.IMPLICIT, certificate=CertificateCheck.VERIFY, ca_file=ca_file)
    async with (
        Server(plugin, config) as server,
        connect(
            "mx.test",
            server.ports[0],
            config=ClientConfig.for_testing(tls=[("", policy)]),
            resolver=RESOLVER,
        ) as client,
    ):
        assert client.is_using_tls
        assert not client.supports("STARTTLS")
        assert (await client.send(ENVELOPE)).ok
    assert len(plugin.kept) == 1
    assert server.stats["tls_sessions"] == 1


async def test_a_shared_implicit_tls_listener_serves_sessions_and_counts_them(
    ca: Any, ca_file: str
) -> None:
    """``Listener.fd``: a socket bound elsewhere (a worker's supervisor), served one
    connection at a time, TLS from the first byte; a worker's shared count of sessions
    goes up with the session and back down when it ends."""
    shared = socket.socket()
    shared.bind(("127.0.0.1", 0))
    port = shared.getsockname()[1]
    memory = make_balance(1)
    if memory is None:
        pytest.skip("no memfd on this system (not Linux)")
    plugin = Keep()
    config = ServerConfig(
        listeners=[Listener(implicit_tls=True, fd=shared.fileno())],
        tls_context=server_tls_context(ca, "mx.test"),
    )
    policy = TlsConfig(mode=TlsMode.IMPLICIT, certificate=CertificateCheck.VERIFY, ca_file=ca_file)
    server = Server(plugin, config)
    server.balance = balance = SessionBalance(memory, 0, 1)
    try:
        async with server:
            assert server.ports == [port]
            async with connect(
                "mx.test",
                port,
                config=ClientConfig.for_testing(tls=[("", policy)]),
                resolver=RESOLVER,
            ) as client:
                assert client.is_using_tls
                assert balance.sessions == 1
                assert (await client.send(ENVELOPE)).ok
            while balance.sessions:  # (the session ends after QUIT)
                await asyncio.sleep(0.01)
    finally:
        balance.close()
        os.close(memory)
        shared.close()
    assert len(plugin.kept) == 1 and server.stats["tls_sessions"] == 1


async def test_graceful_close_ends_idle_sessions_and_lets_busy_ones_finish() -> None:
    plugin = Keep()
    server = Server(plugin, ServerConfig(close_timeout=5))
    await server.start()
    port = server.ports[0]
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
    idle, busy = ReplyParser(), ReplyParser()
    assert (await read_reply(idle_reader, idle)).startswith("220")
    assert (await read_reply(busy_reader, busy)).startswith("220")
    busy_writer.write(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
    await read_reply(busy_reader, busy)
    await read_reply(busy_reader, busy)
    closing = asyncio.get_running_loop().create_task(server.close())
    # The idle session is told at once.
    assert await read_reply(idle_reader, idle) == (
        "421 4.3.2 Service shutting down, closing transmission channel"
    )
    # The busy one finishes its transaction, then is told.
    busy_writer.write(b"RCPT TO:<b@example.org>\r\nDATA\r\n")
    assert (await read_reply(busy_reader, busy)).startswith("250")
    assert (await read_reply(busy_reader, busy)).startswith("354")
    busy_writer.write(b"Subject: c\r\n\r\nx\r\n.\r\n")
    assert (await read_reply(busy_reader, busy)).startswith("250")
    assert (await read_reply(busy_reader, busy)).startswith("421")
    assert await closing is True
    assert len(plugin.kept) == 1
    # No new connections once closed.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    idle_writer.close()
    busy_writer.close()


async def test_close_cuts_off_sessions_that_take_too_long() -> None:
    server = Server(Keep(), ServerConfig(close_timeout=0.2))
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    parser = ReplyParser()
    await read_reply(reader, parser)
    writer.write(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
    await read_reply(reader, parser)
    assert (await read_reply(reader, parser)).startswith("250 2.1.0")
    # Mid-transaction, the session is given close_timeout, then cut off.
    assert await server.close() is False
    assert await reader.read() == b""
    writer.close()

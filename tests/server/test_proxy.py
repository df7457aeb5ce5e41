"""Proxied listeners on loopback sockets: the PROXY header is read before the greeting, only
from the configured proxies, and its client is the session's remote address and the key
of the per-client limits. (A real HAProxy in front: tests/interop/test_haproxy.py.)"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from smtpx.protocol import Reply, ReplyParser
from smtpx.server import Listener, Server, ServerConfig, Session
from smtpx.server.limits import ClientLimits
from smtpx.testing.clock import run_virtual
from tests.conftest import server_tls_context
from tests.protocol.test_proxy import v2
from tests.server.helpers import Keep

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
V1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 41234 25\r\n"


class Sessions(Keep):
    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[Session] = []

    async def connect(self, session: Session) -> None:
        self.sessions.append(session)


def proxied(**config: object) -> ServerConfig:
    listener = Listener(port=0, proxied=True, proxy_from=config.pop("proxy_from", LOOPBACK))  # type: ignore[arg-type]
    return ServerConfig(listeners=[listener], **config)  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with Server(Sessions(), proxied()) as running:
        yield running


async def talk(port: int, data: bytes, replies: int) -> list[Reply]:
    """Connect, send ``data`` at once, read ``replies`` replies (fewer if it hangs up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    parser, got = ReplyParser(), list[Reply]()
    try:
        while len(got) < replies:
            reply = parser.next_reply()
            if reply is not None:
                got.append(reply)
                continue
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            if not chunk:
                break
            parser.feed(chunk)
    finally:
        writer.close()
    return got


@pytest.mark.parametrize("header", [V1, v2()], ids=["v1", "v2"])
async def test_the_header_names_the_sessions_client(server: Server, header: bytes) -> None:
    # The header and the client's first command arrive together, before the greeting.
    greeting, ehlo, quit_ = await talk(server.ports[0], header + b"EHLO c\r\nQUIT\r\n", 3)
    assert (greeting.code, ehlo.code, quit_.code) == (220, 250, 221)
    plugin = server.plugin
    assert isinstance(plugin, Sessions)
    (session,) = plugin.sessions
    assert session.remote == ("192.0.2.7", 41234)
    assert session.remote_ip == "192.0.2.7"
    assert session.proxy_peer is not None
    assert session.proxy_peer[0] == "127.0.0.1"


async def test_a_local_header_keeps_the_proxys_own_address(server: Server) -> None:
    (greeting,) = await talk(server.ports[0], v2(command=0), 1)
    assert greeting.code == 220
    plugin = server.plugin
    assert isinstance(plugin, Sessions)
    assert plugin.sessions[0].remote_ip == "127.0.0.1"


@pytest.mark.parametrize(
    "data",
    [b"EHLO client.example\r\n", b"PROXY TCP4 192.0.2.7 nonsense\r\n", b"\x16\x03\x01\x00\x05"],
    ids=["smtp", "malformed", "tls"],
)
async def test_no_greeting_without_a_valid_header(server: Server, data: bytes) -> None:
    (reply,) = await talk(server.ports[0], data, 2)
    assert (reply.code, str(reply.enhanced)) == (421, "4.7.0")
    assert "PROXY header" in reply.text
    assert server.stats["refused_proxy_header"] == 1
    plugin = server.plugin
    assert isinstance(plugin, Sessions)
    assert plugin.sessions == []


async def test_only_the_configured_proxies_may_send_a_header() -> None:
    others = (ipaddress.ip_network("127.0.0.2/32"), ipaddress.ip_network("::1/128"))
    plugin = Sessions()
    async with Server(plugin, proxied(proxy_from=others)) as server:
        (reply,) = await talk(server.ports[0], V1 + b"EHLO c\r\n", 2)
    assert (reply.code, reply.text) == (421, "Not a trusted proxy; closing connection")
    assert server.stats["refused_proxy_peer"] == 1
    assert plugin.sessions == []


async def test_client_limits_count_the_real_clients() -> None:
    limits = ClientLimits(max_sessions=1, max_rate=None, exempt=())
    async with Server(Sessions(), proxied(client_limits=limits)) as server:
        port = server.ports[0]
        first = await asyncio.open_connection("127.0.0.1", port)
        first[1].write(V1)
        assert (await first[0].readline()).startswith(b"220 ")
        # Another client through the same proxy is let in; the same client again is not.
        other = b"PROXY TCP4 192.0.2.8 198.51.100.1 5000 25\r\n"
        assert [r.code for r in await talk(port, other + b"QUIT\r\n", 2)] == [220, 221]
        (refused,) = await talk(port, V1, 1)
        assert (refused.code, str(refused.enhanced)) == (421, "4.7.0")
        assert server.stats["refused_sessions_per_client"] == 1
        first[1].close()


def test_a_proxy_that_sends_no_header_is_cut_off_after_proxy_timeout() -> None:
    async def scenario() -> tuple[list[Reply], float]:
        async with Server(Sessions(), proxied(proxy_timeout=5.0)) as server:
            loop = asyncio.get_running_loop()
            start = loop.time()
            got = await talk(server.ports[0], b"", 1)
            return got, loop.time() - start

    (reply,), waited = run_virtual(scenario())
    assert reply.code == 421
    assert 5.0 <= waited < 7.0


async def test_close_ends_connections_still_waiting_for_their_header() -> None:
    server = Server(Sessions(), proxied())
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(V1[:10])
    await asyncio.sleep(0)
    assert await asyncio.wait_for(server.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_an_implicit_tls_listener_cannot_be_proxied() -> None:
    listener = Listener(port=0, implicit_tls=True, proxied=True, proxy_from=LOOPBACK)
    server = Server(Sessions(), ServerConfig(listeners=[listener]))
    server.tls_context = object()  # type: ignore[assignment]
    with pytest.raises(ValueError, match="PROXY headers need a plain listener"):
        await server.start()


async def test_starttls_on_a_proxied_connection(ca: Any) -> None:
    plugin = Sessions()
    config = proxied(tls_context=server_tls_context(ca, "mx.test"))
    async with Server(plugin, config) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        writer.write(V1 + b"EHLO c\r\nSTARTTLS\r\n")
        lines = [await reader.readline()]
        while not lines[-1].startswith(b"220 2.0.0"):  # the greeting, EHLO's lines
            lines.append(await asyncio.wait_for(reader.readline(), 10))
        assert lines[0].startswith(b"220 mx.test")
        client = ssl.create_default_context()
        ca.configure_trust(client)
        await writer.start_tls(client, server_hostname="mx.test")
        writer.write(b"EHLO c\r\n")
        assert (await reader.readline()).startswith(b"250-")
        writer.close()
    (session,) = plugin.sessions
    assert session.remote_ip == "192.0.2.7" and session.tls

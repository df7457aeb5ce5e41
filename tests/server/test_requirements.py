"""Listeners that require TLS and AUTH, over real sockets and real TLS (trustme): every
command but the ones that lead there gets 530 5.7.0 (RFC 3207 section 4, RFC 4954
section 6), while another listener of the same server requires nothing."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from smtpx.auth import Credentials
from smtpx.client import (
    CertificateCheck,
    ClientConfig,
    RejectedSender,
    TlsConfig,
    TlsMode,
    connect,
)
from smtpx.io import memory_pair
from smtpx.protocol import ReplyParser
from smtpx.server import Listener, Server, ServerConfig
from tests.conftest import server_tls_context
from tests.server.test_listeners import ENVELOPE, RESOLVER, AuthKeep

TLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_FIRST = "530 5.7.0 Authentication required"
SUBMISSION = Listener(name="submission", require_tls=True, require_auth=True)
PLAIN = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))])


class Raw:
    """A hand-driven client on a real socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.parser = reader, writer, ReplyParser()

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext | None = None) -> Raw:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="mx.test" if context else None
        )
        raw = cls(reader, writer)
        assert (await raw.send(b""))[0].startswith("220")
        return raw

    async def send(self, data: bytes, count: int = 1) -> list[str]:
        self.writer.write(data)
        got: list[str] = []
        while len(got) < count:
            reply = self.parser.next_reply()
            if reply is not None:
                got.append(str(reply))
                continue
            data = await self.reader.read(4096)
            assert data, f"closed after {got}"
            self.parser.feed(data)
        return got

    async def close(self) -> None:
        assert await self.send(b"QUIT\r\n") == ["221 2.0.0 Bye"]
        self.writer.close()


def tls_server(ca: Any, *listeners: Listener) -> Server:
    config = ServerConfig(listeners=listeners, tls_context=server_tls_context(ca, "mx.test"))
    return Server(AuthKeep(), config)


async def test_everything_waits_for_starttls_then_auth(ca: Any, ca_file: str) -> None:
    async with tls_server(ca, SUBMISSION) as server:
        raw = await Raw.open(server.ports[0])
        ehlo, *refused, noop = await raw.send(
            b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
            b"DATA\r\nBDAT 4 LAST\r\nxyz\nRSET\r\nVRFY a\r\nHELP\r\nAUTH PLAIN AHUAcA==\r\n"
            b"NOOP\r\n",
            10,
        )
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo
        assert refused == [TLS_FIRST] * 8 and noop == "250 2.0.0 Ok"
        assert await raw.send(b"STARTTLS\r\n") == ["220 2.0.0 Ready to start TLS"]
        await raw.writer.start_tls(ssl.create_default_context(cafile=ca_file))
        ehlo, mail, rset, rcpt = await raw.send(
            b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRSET\r\nRCPT TO:<b@example.org>\r\n",
            4,
        )
        assert "AUTH PLAIN LOGIN" in ehlo
        assert [mail, rset, rcpt] == [AUTH_FIRST, "250 2.0.0 Ok", AUTH_FIRST]
        assert await raw.send(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n") == [
            "235 2.7.0 Authentication successful"
        ]
        assert (await raw.send(b"MAIL FROM:<a@example.com>\r\n"))[0].startswith("250")
        await raw.close()
    assert server.stats["tls_sessions"] == 1


async def test_the_client_gets_in_with_tls_and_auth_and_not_without(ca: Any, ca_file: str) -> None:
    verified = TlsConfig(
        mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=ca_file
    )
    async with tls_server(ca, SUBMISSION, Listener()) as server:
        submission, other = server.ports
        async with connect("127.0.0.1", submission, config=PLAIN) as client:
            refused = await client.send(ENVELOPE)
            assert isinstance(refused, RejectedSender) and str(refused.reply) == TLS_FIRST
        async with connect(
            "mx.test",
            submission,
            config=ClientConfig.for_testing(tls=[("", verified)]),
            resolver=RESOLVER,
        ) as client:
            refused = await client.send(ENVELOPE)
            assert isinstance(refused, RejectedSender) and str(refused.reply) == AUTH_FIRST
        async with connect(
            "mx.test",
            submission,
            config=ClientConfig.for_testing(tls=[("", verified)]),
            credentials=Credentials.login("user", "secret"),
            resolver=RESOLVER,
        ) as client:
            assert (await client.send(ENVELOPE)).ok
        # The other listener of the same server requires nothing.
        async with connect("127.0.0.1", other, config=PLAIN) as client:
            assert (await client.send(ENVELOPE)).ok


async def test_implicit_tls_meets_the_tls_requirement(ca: Any, ca_file: str) -> None:
    listener = Listener(implicit_tls=True, require_tls=True, require_auth=True)
    async with tls_server(ca, listener) as server:
        raw = await Raw.open(server.ports[0], ssl.create_default_context(cafile=ca_file))
        ehlo, mail, starttls = await raw.send(
            b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nSTARTTLS\r\n", 3
        )
        assert "AUTH PLAIN LOGIN" in ehlo and "STARTTLS" not in ehlo
        assert mail == AUTH_FIRST and starttls == "503 5.5.1 TLS is already active"
        await raw.close()


async def test_a_listener_that_requires_tls_needs_a_certificate() -> None:
    server = Server(AuthKeep(), ServerConfig(listeners=[Listener(require_tls=True)]))
    with pytest.raises(ValueError, match="wants TLS but no certificate is set"):
        await server.start()
    await server.close()


async def test_serve_stream_takes_the_requirements_of_a_listener_given() -> None:
    client_end, server_end = memory_pair()
    server = Server(AuthKeep(), ServerConfig())
    task = asyncio.get_running_loop().create_task(server.serve_stream(server_end, SUBMISSION))
    client_end.write(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nQUIT\r\n")
    parser = ReplyParser()
    while data := await client_end.read():
        parser.feed(data)
    await asyncio.wait_for(task, 5)
    got = [str(reply) for reply in iter(parser.next_reply, None)]
    assert got[2:] == [TLS_FIRST, "221 2.0.0 Bye"]

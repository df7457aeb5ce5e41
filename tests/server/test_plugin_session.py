"""smtpx.testing.plugin_session: a plugin's session in memory, with TLS emulated (F34)."""

from __future__ import annotations

import base64

import pytest

from smtpx.auth import Credentials, XOAuth2, XOAuth2Server
from smtpx.client import ClientConfig, connect
from smtpx.envelope import Envelope
from smtpx.errors import SMTPXError
from smtpx.protocol import Reply, ReplyParser
from smtpx.server import Offer, Session, Transaction, password_mechanisms
from smtpx.testing import Transcript, plugin_session
from tests.server.helpers import Keep

ENVELOPE = Envelope.create(
    sender="a@example.com", recipients=["b@example.org"], message=b"Subject: x\r\n\r\nx\r\n"
)


class Authenticating(Keep):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, str | None, str | None]] = []

    def extensions(self, session: Session) -> Offer:
        return Offer(auth=password_mechanisms(self.check))

    def check(self, session: Session, username: str, password: str) -> bool:
        return (username, password) == ("user", "secret")

    async def mail_from(self, session: Session, transaction: Transaction) -> None:
        self.seen.append((session.tls, session.tls_version, session.user))


async def test_emulated_tls_lets_the_plugin_authenticate_without_certificates() -> None:
    plugin = Authenticating()
    record = Transcript()
    config = ClientConfig.for_testing(helo_name="client.example")
    credentials = Credentials.login("user", "secret")
    async with (
        plugin_session(plugin, emulate_tls=True, tap=record.record) as running,
        connect("mx.test", config=config, credentials=credentials, stream=running.client) as client,
    ):
        assert client.is_using_tls and client.authenticated
        assert (await client.send(ENVELOPE)).ok
    record.flush()
    assert plugin.seen == [(True, "emulated", "user")]
    assert len(plugin.kept) == 1
    assert "AUTH PLAIN LOGIN" in record.text()
    assert "STARTTLS" not in record.text()  # as after a real upgrade
    assert running.server.stats["tls_sessions"] == 1


async def refused_without_tls(plugin: Authenticating) -> None:
    config = ClientConfig.for_testing(helo_name="client.example")
    credentials = Credentials.login("user", "secret")
    async with (
        plugin_session(plugin) as running,
        connect("mx.test", config=config, credentials=credentials, stream=running.client),
    ):
        pass  # pragma: no cover - connect refuses


async def test_without_emulation_the_password_is_not_sent_in_the_clear() -> None:
    plugin = Authenticating()
    with pytest.raises(SMTPXError, match="mechanism"):
        await refused_without_tls(plugin)
    assert plugin.seen == [] and plugin.kept == []


class OAuth(Keep):
    """Offers XOAUTH2 with a token as long as some providers issue."""

    TOKEN = "eyJ0eXAiOiJKV1Qi." + "t" * 2500

    def extensions(self, session: Session) -> Offer:
        return Offer(auth=[XOAuth2Server(self.check)])

    def check(self, session: Session, username: str, token: str) -> bool:
        return (username, token) == ("user@example.com", self.TOKEN)


async def test_a_long_oauth_token_goes_after_the_auth_command() -> None:
    """The client's initial response would make AUTH longer than the server's command
    line limit (2048 here; SMTP's 512): it goes as the answer to the empty 334, which
    the server reads up to RFC 4954's 12288 octets. Before, this got 500 (line too long)."""
    record = Transcript()
    config = ClientConfig.for_testing(helo_name="client.example")
    credentials = Credentials.xoauth2("user@example.com", OAuth.TOKEN)
    async with (
        plugin_session(OAuth(), emulate_tls=True, tap=record.record) as running,
        connect("mx.test", config=config, credentials=credentials, stream=running.client) as client,
    ):
        assert client.authenticated
    record.flush()
    assert "C: AUTH XOAUTH2\n" in record.text() + "\n"
    assert "S: 235 " in record.text()


async def test_a_long_initial_response_sent_with_the_command_is_taken() -> None:
    """Some clients send the token with the AUTH command, however long (RFC 4954
    section 4 says not to; Dovecot and Gmail refuse the line, their users report):
    accepted."""
    token = base64.b64encode(XOAuth2("user@example.com", OAuth.TOKEN).message()).decode()
    async with plugin_session(OAuth(), emulate_tls=True) as running:
        client = running.client
        parser = ReplyParser()

        async def reply() -> Reply:
            while (got := parser.next_reply()) is None:
                parser.feed(await client.read())
            return got

        assert (await reply()).code == 220
        client.write(b"EHLO client.example\r\n")
        assert (await reply()).code == 250
        client.write(f"AUTH XOAUTH2 {token}\r\n".encode())
        assert str(await reply()) == "235 2.7.0 Authentication successful"
        assert len(token) > 2048  # past the command line limit

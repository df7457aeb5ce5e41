"""Real SMTP clients against ``smtpx.server.Server``: stdlib smtplib, aiosmtplib, swaks,
curl, msmtp, Postfix's smtp-source and Postfix's smtp client.

Each test runs the server on 127.0.0.1 (port 0) in the test's event loop; blocking clients
run in a thread (smtplib) or a subprocess (the command-line tools), so the loop keeps
serving. Every test checks what the server's plugin received (envelope sender,
recipients, message bytes, who authenticated), not only the client's exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from smtpx.auth import XOAuth2Server
from smtpx.envelope import Envelope
from smtpx.server import (
    Listener,
    Offer,
    Plugin,
    Server,
    ServerConfig,
    Session,
    Transaction,
    password_mechanisms,
)
from tests.conftest import require_tool, server_tls_context
from tests.interop.postfix import private_postfix

pytestmark = pytest.mark.interop

USER, PASSWORD = "user", "secret"
# The certificate names the address the tests connect to, and a host name for clients
# that verify a DNS name (curl with --resolve).
CERT_NAMES = ("localhost", "127.0.0.1")
MESSAGE = (
    b"From: sender@example.com\r\n"
    b"To: rcpt@example.org\r\n"
    b"Subject: interop\r\n"
    b"\r\n"
    b"first line\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b"last line\r\n"
)
# 8-bit content: UTF-8 text and a Latin-1 byte (not valid UTF-8), to be kept byte-exact.
EIGHT_BIT = (
    "From: sender@example.com\r\n"
    "To: rcpt@example.org\r\n"
    "Subject: 8bit\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße aus Köln, ταχίστη αλώπηξ, 日本語\r\n"
).encode() + b"raw latin-1: caf\xe9\r\n.dot line\r\nend\r\n"


@dataclass(frozen=True)
class Kept:
    """One accepted message and what the session knew when it arrived."""

    envelope: Envelope
    user: str | None
    tls: bool

    @property
    def sender(self) -> str:
        return str(self.envelope.sender)

    @property
    def recipients(self) -> list[str]:
        return [str(r) for r in self.envelope.recipients]


class Keeper(Plugin):
    """Accepts everything, keeps every envelope, offers PLAIN and LOGIN (user/secret)."""

    hostname = "mx.test"

    def __init__(self) -> None:
        self.kept: list[Kept] = []
        self.auth_attempts: list[tuple[str, str]] = []

    def check(self, session: Session, username: str, password: str) -> bool:
        self.auth_attempts.append((username, password))
        return (username, password) == (USER, PASSWORD)

    def extensions(self, session: Session) -> Offer:
        return Offer(starttls=True, auth=password_mechanisms(self.check))

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        self.kept.append(Kept(envelope.in_memory(), session.user, session.tls))
        return f"Ok: kept {envelope.id}"

    @property
    def messages(self) -> list[bytes]:
        return [k.envelope.message for k in self.kept]


@dataclass
class Running:
    port: int
    plugin: Keeper
    server: Server


@contextlib.asynccontextmanager
async def serve(
    ca: Any,
    *,
    implicit_tls: bool = False,
    require: bool = False,
    plugin: Keeper | None = None,
    **config: Any,
) -> AsyncIterator[Running]:
    """``require``: the listener requires TLS and AUTH, as a submission listener does."""
    plugin = plugin or Keeper()
    listener = Listener(
        host="127.0.0.1",
        port=0,
        implicit_tls=implicit_tls,
        require_tls=require,
        require_auth=require,
    )
    server = Server(
        plugin,
        ServerConfig(
            listeners=[listener],
            tls_context=server_tls_context(ca, *CERT_NAMES),
            **config,
        ),
    )
    async with server:
        yield Running(server.ports[0], plugin, server)


def client_context(ca_file: str) -> ssl.SSLContext:
    """A verifying client context that trusts only the test CA."""
    return ssl.create_default_context(cafile=ca_file)


async def run_tool(*argv: str, stdin: bytes | None = None, timeout: float = 30) -> str:
    """Run a peer tool without blocking the loop the server runs on; its combined output."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = out.decode("utf-8", "replace")
    assert process.returncode == 0, f"{argv[0]} exited {process.returncode}:\n{text}"
    return text


async def in_thread(function: Callable[[], Any]) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(function), 30)


# --- stdlib smtplib ---------------------------------------------------------------------


async def test_smtplib_plain_send(ca: Any) -> None:
    async with serve(ca) as running:

        def client() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as smtp:
                code, _ = smtp.ehlo("client.example")
                assert code == 250
                assert smtp.has_extn("pipelining") and smtp.has_extn("8bitmime")
                assert smtp.has_extn("starttls")
                # RFC 4954 section 4: no AUTH offered before TLS.
                assert not smtp.has_extn("auth")
                assert smtp.mail("sender@example.com")[0] == 250
                assert smtp.rcpt("rcpt@example.org")[0] == 250
                assert smtp.rcpt("second@example.net")[0] == 250
                return smtp.data(MESSAGE)

        code, text = await in_thread(client)
        (kept,) = running.plugin.kept
    assert code == 250 and text.endswith(f"Ok: kept {kept.envelope.id}".encode())
    assert kept.sender == "<sender@example.com>"
    assert kept.recipients == ["rcpt@example.org", "second@example.net"]
    # smtplib dot-stuffed on the way out; the server undid it.
    assert kept.envelope.message == MESSAGE
    assert kept.user is None and not kept.tls


async def test_smtplib_send_message_utf8_recipient(ca: Any) -> None:
    message = EmailMessage(policy=email.policy.SMTPUTF8)
    message["From"] = "sender@example.com"
    message["To"] = "δοκιμή@παράδειγμα.example"
    message["Subject"] = "UTF-8 recipient"
    message.set_content("καλημέρα\n.dot\n")
    async with serve(ca) as running:

        def client() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as smtp:
                smtp.ehlo("client.example")
                assert smtp.has_extn("smtputf8")
                # smtplib adds SMTPUTF8 (and BODY=8BITMIME) itself for the UTF-8 address.
                return smtp.send_message(message)

        refused = await in_thread(client)
        (kept,) = running.plugin.kept
    assert refused == {}
    assert kept.sender == "<sender@example.com>"
    assert kept.recipients == ["δοκιμή@παράδειγμα.example"]
    assert kept.envelope.sender_args.smtputf8
    parsed = email.message_from_bytes(kept.envelope.message, policy=email.policy.SMTPUTF8)
    assert parsed["To"] == "δοκιμή@παράδειγμα.example"
    assert parsed["Content-Transfer-Encoding"] == "8bit"
    # The 8-bit body, byte for byte (smtplib dot-stuffed ".dot"; the server undid it).
    assert kept.envelope.message.endswith("\r\n\r\nκαλημέρα\r\n.dot\r\n".encode())


@pytest.mark.parametrize("initial_response", [True, False], ids=["initial", "no-initial"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_smtplib_starttls_and_auth(
    ca: Any, ca_file: str, mechanism: str, initial_response: bool
) -> None:
    async with serve(ca) as running:

        def client() -> tuple[tuple[int, bytes], str, dict[str, tuple[int, bytes]]]:
            with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as smtp:
                smtp.ehlo("client.example")
                assert not smtp.has_extn("auth")
                code, _ = smtp.starttls(context=client_context(ca_file))
                assert code == 220
                smtp.ehlo("client.example")
                assert not smtp.has_extn("starttls")
                offered = smtp.esmtp_features["auth"]
                smtp.user, smtp.password = USER, PASSWORD
                # Force the mechanism (smtp.login would pick one by its own preference).
                method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
                reply = smtp.auth(mechanism, method, initial_response_ok=initial_response)
                refused = smtp.sendmail("sender@example.com", ["rcpt@example.org"], MESSAGE)
                return reply, offered, refused

        (code, text), offered, refused = await in_thread(client)
        (kept,) = running.plugin.kept
    assert code == 235, text
    assert offered.split() == ["PLAIN", "LOGIN"]
    assert refused == {}
    assert running.plugin.auth_attempts == [(USER, PASSWORD)]
    assert kept.user == USER and kept.tls
    assert kept.sender == "<sender@example.com>" and kept.recipients == ["rcpt@example.org"]
    assert kept.envelope.message == MESSAGE


async def test_smtplib_login_picks_a_mechanism(ca: Any, ca_file: str) -> None:
    async with serve(ca) as running:

        def client() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as smtp:
                smtp.starttls(context=client_context(ca_file))
                reply: tuple[int, bytes] = smtp.login(USER, PASSWORD)
                smtp.sendmail("sender@example.com", ["rcpt@example.org"], MESSAGE)
                return reply

        code, _ = await in_thread(client)
        (kept,) = running.plugin.kept
    assert code == 235
    assert kept.user == USER and kept.envelope.message == MESSAGE


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_smtplib_refused_password_is_535(ca: Any, ca_file: str, mechanism: str) -> None:
    async with serve(ca) as running:

        def client() -> tuple[int, bytes | str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as smtp:
                smtp.starttls(context=client_context(ca_file))
                smtp.ehlo("client.example")
                smtp.user, smtp.password = USER, "wrong"
                method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
                with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                    smtp.auth(mechanism, method)
                # The session goes on: the right password still works.
                smtp.password = PASSWORD
                ok = smtp.auth(mechanism, method)
                smtp.sendmail("sender@example.com", ["rcpt@example.org"], MESSAGE)
                return refused.value.smtp_code, refused.value.smtp_error, ok

        code, text, (ok_code, _) = await in_thread(client)
        (kept,) = running.plugin.kept
    assert code == 535 and isinstance(text, bytes) and text.startswith(b"5.7.8"), (code, text)
    assert ok_code == 235
    assert running.plugin.auth_attempts == [(USER, "wrong"), (USER, PASSWORD)]
    assert kept.user == USER


async def test_smtplib_bare_commands(ca: Any) -> None:
    async with serve(ca) as running:

        def client() -> list[tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as smtp:
                return [
                    smtp.docmd("HELO"),  # no domain
                    smtp.docmd("RCPT TO:<a@b.example>"),  # no MAIL yet
                    smtp.docmd("DATA"),
                    smtp.docmd("AUTH PLAIN"),  # not offered without TLS
                    smtp.docmd("NOOP"),
                ]

        answers = await in_thread(client)
        assert running.plugin.kept == []
        assert running.plugin.auth_attempts == []
    codes = [code for code, _ in answers]
    assert codes[:3] == [501, 503, 503], answers
    assert codes[3] in (502, 503, 504), answers  # refused, whichever way
    assert codes[4] == 250


# --- aiosmtplib ---------------------------------------------------------------------------


async def test_aiosmtplib_starttls_login_and_send(ca: Any, ca_file: str) -> None:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "rcpt@example.org, other@example.net"
    message["Subject"] = "aiosmtplib"
    message.set_content("hello\n.dot line\n")
    async with serve(ca) as running:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=running.port,
            start_tls=True,
            tls_context=client_context(ca_file),
            timeout=10,
        )
        async with client:
            await client.login(USER, PASSWORD)  # says EHLO again after STARTTLS first
            assert client.supports_extension("auth")
            assert not client.supports_extension("starttls")
            errors, text = await client.send_message(message)
        (kept,) = running.plugin.kept
    assert errors == {}
    assert text.endswith(f"Ok: kept {kept.envelope.id}")
    assert kept.user == USER and kept.tls
    assert kept.sender == "<sender@example.com>"
    assert kept.recipients == ["rcpt@example.org", "other@example.net"]
    parsed = email.message_from_bytes(kept.envelope.message, policy=email.policy.default)
    assert parsed["Subject"] == "aiosmtplib"
    body = parsed.get_body()
    assert body is not None and body.get_content() == "hello\r\n.dot line\r\n"


async def test_aiosmtplib_implicit_tls(ca: Any, ca_file: str) -> None:
    async with serve(ca, implicit_tls=True) as running:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=running.port,
            use_tls=True,
            tls_context=client_context(ca_file),
            timeout=10,
        ) as client:
            await client.ehlo()
            # Already under TLS: no STARTTLS, and AUTH is offered.
            assert not client.supports_extension("starttls")
            assert client.supports_extension("auth")
            await client.login(USER, PASSWORD)
            errors, _ = await client.sendmail("sender@example.com", ["rcpt@example.org"], MESSAGE)
        (kept,) = running.plugin.kept
    assert errors == {}
    assert kept.tls and kept.user == USER
    assert kept.sender == "<sender@example.com>" and kept.recipients == ["rcpt@example.org"]
    assert kept.envelope.message == MESSAGE


# --- swaks --------------------------------------------------------------------------------


@pytest.mark.parametrize("verify", [True, False], ids=["ca", "no-verify"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_swaks_tls_auth_pipeline_8bit(
    ca: Any, ca_file: str, tmp_path: Path, mechanism: str, verify: bool
) -> None:
    swaks = require_tool("swaks", "TLS", "Basic AUTH")
    data = tmp_path / "data.eml"
    # swaks ends the content with CRLF "." CRLF itself (an extra CRLF if the file has one).
    data.write_bytes(EIGHT_BIT.removesuffix(b"\r\n"))
    tls = ["--tls-verify", "--tls-ca-path", ca_file] if verify else []
    async with serve(ca) as running:
        output = await run_tool(
            swaks,
            "--server",
            f"127.0.0.1:{running.port}",
            "--ehlo",
            "swaks.example",
            "--from",
            "sender@example.com",
            "--to",
            "a@example.org,b@example.org",
            "--tls",
            *tls,
            "--auth",
            mechanism,
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
            "--pipeline",
            "--data",
            f"@{data}",
        )
        kept_all = list(running.plugin.kept)
    assert "235 2.7.0" in output, output
    # PIPELINING in use: swaks sent DATA before reading the reply to MAIL FROM.
    assert output.index("~> DATA") < output.index("<~  250 2.1.0"), output
    (kept,) = kept_all
    assert kept.user == USER and kept.tls
    assert kept.sender == "<sender@example.com>"
    assert kept.recipients == ["a@example.org", "b@example.org"]
    # swaks dot-stuffed the ".dot line"; the server undid it and kept every byte.
    assert kept.envelope.message == EIGHT_BIT


async def test_swaks_refused_password(ca: Any) -> None:
    swaks = require_tool("swaks", "TLS", "Basic AUTH")
    async with serve(ca) as running:
        process = await asyncio.create_subprocess_exec(
            swaks,
            "--server",
            f"127.0.0.1:{running.port}",
            "--from",
            "sender@example.com",
            "--to",
            "a@example.org",
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            "wrong",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert running.plugin.kept == []
        assert running.plugin.auth_attempts == [(USER, "wrong")]
    assert process.returncode != 0
    assert b"535 5.7.8" in out, out


async def test_swaks_on_a_listener_that_requires_tls_and_auth(ca: Any, ca_file: str) -> None:
    swaks = require_tool("swaks", "TLS", "Basic AUTH")
    common = ["--from", "sender@example.com", "--to", "a@example.org", "--pipeline"]
    async with serve(ca, require=True) as running:
        server = ["--server", f"127.0.0.1:{running.port}"]
        # Neither: MAIL gets 530, and swaks gives up.
        plain = await asyncio.create_subprocess_exec(
            swaks,
            *server,
            *common,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(plain.communicate(), 30)
        assert plain.returncode != 0
        assert b"530 5.7.0 Must issue a STARTTLS command first" in out, out
        # TLS but no AUTH: still 530, now for AUTH.
        tls_only = await asyncio.create_subprocess_exec(
            swaks,
            *server,
            *common,
            "--tls",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(tls_only.communicate(), 30)
        assert tls_only.returncode != 0
        assert b"530 5.7.0 Authentication required" in out, out
        # Both: accepted.
        output = await run_tool(
            swaks,
            *server,
            *common,
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            ca_file,
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
        )
        kept_all = list(running.plugin.kept)
    assert "250 2.0.0 Ok: kept" in output, output
    (kept,) = kept_all
    assert kept.user == USER and kept.tls and kept.recipients == ["a@example.org"]


# --- curl ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["default", "PLAIN", "LOGIN"])
async def test_curl_starttls_auth(ca: Any, ca_file: str, tmp_path: Path, mechanism: str) -> None:
    curl = require_tool("curl", "smtp", "smtps", "SSL")
    upload = tmp_path / "message.eml"
    upload.write_bytes(MESSAGE)
    login = [] if mechanism == "default" else ["--login-options", f"AUTH={mechanism}"]
    async with serve(ca) as running:
        port = running.port
        await run_tool(
            curl,
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            # Verify the DNS name in the certificate, while connecting to 127.0.0.1.
            "--resolve",
            f"localhost:{port}:127.0.0.1",
            f"smtp://localhost:{port}/curl.example",
            "--ssl-reqd",
            "--cacert",
            ca_file,
            "--mail-from",
            "sender@example.com",
            "--mail-rcpt",
            "rcpt@example.org",
            "--mail-rcpt",
            "other@example.net",
            "--user",
            f"{USER}:{PASSWORD}",
            *login,
            "-T",
            str(upload),
        )
        (kept,) = running.plugin.kept
    assert kept.user == USER and kept.tls
    assert kept.sender == "<sender@example.com>"
    assert kept.recipients == ["rcpt@example.org", "other@example.net"]
    assert kept.envelope.message == MESSAGE


async def test_curl_implicit_tls_by_ip_address(ca: Any, ca_file: str, tmp_path: Path) -> None:
    curl = require_tool("curl", "smtp", "smtps", "SSL")
    upload = tmp_path / "message.eml"
    upload.write_bytes(MESSAGE)
    async with serve(ca, implicit_tls=True) as running:
        await run_tool(
            curl,
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            f"smtps://127.0.0.1:{running.port}/curl.example",  # the certificate's IP SAN
            "--cacert",
            ca_file,
            "--mail-from",
            "sender@example.com",
            "--mail-rcpt",
            "rcpt@example.org",
            "--user",
            f"{USER}:{PASSWORD}",
            "-T",
            str(upload),
        )
        (kept,) = running.plugin.kept
    assert kept.user == USER and kept.tls
    assert kept.recipients == ["rcpt@example.org"]
    assert kept.envelope.message == MESSAGE


# --- smtp-source --------------------------------------------------------------------------


async def test_smtp_source_2000_messages_20_sessions(ca: Any) -> None:
    source = require_tool("smtp-source")
    async with serve(ca) as running:
        await run_tool(
            source,
            "-s",
            "20",
            "-m",
            "2000",
            "-l",
            "4096",
            "-f",
            "source@example.com",
            "-t",
            "sink@example.org",
            f"127.0.0.1:{running.port}",
            timeout=60,
        )
        kept = list(running.plugin.kept)
        stats = dict(running.server.stats)
    assert len(kept) == 2000
    assert stats.get("messages") == 2000
    assert {k.sender for k in kept} == {"<source@example.com>"}
    assert {tuple(k.recipients) for k in kept} == {("sink@example.org",)}
    # smtp-source sends one generated body each time under a fresh Message-Id: every
    # message arrived once and intact.
    bodies = {hashlib.sha256(k.envelope.message.split(b"\r\n\r\n", 1)[1]).digest() for k in kept}
    assert len(bodies) == 1
    assert all(len(k.envelope.message.split(b"\r\n\r\n", 1)[1]) >= 4096 for k in kept)
    ids = {email.message_from_bytes(k.envelope.message)["Message-Id"] for k in kept}
    assert None not in ids
    assert len(ids) == 2000


# --- msmtp --------------------------------------------------------------------------------


def msmtp_argv(msmtp: str, port: int, ca_file: str, *auth: str) -> list[str]:
    """msmtp over STARTTLS, verifying the test CA, with ``auth``'s options; the envelope
    from the arguments, the message on stdin."""
    return [
        msmtp,
        "--host=127.0.0.1",
        f"--port={port}",
        "--domain=msmtp.example",
        "--set-date-header=off",  # (it would add a Date field: the message is checked whole)
        "--set-msgid-header=off",
        "--tls=on",
        "--tls-starttls=on",
        f"--tls-trust-file={ca_file}",
        *auth,
        "--from=sender@example.com",
        "--",
        "a@example.org",
        "b@example.org",
    ]


async def test_msmtp_starttls_auth_pipelining(ca: Any, ca_file: str) -> None:
    msmtp = require_tool("msmtp")
    auth = ["--auth=plain", f"--user={USER}", f"--passwordeval=echo {PASSWORD}"]
    async with serve(ca) as running:
        await run_tool(*msmtp_argv(msmtp, running.port, ca_file, *auth), stdin=EIGHT_BIT)
        kept_all = list(running.plugin.kept)
    (kept,) = kept_all
    assert kept.user == USER and kept.tls
    assert kept.sender == "<sender@example.com>"
    assert kept.recipients == ["a@example.org", "b@example.org"]
    assert kept.envelope.message == EIGHT_BIT


class OAuthKeeper(Keeper):
    """Takes an XOAUTH2 token as long as some providers issue (2.5 KB)."""

    TOKEN = "eyJ0eXAiOiJKV1Qi." + "t" * 2500

    def extensions(self, session: Session) -> Offer:
        return Offer(
            starttls=True, auth=[XOAuth2Server(self.check_token, on_success=Session.login)]
        )

    def check_token(self, session: Session, username: str, token: str) -> bool:
        return (username, token) == (USER, self.TOKEN)


async def test_msmtp_with_a_long_xoauth2_token(ca: Any, ca_file: str, tmp_path: Path) -> None:
    msmtp = require_tool("msmtp")
    token = tmp_path / "token"
    token.write_text(OAuthKeeper.TOKEN)
    auth = ["--auth=xoauth2", f"--user={USER}", f"--passwordeval=cat {token}"]
    async with serve(ca, plugin=OAuthKeeper()) as running:
        await run_tool(*msmtp_argv(msmtp, running.port, ca_file, *auth), stdin=MESSAGE)
        kept_all = list(running.plugin.kept)
    (kept,) = kept_all
    assert kept.user == USER and kept.envelope.message == MESSAGE


# --- clients that must wait their turn ----------------------------------------------------


class Strict(Keeper):
    """Sends away clients that talk before the greeting (after a short pause) or before
    a reply they must wait for (RFC 2920)."""

    def greeting_delay(self, session: Session) -> float:
        return 0.2

    def enforce_sync(self, session: Session) -> bool:
        return True


async def test_real_clients_wait_their_turn(ca: Any, ca_file: str, tmp_path: Path) -> None:
    """With the pause before the greeting and the pipelining check on, the real clients
    (swaks and msmtp pipelining, smtplib, aiosmtplib, smtp-source) are all served."""
    swaks = require_tool("swaks", "TLS", "Basic AUTH")
    msmtp = require_tool("msmtp")
    source = require_tool("smtp-source")
    data = tmp_path / "data.eml"
    data.write_bytes(MESSAGE)
    async with serve(ca, plugin=Strict()) as running:
        port = running.port
        address = f"127.0.0.1:{port}"
        await run_tool(
            swaks, "--server", address, "--from", "s@example.com", "--to", "r@example.org",
            "--tls", "--pipeline", "--data", f"@{data}",
        )  # fmt: skip
        auth = ["--auth=plain", f"--user={USER}", f"--passwordeval=echo {PASSWORD}"]
        await run_tool(*msmtp_argv(msmtp, port, ca_file, *auth), stdin=MESSAGE)

        def with_smtplib() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("s@example.com", ["r@example.org"], MESSAGE)

        await in_thread(with_smtplib)
        await aiosmtplib.send(
            MESSAGE, sender="s@example.com", recipients=["r@example.org"],
            hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
        )  # fmt: skip
        await run_tool(
            source, "-s", "5", "-m", "20", "-f", "s@example.com", "-t", "r@example.org", address
        )
        kept = len(running.plugin.kept)
        stats = dict(running.server.stats)
    assert stats.get("early_talkers_greeting", 0) == 0
    assert stats.get("early_talkers_pipelining", 0) == 0
    assert kept == 24


async def test_postfix_delivering_to_the_server_waits_its_turn(ca: Any) -> None:
    """Postfix's smtp client (a private Postfix relaying to the server) under the same
    checks: it waits for the greeting, pipelines only where RFC 2920 allows, and its
    message arrives; no early talker counted."""
    async with serve(ca, plugin=Strict()) as running:
        with private_postfix(running.port) as postfix:

            def submit() -> None:
                with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
                    client.sendmail("s@example.com", ["r@example.org"], MESSAGE)

            await in_thread(submit)
            for _ in range(600):  # Postfix's queue manager picks it up
                if running.plugin.kept:
                    break
                await asyncio.sleep(0.05)
        kept = list(running.plugin.kept)
        stats = dict(running.server.stats)
    (message,) = kept
    assert message.sender == "<s@example.com>" and message.recipients == ["r@example.org"]
    assert message.envelope.message.endswith(MESSAGE.split(b"\r\n\r\n", 1)[1])
    assert stats.get("early_talkers_greeting", 0) == 0
    assert stats.get("early_talkers_pipelining", 0) == 0

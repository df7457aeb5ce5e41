"""The smtpx client against real servers: aiosmtpd (STARTTLS, AUTH, SMTPUTF8, SIZE) and
Postfix's smtp-sink (pipelining, fault injection)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from smtpx.auth import Credentials, Login, Plain
from smtpx.client import (
    Accepted,
    CertificateCheck,
    ClientConfig,
    RejectedAllRecipients,
    TlsConfig,
    TlsMode,
    Unsendable,
    connect,
)
from smtpx.envelope import Envelope
from smtpx.errors import AuthFailed
from smtpx.io import StaticResolver
from tests.conftest import require_tool, server_tls_context

RESOLVER = StaticResolver({"mx.test": ["127.0.0.1"]})
MESSAGE = b"Subject: interop\r\n\r\nfirst line\r\n.dot line\r\n"


class Collect:
    """An aiosmtpd handler that keeps what it gets."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: kept"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"user", b"secret")
    return AuthResult(success=ok, handled=False)


@contextlib.contextmanager
def aiosmtpd_server(ca: Any, **kwargs: Any) -> Iterator[tuple[int, Collect]]:
    handler = Collect()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),  # aiosmtpd's start() probes the port, so 0 will not do
        tls_context=server_tls_context(ca, "mx.test"),
        server_hostname="mx.test",
        **kwargs,
    )
    controller.start()
    try:
        yield controller.port, handler
    finally:
        controller.stop()


def verified(ca_file: str) -> ClientConfig:
    policy = TlsConfig(mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=ca_file)
    return ClientConfig.for_testing(tls=[("", policy)])


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_aiosmtpd_starttls_and_auth(ca: Any, ca_file: str, mechanism: str) -> None:
    credentials = Credentials.custom(
        Plain("user", "secret") if mechanism == "PLAIN" else Login("user", "secret")
    )
    envelope = Envelope.create(
        sender="a@example.com", recipients=["b@example.org"], message=MESSAGE
    )
    with aiosmtpd_server(
        ca, require_starttls=True, auth_required=True, authenticator=authenticator
    ) as (port, handler):
        async with connect(
            "mx.test", port, config=verified(ca_file), credentials=credentials, resolver=RESOLVER
        ) as client:
            assert client.is_using_tls and client.authenticated
            status = await client.send(envelope)
            assert isinstance(status, Accepted) and status.remote_id == "Ok: kept"
        (got,) = handler.envelopes
        assert got.mail_from == "a@example.com" and got.rcpt_tos == ["b@example.org"]
        assert got.content == MESSAGE


async def test_aiosmtpd_bad_password(ca: Any, ca_file: str) -> None:
    credentials = Credentials.login("user", "wrong")
    with (
        aiosmtpd_server(ca, require_starttls=True, authenticator=authenticator) as (port, _),
        pytest.raises(AuthFailed, match="535"),
    ):
        await connect(
            "mx.test", port, config=verified(ca_file), credentials=credentials, resolver=RESOLVER
        )


async def test_aiosmtpd_smtputf8(ca: Any, ca_file: str) -> None:
    envelope = Envelope.create(
        sender="δοκιμή@example.com", recipients=["χρήστης@example.org"], message=MESSAGE
    )
    with aiosmtpd_server(ca, enable_SMTPUTF8=True) as (port, handler):
        async with connect("mx.test", port, config=verified(ca_file), resolver=RESOLVER) as client:
            assert client.supports("SMTPUTF8")
            assert (await client.send(envelope)).ok
    (got,) = handler.envelopes
    assert got.mail_from == "δοκιμή@example.com"
    assert "SMTPUTF8" in got.mail_options


async def test_aiosmtpd_size(ca: Any, ca_file: str) -> None:
    small = Envelope.create(sender="a@example.com", recipients=["b@example.org"], message=MESSAGE)
    big = Envelope.create(
        sender="a@example.com", recipients=["b@example.org"], message=MESSAGE + b"x" * 200 + b"\r\n"
    )
    with aiosmtpd_server(ca, data_size_limit=200) as (port, handler):
        async with connect("mx.test", port, config=verified(ca_file), resolver=RESOLVER) as client:
            assert client.extensions.size == 200
            assert isinstance(await client.send(big), Unsendable)
            assert (await client.send(small)).ok
    assert len(handler.envelopes) == 1
    assert f"SIZE={len(MESSAGE)}" in handler.envelopes[0].mail_options


# --- Postfix smtp-sink ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def smtp_sink(tmp_path: Path, *options: str) -> Iterator[tuple[int, Path]]:
    sink = require_tool("smtp-sink")
    # smtp-sink drops root privileges before writing its dump: give it a directory the
    # unprivileged user can reach (pytest's tmp_path sits under a 0700 directory).
    shared = Path(tempfile.mkdtemp(prefix="smtpx-sink-"))
    shared.chmod(0o777)
    dump = shared / "dump"
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [sink, *user, "-D", str(dump), *options, f"127.0.0.1:{port}", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"smtp-sink did not start: {process.stdout.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.02)
        yield port, dump
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(shared, ignore_errors=True)


async def test_smtp_sink_pipelining(tmp_path: Path) -> None:
    envelope = Envelope.create(
        sender="a@example.com", recipients=["b@example.org", "c@example.org"], message=MESSAGE
    )
    config = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))])
    with smtp_sink(tmp_path) as (port, dump):
        async with connect("127.0.0.1", port, config=config) as client:
            assert client.supports("PIPELINING")
            for _ in range(50):
                status = await client.send(envelope)
                assert status.ok, status
        text = ""
        for _ in range(100):  # smtp-sink appends to its dump as each transaction ends
            text = dump.read_text(errors="replace") if dump.exists() else ""
            if text.count("Subject: interop") == 50:
                break
            await asyncio.sleep(0.02)
    assert text.count("Subject: interop") == 50
    assert text.count("X-Rcpt-Args: <b@example.org>") == 50
    assert text.count("X-Rcpt-Args: <c@example.org>") == 50
    # smtp-sink stores what it unstuffed: the dot line arrived as sent.
    assert text.count("\n.dot line") == 50 and "..dot line" not in text


async def test_smtp_sink_refuses_every_recipient(tmp_path: Path) -> None:
    envelope = Envelope.create(
        sender="a@example.com", recipients=["b@example.org"], message=MESSAGE
    )
    config = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))])
    with smtp_sink(tmp_path, "-r", "RCPT") as (port, _):
        async with connect("127.0.0.1", port, config=config) as client:
            first = await client.send(envelope)
            second = await client.send(envelope)
    for status in (first, second):
        assert isinstance(status, RejectedAllRecipients)
        assert status.reply.code == 450 and not status.permanent

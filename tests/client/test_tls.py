"""TLS policy per destination, with real handshakes (trustme certificates) on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from smtpx.client import CertificateCheck, ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.errors import SessionError, TlsRequiredError
from smtpx.io import StaticResolver
from smtpx.testing import Handler, ScriptedServer
from tests.conftest import server_tls_context

RESOLVER = StaticResolver({"mx.test": ["127.0.0.1"], "secure.mx.test": ["127.0.0.1"]})
MESSAGE = Envelope.create(
    sender="a@example.com", recipients=["b@example.org"], message=b"Subject: tls\r\n\r\nhi\r\n"
)


def config(*policies: tuple[str, TlsConfig]) -> ClientConfig:
    return ClientConfig.for_testing(tls=policies)


async def send_via(server: ScriptedServer, cfg: ClientConfig, host: str = "mx.test") -> bool:
    async with connect(host, server.port, config=cfg, resolver=RESOLVER) as client:
        status = await client.send(MESSAGE)
        assert status.ok
        return client.is_using_tls


async def test_required_and_verified(ca: Any, ca_file: str) -> None:
    tls = server_tls_context(ca, "mx.test")
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=tls) as server:
        policy = TlsConfig(
            mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=ca_file
        )
        assert await send_via(server, config(("", policy)))
    assert server.messages() == [b"Subject: tls\r\n\r\nhi\r\n"]


async def test_name_mismatch_fails_when_verifying(ca: Any, ca_file: str) -> None:
    tls = server_tls_context(ca, "other.test")
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=tls) as server:
        policy = TlsConfig(
            mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=ca_file
        )
        with pytest.raises(SessionError, match="TLS handshake"):
            await send_via(server, config(("", policy)))
    assert server.messages() == []


async def test_untrusted_ca_fails_when_verifying(ca: Any) -> None:
    tls = server_tls_context(ca, "mx.test")
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=tls) as server:
        policy = TlsConfig(mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY)
        with pytest.raises(SessionError, match="certificate verify failed"):
            await send_via(server, config(("", policy)))


async def test_name_mismatch_proceeds_when_ignoring(ca: Any) -> None:
    tls = server_tls_context(ca, "other.test")
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=tls) as server:
        policy = TlsConfig(mode=TlsMode.IF_AVAILABLE, certificate=CertificateCheck.IGNORE)
        assert await send_via(server, config(("", policy)))
    assert len(server.messages()) == 1


async def test_implicit_tls(ca: Any, ca_file: str) -> None:
    tls = server_tls_context(ca, "mx.test")
    async with ScriptedServer(Handler, tls_context=tls, implicit_tls=True) as server:
        policy = TlsConfig(
            mode=TlsMode.IMPLICIT, certificate=CertificateCheck.VERIFY, ca_file=ca_file
        )
        assert await send_via(server, config(("", policy)))
    assert len(server.messages()) == 1


async def test_required_without_starttls_fails_and_quits() -> None:
    async with ScriptedServer(Handler) as server:
        with pytest.raises(TlsRequiredError, match=r"mx\.test"):
            await send_via(server, config(("", TlsConfig(mode=TlsMode.REQUIRED))))
    assert server.messages() == []


async def test_always_try_falls_back_to_plaintext() -> None:
    async with ScriptedServer(Handler) as server:
        assert not await send_via(server, config(("", TlsConfig(mode=TlsMode.ALWAYS_TRY))))
    assert len(server.messages()) == 1


async def test_none_never_starts_tls(ca: Any) -> None:
    tls = server_tls_context(ca, "mx.test")
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=tls) as server:
        assert not await send_via(server, config(("", TlsConfig(mode=TlsMode.NONE))))


async def test_policy_is_chosen_by_domain_suffix(ca: Any, ca_file: str) -> None:
    tls = server_tls_context(ca, "secure.mx.test", "mx.test")
    strict = TlsConfig(mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=ca_file)
    cfg = config(("secure.mx.test", strict), ("", TlsConfig(mode=TlsMode.NONE)))
    assert cfg.tls_for("secure.mx.test") is strict
    assert cfg.tls_for("x.secure.mx.test") is strict
    assert cfg.tls_for("notsecure.mx.test").mode is TlsMode.NONE
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=tls) as server:
        assert await send_via(server, cfg, "secure.mx.test")
        assert not await send_via(server, cfg, "mx.test")


def test_unmatched_host_gets_no_tls() -> None:
    cfg = config(("example.com", TlsConfig(mode=TlsMode.REQUIRED)))
    assert cfg.tls_for("example.org").mode is TlsMode.NONE
    assert cfg.tls_for("EXAMPLE.COM.").mode is TlsMode.REQUIRED

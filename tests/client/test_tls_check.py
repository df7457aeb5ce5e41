"""TlsConfig.check: a certificate check of the caller's own after the STARTTLS step (what
DANE and MTA-STS plug into), and the connection cache's per-route TLS policy hook. Real
handshakes on 127.0.0.1 with trustme certificates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509

from smtpx.client import (
    CacheConfig,
    CertificateCheck,
    ClientConfig,
    ConnectionCache,
    PeerTls,
    TlsConfig,
    TlsMode,
    connect,
)
from smtpx.envelope import Envelope, HostPort
from smtpx.errors import ClientError, NoHopAvailable, TlsPolicyError, TlsRequiredError
from smtpx.io import StaticResolver
from smtpx.testing import Handler, ScriptedServer
from tests.conftest import server_tls_context

RESOLVER = StaticResolver({"mx.test": ["127.0.0.1"]})
MESSAGE = Envelope.create(
    sender="a@example.com", recipients=["b@example.org"], message=b"Subject: t\r\n\r\nhi\r\n"
)


@dataclass(eq=False)
class Recorder:
    """A check that records what it is shown and refuses when told to."""

    refuse: bool = False
    seen: list[PeerTls] = field(default_factory=list)
    failures: list[ClientError] = field(default_factory=list)

    def verify(self, peer: PeerTls) -> None:
        self.seen.append(peer)
        if self.refuse:
            raise TlsPolicyError(f"{peer.host}: refused by the test check")

    def failed(self, peer: PeerTls, error: ClientError) -> None:
        self.seen.append(peer)
        self.failures.append(error)


def config(tls: TlsConfig) -> ClientConfig:
    return ClientConfig.for_testing(tls=[("", tls)])


async def send(server: ScriptedServer, tls: TlsConfig) -> bool:
    """Send MESSAGE; whether the session was encrypted."""
    async with connect("mx.test", server.port, config=config(tls), resolver=RESOLVER) as client:
        assert (await client.send(MESSAGE)).ok
        return client.is_using_tls


async def test_the_check_sees_the_presented_chain(ca: Any) -> None:
    intermediate = ca.create_child_ca()
    context = server_tls_context(intermediate, "mx.test")
    check = Recorder()
    tls = TlsConfig(mode=TlsMode.REQUIRED, certificate=CertificateCheck.IGNORE, check=check)
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=context) as server:
        assert await send(server, tls)
    [peer] = check.seen
    assert peer.encrypted and peer.version is not None and peer.version.startswith("TLS")
    assert peer.host == "mx.test" and peer.remote == ("127.0.0.1", server.port)
    # The leaf and the intermediate, as the server sent them (leaf first).
    leaf, issuer = (x509.load_der_x509_certificate(der) for der in peer.chain)
    assert leaf.subject.rfc4514_string().startswith("OU=Testing cert")
    assert leaf.issuer == issuer.subject
    assert issuer.subject == x509.load_pem_x509_certificate(intermediate.cert_pem.bytes()).subject


async def test_a_refusing_check_ends_the_session_before_mail(ca: Any) -> None:
    check = Recorder(refuse=True)
    tls = TlsConfig(mode=TlsMode.REQUIRED, check=check)
    context = server_tls_context(ca, "mx.test")
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=context) as server:
        with pytest.raises(TlsPolicyError, match="refused by the test check"):
            await connect("mx.test", server.port, config=config(tls), resolver=RESOLVER)
    assert server.messages() == []
    assert [h._mail for h in server.handlers] == [None]  # not even MAIL FROM


async def test_no_starttls_where_required_is_reported_to_the_check() -> None:
    check = Recorder()
    tls = TlsConfig(mode=TlsMode.REQUIRED, check=check)
    async with ScriptedServer(Handler) as server:
        with pytest.raises(TlsRequiredError):
            await connect("mx.test", server.port, config=config(tls), resolver=RESOLVER)
    [error] = check.failures
    assert isinstance(error, TlsRequiredError)
    assert not check.seen[0].encrypted and check.seen[0].chain == ()


async def test_opportunistic_plaintext_is_shown_to_the_check() -> None:
    check = Recorder()
    tls = TlsConfig(mode=TlsMode.IF_AVAILABLE, check=check)
    async with ScriptedServer(Handler) as server:
        assert not await send(server, tls)
    [peer] = check.seen
    assert not peer.encrypted and peer.chain == () and check.failures == []


async def test_the_cache_asks_the_tls_policy_per_destination_and_route(ca: Any) -> None:
    context = server_tls_context(ca, "mx.test")
    check = Recorder(refuse=True)
    asked: list[tuple[HostPort, str | None]] = []

    async def policy(address: HostPort, route: str | None) -> TlsConfig | None:
        asked.append((address, route))
        if route == "strict.test":
            return TlsConfig(mode=TlsMode.REQUIRED, check=check)
        return None  # the client configuration's

    plain = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))])
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=context) as server:
        hop = HostPort("mx.test", server.port)
        async with ConnectionCache(CacheConfig(), plain, resolver=RESOLVER) as cache:
            cache.tls_policy = policy
            async with cache.connection([hop], route="lax.test") as (_, client):
                assert not client.is_using_tls  # the configuration's: no TLS
                assert (await client.send(MESSAGE)).ok
            with pytest.raises(NoHopAvailable, match="refused by the test check"):
                async with cache.connection([hop], route="strict.test"):
                    pass
    assert asked == [(hop, "lax.test"), (hop, "strict.test")]
    assert len(server.messages()) == 1 and check.seen[0].encrypted

"""Helpers for the outbound TLS policy tests: a TLS sink, TLSA data, an HTTPS policy host,
and an MTA whose routing goes through the DNS lab."""

from __future__ import annotations

import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smtpx.client import connect
from smtpx.mta.app import Mta
from smtpx.spool.message import SpooledMessage
from smtpx.testing import Handler, ScriptedServer
from tests.mta.helpers import PLAIN, message, wait_until


def der_chain(cert: Any) -> list[bytes]:
    """DER certificates of a trustme LeafCert or CA (for a CA: its own certificate)."""
    blobs = cert.cert_chain_pems if hasattr(cert, "cert_chain_pems") else [cert.cert_pem]
    return [x509.load_pem_x509_certificate(b.bytes()).public_bytes(Encoding.DER) for b in blobs]


def spki_sha256(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def tls_context(leaf: Any) -> ssl.SSLContext:
    """A server context presenting ``leaf`` and its chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    return context


@contextlib.asynccontextmanager
async def tls_sink(leaf: Any) -> AsyncIterator[ScriptedServer]:
    """An SMTP server on 127.0.0.1 that offers STARTTLS with ``leaf``."""
    async with ScriptedServer(lambda: Handler(tls=True), tls_context=tls_context(leaf)) as sink:
        yield sink


async def send(mta: Mta, *recipients: str, sender: str = "a@example.com") -> None:
    """Hand mail for ``recipients`` (one message each) to the MTA, as a trusted client."""
    async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
        for n, to in enumerate(recipients):
            assert (await client.send(message(n, sender=sender, to=to))).ok


def queued(mta: Mta, domain: str) -> SpooledMessage | None:
    for entry in mta.spool.messages.values():
        if entry.recipients and entry.recipients[0].endswith("@" + domain):
            return entry
    return None


async def deferred(mta: Mta, domain: str) -> str:
    """The reason the first attempt for ``domain`` did not deliver (once there is one)."""

    def attempted() -> bool:
        entry = queued(mta, domain)
        return entry is not None and entry.last_attempt is not None

    await wait_until(attempted)
    entry = queued(mta, domain)
    assert entry is not None and entry.last_attempt is not None
    return entry.last_attempt[1]


def tls_sessions(sink: ScriptedServer) -> list[bool]:
    """Whether each session of the sink that took a message was encrypted."""
    return [handler.tls_active for handler in sink.handlers if handler.messages]


@dataclass
class PolicyHost:
    """An HTTPS server on 127.0.0.1 answering every ``mta-sts.<domain>`` (by Host) with
    ``policies[domain]``: (status, content type, body, extra headers); it counts requests
    and keeps POSTed bodies (TLS-RPT uploads)."""

    policies: dict[str, tuple[int, str, str, dict[str, str]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    def serve(self, domain: str, body: str, *, status: int = 200, kind: str = "text/plain") -> None:
        self.policies[domain] = (status, kind, body, {})

    def redirect(self, domain: str, to: str) -> None:
        self.policies[domain] = (302, "text/plain", "", {"Location": to})

    async def _policy(self, request: web.Request) -> web.Response:
        host = request.host.partition(":")[0].removeprefix("mta-sts.")
        self.requests.append(host)
        status, kind, body, headers = self.policies.get(host, (404, "text/plain", "", {}))
        return web.Response(status=status, text=body, content_type=kind, headers=headers)

    async def _post(self, request: web.Request) -> web.Response:
        self.posts.append((request.path, dict(request.headers), await request.read()))
        return web.Response(status=201)


@contextlib.asynccontextmanager
async def policy_host(leaf: Any) -> AsyncIterator[PolicyHost]:
    host = PolicyHost()
    app = web.Application()
    app.router.add_get("/.well-known/mta-sts.txt", host._policy)
    app.router.add_post("/tlsrpt", host._post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls_context(leaf))
    await site.start()
    server = site._server
    assert server is not None
    host.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield host
    finally:
        await runner.cleanup()


def policy(mode: str, *mx: str, max_age: int = 86400) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"

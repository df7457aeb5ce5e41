"""DKIM through a real MTA on 127.0.0.1: mail from trusted clients and authenticated users
arrives at the sink signed (checked by dkimpy and OpenDKIM against the DNS lab); inbound
mail is not signed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from smtpx.auth import Credentials
from smtpx.client import CertificateCheck, ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.errors import ConfigError
from smtpx.io import StaticResolver
from smtpx.mta.app import Mta
from smtpx.mta.config import MtaConfig
from smtpx.mta.dkim import load_key
from smtpx.mta.routing import FakeDns
from smtpx.mta.users import Users
from smtpx.testing import Handler, ScriptedServer
from smtpx.testing.dns import DnsLab
from tests.mta.dkim_helpers import (
    dkimpy_results,
    key_zone,
    opendkim_results,
    signature_fields,
    write_key,
)
from tests.mta.helpers import PLAIN, config, maildir, wait_until

BOTH = [("r1", "rsa-sha256", True), ("e1", "ed25519-sha256", True)]


@pytest.fixture
def dkim_section(tmp_path: Path) -> dict[str, Any]:
    write_key(tmp_path / "r1.key", "rsa")
    write_key(tmp_path / "e1.key", "ed25519")
    entries = [
        {"domain": "example.org", "selector": s, "key_file": str(tmp_path / f"{s}.key")}
        for s in ("r1", "e1")
    ]
    return {"sign": entries}


@pytest.fixture
def lab(dns_lab: Callable[..., DnsLab], dkim_section: dict[str, Any]) -> DnsLab:
    keys = {e["selector"]: load_key(Path(e["key_file"])) for e in dkim_section["sign"]}
    return dns_lab(key_zone("example.org", keys))


def mail(sender: str, *to: str, body: bytes = b"Hello.\r\n") -> Envelope:
    head = f"From: {sender}\r\nTo: {', '.join(to)}\r\nSubject: s\r\nMessage-ID: <m@t>\r\n\r\n"
    return Envelope.create(sender=sender, recipients=list(to), message=head.encode() + body)


def routed(tmp_path: Path, port: int, dkim: dict[str, Any], **sections: Any) -> MtaConfig:
    to_sink = [f"127.0.0.1:{port}"]
    routes = {"routing": {"routes": {"example.net": to_sink, "example.com": to_sink}}}
    return config(tmp_path, dkim=dkim, **routes, **sections)


async def test_mail_from_a_trusted_client_arrives_signed(
    tmp_path: Path, dkim_section: dict[str, Any], lab: DnsLab
) -> None:
    async with (
        ScriptedServer(Handler) as sink,
        Mta(routed(tmp_path, sink.port, dkim_section), dns=FakeDns()) as mta,
    ):
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            sent = mail("alice@example.org", "bob@example.net", "carol@example.com")
            assert (await client.send(sent)).ok
            assert (await client.send(mail("eve@example.com", "bob@example.net"))).ok
        await wait_until(lambda: len(sink.messages()) == 3 and not mta.spool.messages)
    signed = [m for m in sink.messages() if b"From: alice@" in m]
    assert len(signed) == 2  # one copy per destination domain, the same signature
    assert signed[0] == signed[1]
    message = signed[0]
    assert message.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert message.index(b"\r\nDKIM-Signature: ") < message.index(b"\r\nReceived: from ")
    assert dkimpy_results(message, lab) == BOTH
    assert opendkim_results(message, lab, tmp_path / "opendkim") == [
        ("r1", "pass"),
        ("e1", "pass"),
    ]
    (other,) = [m for m in sink.messages() if b"From: eve@" in m]
    assert signature_fields(other) == []  # not our domain


async def test_inbound_mail_to_a_local_domain_is_not_signed(
    tmp_path: Path, dkim_section: dict[str, Any]
) -> None:
    cfg = config(tmp_path, dkim=dkim_section, relay={"trusted_networks": []})
    async with Mta(cfg, dns=FakeDns()) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            # From one of our own domains, even: a stranger's claim is not signed.
            assert (await client.send(mail("alice@example.org", "user@example.org"))).ok
        await wait_until(lambda: maildir(tmp_path, "user@example.org"))
    (stored,) = maildir(tmp_path, "user@example.org")
    assert b"DKIM-Signature" not in stored
    assert b"From: alice@example.org" in stored


async def test_a_large_spilled_message_is_signed(
    tmp_path: Path, dkim_section: dict[str, Any], lab: DnsLab
) -> None:
    body = b"".join(b"%06d a line of a big message\r\n" % n for n in range(40_000))  # 1.3 MB
    async with ScriptedServer(Handler) as sink:
        cfg = routed(tmp_path, sink.port, dkim_section, server={"spill_threshold": "64K"})
        async with Mta(cfg, dns=FakeDns()) as mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert (
                    await client.send(mail("alice@example.org", "bob@example.net", body=body))
                ).ok
            await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
    (message,) = sink.messages()
    assert message.endswith(body)
    assert dkimpy_results(message, lab) == BOTH


async def test_mail_from_an_authenticated_user_is_signed(
    tmp_path: Path, dkim_section: dict[str, Any], lab: DnsLab, ca: Any, ca_file: str
) -> None:
    users = Users()
    users.add("alice", "wonderland")
    users.save(tmp_path / "users")
    cert = ca.issue_cert("mx.test")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    verified = TlsConfig(
        mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=ca_file
    )
    async with ScriptedServer(Handler) as sink:
        cfg = routed(
            tmp_path,
            sink.port,
            dkim_section,
            server={"listen": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"]},
            tls={"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "key.pem")},
            auth={"users_file": str(tmp_path / "users")},
            relay={"trusted_networks": []},
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            async with connect(
                "mx.test",
                mta.server.ports[1],
                config=ClientConfig.for_testing(tls=[("", verified)]),
                credentials=Credentials.login("alice", "wonderland"),
                resolver=StaticResolver({"mx.test": ["127.0.0.1"]}),
            ) as client:
                assert client.authenticated
                assert (await client.send(mail("alice@news.example.org", "bob@example.net"))).ok
            await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
    (message,) = sink.messages()
    assert b"with ESMTPSA" in message
    assert dkimpy_results(message, lab) == BOTH  # a subdomain's From, signed as example.org


def test_a_bad_key_stops_the_mta_from_starting(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
    )
    entry = {"domain": "example.org", "selector": "s", "key_file": str(tmp_path / "bad.key")}
    with pytest.raises(ConfigError, match=r"^dkim\.sign\[0\]\.key_file: .*bad\.key: not a PEM"):
        Mta(config(tmp_path, dkim={"sign": [entry]}), dns=FakeDns())

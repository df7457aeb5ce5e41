"""Judging inbound mail in a real MTA on 127.0.0.1, its DNS a real name server: SPF at
MAIL FROM, DKIM/ARC/DMARC before the 250, one Authentication-Results field, forged ones
removed, DMARC p=reject refused or quarantined as configured, the policy hooks, and
which sessions are judged at all."""

from __future__ import annotations

import dataclasses
import email
from pathlib import Path
from typing import Any

import authres
import pytest

from smtpx.client import connect
from smtpx.envelope import Envelope
from smtpx.mta.app import Mta
from smtpx.mta.inbound import ACCEPT, Accept, InboundPolicy, Refuse
from smtpx.mta.inbound.arc import ArcSealer
from smtpx.mta.inbound.dkimverify import fetch_keys, key_names, verify_arc, verify_dkim
from smtpx.mta.inbound.results import MethodResult, authentication_results
from smtpx.mta.inbound.spf import SpfResults
from smtpx.mta.routing import FakeDns
from smtpx.protocol.replies import Reply
from smtpx.server import Session, Transaction
from smtpx.spool.message import Status
from smtpx.testing.dns import DnsLab
from tests.mta.dkim_helpers import key_pem
from tests.mta.helpers import PLAIN, config, maildir, wait_until
from tests.mta.inbound.helpers import auth_dns, dkimpy_sign, key, message, opendkim_sign

pytestmark = pytest.mark.interop

AUTHSERV = "mx.local.test"
CLIENT = dataclasses.replace(PLAIN, helo_name="mx.example.test")  # its SPF passes
USER = "bob@local.test"


def inbound_config(tmp_path: Path, **inbound: Any) -> Any:
    sections: dict[str, Any] = {
        "relay": {"local_domains": ["local.test"], "trusted_networks": []},
        "inbound": {"listeners": ["smtp"], "authserv_id": AUTHSERV, **inbound},
    }
    return config(tmp_path, **sections)


def envelope(msg: bytes, sender: str = "alice@example.test") -> Envelope:
    return Envelope.create(sender=sender, recipients=[USER], message=msg)


def delivered(root: Path) -> bytes:
    """The one message in the user's maildir as it arrived: CRLF line ends, without the
    Return-Path and Delivered-To fields local delivery adds."""
    (stored,) = maildir(root, USER)
    lines = stored.split(b"\n")
    assert lines[0].startswith(b"Return-Path: ") and lines[1].startswith(b"Delivered-To: ")
    return b"\r\n".join(lines[2:])


def results_of(stored: bytes) -> list[tuple[str, str]]:
    """(method, result) of our Authentication-Results field, which must be the first."""
    parsed = email.message_from_bytes(stored)
    ours = [v for v in parsed.get_all("Authentication-Results", []) if v.startswith(AUTHSERV)]
    assert len(ours) == 1, ours
    field = authres.AuthenticationResultsHeader.parse(
        "Authentication-Results: " + " ".join(ours[0].split())
    )
    return [(r.method, r.result) for r in field.results]


async def send(mta: Mta, *envelopes: Envelope) -> list[Any]:
    async with connect("127.0.0.1", mta.server.ports[0], config=CLIENT) as c:
        return [await c.send(e) for e in envelopes]


async def test_signed_mail_passes_and_says_so(tmp_path: Path, lab: DnsLab) -> None:
    signed = opendkim_sign(message(), tmp_path / "odk", "example.test")
    forged_ours = b"Authentication-Results: mx.local.test; dmarc=pass header.from=paypal.com\r\n"
    theirs = b"Authentication-Results: elsewhere.test; spf=pass smtp.mailfrom=x.test\r\n"
    async with Mta(inbound_config(tmp_path), dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        (status,) = await send(mta, envelope(forged_ours + theirs + signed))
        assert status.ok
        await wait_until(lambda: maildir(tmp_path, USER))
    stored = delivered(tmp_path)
    assert stored.startswith(b"Authentication-Results: mx.local.test;\r\n\tspf=pass")
    assert stored.index(b"Authentication-Results: mx.local.test") < stored.index(b"Received:")
    assert results_of(stored) == [
        ("spf", "pass"),  # MAIL FROM alice@example.test from 127.0.0.1
        ("spf", "pass"),  # HELO mx.example.test
        ("dkim", "pass"),
        ("arc", "none"),
        ("dmarc", "pass"),
    ]
    assert b"paypal.com" not in stored  # the forged field is gone...
    assert theirs in stored  # ...another ADMD's stays
    assert stored.endswith(signed)


async def test_dmarc_reject_is_refused_at_the_end_of_data(tmp_path: Path, lab: DnsLab) -> None:
    # From example.test (p=reject) but MAIL FROM other.test, signed by other.test: both
    # pass, neither aligns.
    unaligned = dkimpy_sign(message(), "other.test")
    async with Mta(inbound_config(tmp_path), dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        (status,) = await send(mta, envelope(unaligned, sender="bob@other.test"))
        assert not mta.spool.messages
    assert not status.ok
    assert (status.reply.code, str(status.reply.enhanced)) == (550, "5.7.1")
    assert "DMARC policy for example.test" in status.reply.text
    assert not maildir(tmp_path, USER)


async def test_dmarc_reject_quarantined_when_configured(tmp_path: Path, lab: DnsLab) -> None:
    cfg = inbound_config(tmp_path, dmarc_reject="quarantine")
    async with Mta(cfg, dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        (status,) = await send(mta, envelope(message(), sender="bob@other.test"))
        assert status.ok
        (held,) = mta.spool.status()
        assert held.status is Status.QUARANTINED
        assert held.quarantine_reason == "DMARC policy reject for example.test"
        stored = await mta.spool.read_message(held.id)
    assert ("dmarc", "fail") in results_of(stored.replace(b"\r\n..", b"\r\n."))
    assert not maildir(tmp_path, USER)


async def test_dmarc_quarantine_policy_is_delivered_by_default(tmp_path: Path, lab: DnsLab) -> None:
    msg = message(sender="alice@quarantine.test")
    async with Mta(inbound_config(tmp_path), dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        (status,) = await send(mta, envelope(msg, sender="alice@quarantine.test"))
        assert status.ok
        await wait_until(lambda: maildir(tmp_path, USER))
    stored = delivered(tmp_path)
    assert b"dmarc=fail (p=quarantine) header.from=quarantine.test policy.dmarc=quarantine" in (
        stored
    )


async def test_spf_fail_refused_at_mail_when_configured(tmp_path: Path, lab: DnsLab) -> None:
    forged = message(sender="alice@forged.test")
    off = inbound_config(tmp_path / "off")
    async with Mta(off, dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        (accepted,) = await send(mta, envelope(forged, sender="alice@forged.test"))
    assert accepted.reply.code == 550  # DMARC p=reject at the end: SPF alone is off
    assert "DMARC" in accepted.reply.text
    on = inbound_config(tmp_path / "on", spf_reject_fail=True)
    async with Mta(on, dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        (refused,) = await send(mta, envelope(forged, sender="alice@forged.test"))
    assert (refused.reply.code, str(refused.reply.enhanced)) == (550, "5.7.23")
    assert refused.reply.text == (
        "SPF fail: forged.test does not designate 127.0.0.1 as permitted sender"
    )


class SoftfailIsEnough(InboundPolicy):
    """A policy hook: refuse softfail too, and let DMARC failures through."""

    async def after_spf(
        self, session: Session, transaction: Transaction, spf: SpfResults
    ) -> Accept | Refuse:
        if spf.mailfrom.result == "softfail":
            return Refuse(Reply.of(550, "softfail is enough here", "5.7.23"))
        return await super().after_spf(session, transaction, spf)

    async def after_checks(self, session: Session, transaction: Transaction, verdict: Any) -> Any:
        return ACCEPT


async def test_policy_hooks_decide(tmp_path: Path, lab: DnsLab) -> None:
    cfg = inbound_config(tmp_path)
    mta = Mta(
        cfg,
        dns=FakeDns(),
        dns_resolver=lab.resolver(),
        inbound_policy=SoftfailIsEnough(cfg.inbound),
    )
    async with mta:
        soft, unaligned = await send(
            mta,
            envelope(message(sender="a@soft.test"), sender="a@soft.test"),
            envelope(message(), sender="bob@other.test"),
        )
        await wait_until(lambda: maildir(tmp_path, USER))
    assert (soft.reply.code, soft.reply.text) == (550, "softfail is enough here")
    assert unaligned.ok  # DMARC fail, p=reject, let through by the hook
    stored = delivered(tmp_path)
    assert ("dmarc", "fail") in results_of(stored)


@pytest.mark.parametrize(
    ("listener", "trusted", "judged"),
    [
        ("smtp", True, False),  # a trusted client (127.0.0.1 is, by default) is not judged
        ("127.0.0.2:0", False, False),  # nor is mail on a listener [inbound] does not name
        ("127.0.0.1:0", False, True),  # while the one it names by address is
    ],
)
async def test_who_is_judged(
    tmp_path: Path, lab: DnsLab, listener: str, trusted: bool, judged: bool
) -> None:
    relay: dict[str, Any] = {"local_domains": ["local.test"]}
    if not trusted:
        relay["trusted_networks"] = []
    server = {"listen": ["127.0.0.1:0", "127.0.0.2:0"]}
    cfg = config(tmp_path, server=server, relay=relay, inbound={"listeners": [listener]})
    async with Mta(cfg, dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        (status,) = await send(mta, envelope(message(), sender="alice@example.test"))
        assert status.ok
        await wait_until(lambda: maildir(tmp_path, USER))
    assert (b"Authentication-Results" in delivered(tmp_path)) is judged


async def test_a_big_spilled_message_is_judged_and_sealed(tmp_path: Path, lab: DnsLab) -> None:
    body = b"".join(b"%06d a line of a big message\r\n" % n for n in range(40_000))  # 1.3 MB
    signed = dkimpy_sign(message(body=body), "example.test")
    (tmp_path / "arc.key").write_bytes(key_pem("rsa", 0))
    seal = {"domain": "other.test", "selector": "r1", "key_file": str(tmp_path / "arc.key")}
    cfg = config(
        tmp_path,
        server={"spill_threshold": "64K"},
        relay={"local_domains": ["local.test"], "trusted_networks": []},
        inbound={"listeners": ["smtp"], "authserv_id": AUTHSERV, "arc_seal": seal},
    )
    async with Mta(cfg, dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        (status,) = await send(mta, envelope(signed))
        assert status.ok
        await wait_until(lambda: maildir(tmp_path, USER))
    stored = delivered(tmp_path)
    assert stored.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=other.test; s=r1;")
    assert stored.endswith(body)
    assert ("dkim", "pass") in results_of(stored)
    keys = await fetch_keys(auth_dns(lab), key_names(stored))
    assert verify_arc(stored, keys).result == "pass"
    assert [r.result for r in verify_dkim(stored, keys)] == ["pass"]


async def test_a_trusted_sealer_vouches_for_a_dmarc_failure(tmp_path: Path, lab: DnsLab) -> None:
    """A list (other.test) got mail from example.test (dmarc=pass there), changed its
    Subject (DKIM breaks: DMARC fails here under p=reject), and sealed it with ARC."""
    signed = dkimpy_sign(message(), "example.test")
    changed = signed.replace(b"Subject: Hello", b"Subject: [list] Hello")
    seen = authentication_results(
        "lists.other.test",
        [
            MethodResult("dkim", "pass", properties=(("header.d", "example.test"),)),
            MethodResult("arc", "none"),
            MethodResult("dmarc", "pass", properties=(("header.from", "example.test"),)),
        ],
    )
    sealer = ArcSealer("other.test", "r1", key("rsa"))
    resent = sealer.seal(seen + changed, "lists.other.test") + seen + changed
    for trusted, code in (([], 550), (["other.test"], 250)):
        cfg = inbound_config(tmp_path / str(code), arc_trusted_sealers=trusted)
        async with Mta(cfg, dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
            (status,) = await send(mta, envelope(resent, sender="bounce@other.test"))
        assert status.reply.code == code

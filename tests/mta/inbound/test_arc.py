"""ARC (RFC 8617): sets sealed by smtpx verify (one hop, two hops), a change after the
seal breaks the chain, and the sealing key must be RSA."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpx.errors import ConfigError
from smtpx.mta.config import ArcSealSettings
from smtpx.mta.inbound.arc import ArcSealer
from smtpx.mta.inbound.dkimverify import ArcResult, fetch_keys, key_names, verify_arc
from smtpx.mta.inbound.results import MethodResult, authentication_results
from smtpx.testing.dns import DnsLab
from tests.mta.dkim_helpers import key_pem
from tests.mta.inbound.helpers import auth_dns, dkimpy_sign, key, message

pytestmark = pytest.mark.interop


async def chain(lab: DnsLab, msg: bytes) -> ArcResult:
    return verify_arc(msg, await fetch_keys(auth_dns(lab), key_names(msg)))


def hop(msg: bytes, sealer: ArcSealer, authserv_id: str, *results: MethodResult) -> bytes:
    """What a sealing hop passes on: its Authentication-Results, then its ARC set."""
    judged = authentication_results(authserv_id, results) + msg
    sealed = sealer.seal(judged, authserv_id)
    assert sealed.startswith(b"ARC-Seal: i=")
    return sealed + judged


async def test_one_and_two_hops(lab: DnsLab) -> None:
    first = ArcSealer("example.test", "r1", key("rsa"))
    original = dkimpy_sign(message(), "example.test")
    once = hop(
        original,
        first,
        "mx.example.test",
        MethodResult("dkim", "pass"),
        MethodResult("arc", "none"),
        MethodResult("dmarc", "pass", properties=(("header.from", "example.test"),)),
    )
    assert b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.test; s=r1;" in once
    assert await chain(lab, once) == ArcResult(
        "pass", sealers=("example.test",), instances=1, vouched=True
    )
    # A list changes the Subject: the DKIM signature breaks, the chain holds up to it.
    relayed = once.replace(b"Subject: Hello", b"Subject: [list] Hello")
    assert (await chain(lab, relayed)).result == "fail"
    second = ArcSealer("other.test", "r1", key("rsa"))
    twice = hop(relayed, second, "lists.other.test", MethodResult("arc", "fail"))
    assert b"ARC-Seal: i=2; cv=fail;" in twice
    assert (await chain(lab, twice)).result != "pass"  # a failed chain stays failed
    # Sealed before the change, by the list itself: a chain that passes, two sets long.
    listed = hop(once, second, "lists.other.test", MethodResult("arc", "pass"))
    found = await chain(lab, listed)
    assert (found.result, found.sealers, found.instances) == (
        "pass",
        ("other.test", "example.test"),
        2,
    )
    assert not found.vouched  # the newest set's results do not say dmarc=pass


async def test_nothing_to_seal_without_our_results(lab: DnsLab) -> None:
    sealer = ArcSealer("example.test", "r1", key("rsa"))
    other = authentication_results("someone.else", [MethodResult("spf", "pass")])
    assert sealer.seal(other + message(), "mx.example.test") == b""


def test_the_key_must_be_rsa(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RSA keys only"):
        ArcSealer("example.test", "e1", key("ed25519"))
    (tmp_path / "e.key").write_bytes(key_pem("ed25519", 0))
    settings = ArcSealSettings(domain="example.test", selector="e1", key_file=tmp_path / "e.key")
    with pytest.raises(ConfigError) as caught:
        ArcSealer.from_settings(settings)
    assert caught.value.key == "inbound.arc_seal.key_file"
    missing = ArcSealSettings(domain="example.test", selector="x", key_file=tmp_path / "none")
    with pytest.raises(ConfigError, match="cannot read"):
        ArcSealer.from_settings(missing)


def test_malformed_arc_fields_fail_the_chain_without_an_error() -> None:
    # An AMS whose "i =" dkimpy's lookup does not find: it raised IndexError inside dkimpy.
    fields = (
        b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=x.test; s=s; b=AAAA\r\n"
        b"ARC-Message-Signature: i =1; a=rsa-sha256; d=x.test; s=s; h=from; bh=AAAA; b=AAAA\r\n"
        b"ARC-Authentication-Results: i=1; x.test; none\r\n"
    )
    assert verify_arc(fields + message(), {}).result == "fail"
    assert verify_arc(b"ARC-Seal: i=1\r\n" + message(), {}).reason == (
        "Incomplete ARC set for instance 1"
    )

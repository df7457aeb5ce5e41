"""DKIM verification of inbound mail (dkimpy, keys fetched through smtpx's resolver from
the DNS lab): signatures made by OpenDKIM and by dkimpy, and every way one can fail."""

from __future__ import annotations

import re
from pathlib import Path

import authres
import dkim
import pytest

from smtpx.mta.inbound.dkimverify import (
    MAX_SIGNATURES,
    DkimResult,
    fetch_keys,
    key_names,
    verify_arc,
    verify_dkim,
)
from smtpx.mta.inbound.results import authentication_results
from smtpx.testing.dns import DnsLab
from tests.mta.inbound.helpers import (
    auth_dns,
    dkimpy_sign,
    key,
    message,
    opendkim_sha1_sign,
    opendkim_sign,
)

pytestmark = pytest.mark.interop


async def results(lab: DnsLab, msg: bytes) -> list[DkimResult]:
    keys = await fetch_keys(auth_dns(lab), key_names(msg))
    return verify_dkim(msg, keys)


@pytest.mark.parametrize(("selector", "algorithm"), [("r1", "rsa"), ("e1", "ed25519")])
async def test_signed_by_opendkim(
    lab: DnsLab, tmp_path: Path, selector: str, algorithm: str
) -> None:
    signed = opendkim_sign(message(), tmp_path, "example.test", selector, algorithm)
    (result,) = await results(lab, signed)
    assert (result.result, result.domain, result.selector) == ("pass", "example.test", selector)
    assert result.algorithm == f"{algorithm}-sha256"
    tampered = signed.replace(b"Hello.\r\n", b"Hello!\r\n")
    (broken,) = await results(lab, tampered)
    assert (broken.result, broken.reason[:18]) == ("fail", "body hash mismatch")


async def test_each_signature_has_its_result(lab: DnsLab) -> None:
    msg = dkimpy_sign(dkimpy_sign(message(), "example.test", "e1", "ed25519"), "other.test")
    found = await results(lab, msg)
    assert [(r.result, r.domain, r.selector) for r in found] == [
        ("pass", "other.test", "r1"),
        ("pass", "example.test", "e1"),
    ]
    field = authentication_results("mx.local.test", [r.method_result() for r in found])
    parsed = authres.AuthenticationResultsHeader.parse(
        field.decode().replace("\r\n\t", " ").strip()
    )
    props = [{f"{p.type}.{p.name}": p.value for p in r.properties} for r in parsed.results]
    assert props[0]["header.d"] == "other.test" and props[1]["header.s"] == "e1"
    assert props[1]["header.a"] == "ed25519-sha256"
    assert props[0]["header.b"] == found[0].b and len(found[0].b) == 12


async def test_a_changed_signed_header_fails(lab: DnsLab) -> None:
    signed = dkimpy_sign(message(), "example.test")
    (result,) = await results(lab, signed.replace(b"Subject: Hello", b"Subject: Hellx"))
    assert (result.result, result.reason) == ("fail", "signature did not verify")


async def test_rsa_sha1_is_refused_though_dkimpy_would_take_it(lab: DnsLab, tmp_path: Path) -> None:
    signed = opendkim_sha1_sign(message(), tmp_path, "example.test")
    record = key("rsa").txt_record().encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)  # the gap (RFC 8301)
    (result,) = await results(lab, signed)
    assert (result.result, result.algorithm) == ("policy", "rsa-sha1")


@pytest.mark.parametrize(
    ("selector", "domain", "result", "reason"),
    [
        ("revoked", "example.test", "permerror", "key revoked"),  # p= empty (RFC 6376 3.6.1)
        ("nothere", "example.test", "permerror", "no key for signature"),  # NXDOMAIN
        ("weak", "example.test", "policy", "RSA key of 768 bits (RFC 8301)"),
        ("r1", "example.invalid", "temperror", "key lookup failed: "),  # REFUSED: try later
    ],
)
async def test_key_problems(
    lab: DnsLab, selector: str, domain: str, result: str, reason: str
) -> None:
    (found,) = await results(lab, dkimpy_sign(message(), domain, selector))
    assert found.result == result
    assert found.reason.startswith(reason)


async def test_a_signature_without_from_is_a_permerror(lab: DnsLab) -> None:
    signed = dkimpy_sign(message(), "example.test")  # dkimpy refuses to sign without From
    no_from = re.sub(rb"\bh=[^;]*;", b"h=to : subject;", signed, count=1)
    (found,) = await results(lab, no_from)
    assert (found.result, found.reason) == ("permerror", "From is not signed (RFC 6376 6.1.1)")
    garbled = b"DKIM-Signature: v=1; a=rsa-sha256; this is not a tag list\r\n" + message()
    (bad,) = await results(lab, garbled)
    assert bad.result == "permerror"


async def test_at_most_ten_signatures_are_checked(lab: DnsLab) -> None:
    msg = message()
    for _ in range(MAX_SIGNATURES + 3):
        msg = dkimpy_sign(msg, "example.test")
    assert len(key_names(msg)) == 1  # one key, fetched once
    assert len(await results(lab, msg)) == MAX_SIGNATURES


async def test_no_signature_and_no_arc(lab: DnsLab) -> None:
    assert await results(lab, message()) == []
    keys = await fetch_keys(auth_dns(lab), key_names(message()))
    assert verify_arc(message(), keys).result == "none"

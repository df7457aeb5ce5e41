"""Authentication-Results (RFC 8601): what smtpx writes (checked against the examples of
the RFC's appendix B and parsed back by authres), and the removal of fields that claim
our authserv-id from arriving mail (section 5)."""

from __future__ import annotations

import authres
import pytest

from smtpx.mta.inbound.results import (
    MethodResult,
    authentication_results,
    authserv_id_of,
    without_our_results,
)


def unfolded(field: bytes) -> str:
    return field.decode().replace("\r\n\t", " ").rstrip("\r\n")


def test_appendix_b_examples() -> None:
    # B.3: SPF only.
    spf = MethodResult("spf", "pass", properties=(("smtp.mailfrom", "example.net"),))
    assert unfolded(authentication_results("example.com", [spf])) == (
        "Authentication-Results: example.com; spf=pass smtp.mailfrom=example.net"
    )
    # B.5: two DKIM signatures, one good, one bad, with comments.
    good = MethodResult(
        "dkim",
        "pass",
        comment="good signature",
        properties=(("header.d", "mail-router.example.net"),),
    )
    bad = MethodResult(
        "dkim", "fail", comment="bad signature", properties=(("header.d", "newyork.example.com"),)
    )
    assert unfolded(authentication_results("example.com", [good, bad])) == (
        "Authentication-Results: example.com;"
        " dkim=pass (good signature) header.d=mail-router.example.net;"
        " dkim=fail (bad signature) header.d=newyork.example.com"
    )
    # B.2: nothing was checked.
    assert authentication_results("example.org", []) == (
        b"Authentication-Results: example.org;\r\n\tnone\r\n"
    )


def test_each_result_on_its_own_line_and_parsable() -> None:
    dmarc = (("header.from", "example.test"), ("policy.dmarc", "reject"))
    results = [
        MethodResult("spf", "pass", properties=(("smtp.mailfrom", "example.test"),)),
        MethodResult("dkim", "fail", reason="body hash mismatch", properties=(("header.d", "x"),)),
        MethodResult("dmarc", "fail", comment="p=reject (odd) \\ text", properties=dmarc),
    ]
    field = authentication_results("mx.example.org", results)
    assert field.count(b"\r\n") == 4 and field.endswith(b"\r\n")
    assert all(len(line) < 100 for line in field.split(b"\r\n"))
    parsed = authres.AuthenticationResultsHeader.parse(unfolded(field))
    assert parsed.authserv_id == "mx.example.org"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"),
        ("dkim", "fail"),
        ("dmarc", "fail"),
    ]
    assert parsed.results[1].reason == "body hash mismatch"
    assert [(p.type, p.name, p.value) for p in parsed.results[2].properties] == [
        ("header", "from", "example.test"),
        ("policy", "dmarc", "reject"),
    ]
    assert b"(p=reject ?odd? ? text)" in field  # a comment cannot end early


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b" mx.example.org; spf=pass", "mx.example.org"),
        (b" MX.Example.ORG 1; none", "mx.example.org"),
        (b" (a comment; with semicolons) mx.example.org; spf=pass", "mx.example.org"),
        (b"\r\n\t mx.example.org.;spf=pass", "mx.example.org"),
        (b' "mx.example.org"; none', "mx.example.org"),
        (b" ; spf=pass", None),
        (b"", None),
    ],
)
def test_authserv_id_of(value: bytes, expected: str | None) -> None:
    assert authserv_id_of(value) == expected


def test_fields_claiming_our_id_are_removed() -> None:
    block = (
        b"Authentication-Results: mx.example.org; dkim=pass header.d=paypal.com\r\n"
        b"Received: from a by b\r\n"
        b"Authentication-Results: other.example;\r\n\tspf=pass smtp.mailfrom=x.test\r\n"
        b"authentication-results: (ours, really) MX.EXAMPLE.ORG;\r\n\tdmarc=pass\r\n"
        b"Authentication-Results: ;broken\r\n"
        b"Subject: Authentication-Results: mx.example.org; not a field of that name\r\n"
        b"\r\n"
    )
    kept, removed = without_our_results(block, "mx.example.org")
    assert removed == 3
    assert kept == (
        b"Received: from a by b\r\n"
        b"Authentication-Results: other.example;\r\n\tspf=pass smtp.mailfrom=x.test\r\n"
        b"Subject: Authentication-Results: mx.example.org; not a field of that name\r\n"
        b"\r\n"
    )
    assert without_our_results(kept, "mx.example.org") == (kept, 0)

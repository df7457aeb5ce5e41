"""DMARC (RFC 9989) without DNS: the record grammar, the names a Tree Walk asks, the
Organizational Domain chosen from what it found, and the Author Domain of a message."""

from __future__ import annotations

import pytest

from smtpx.mta.inbound.dmarc import (
    DmarcEvaluator,
    DmarcRecord,
    DmarcResult,
    author_domains,
    parse_record,
    walk_targets,
)


def test_a_record_with_every_tag() -> None:
    record = parse_record(
        b"v=DMARC1; p=Reject ; sp=quarantine;np=none; adkim=s; aspf=s; psd=n; t=y;"
        b" rua=mailto:a@example.com, mailto:b@example.com!10m, notauri; fo=1; ruf=x; zz=9"
    )
    assert record == DmarcRecord(
        p="reject",
        sp="quarantine",
        np="none",
        adkim="s",
        aspf="s",
        psd="n",
        testing=True,
        rua=("mailto:a@example.com", "mailto:b@example.com!10m"),
    )
    assert record.usable


@pytest.mark.parametrize(
    "text",
    [
        b"p=reject; v=DMARC1",  # v= must come first
        b"v=dmarc1; p=reject",  # "DMARC1" is case-sensitive
        b"v=DMARC2; p=reject",
        b"v=spf1 -all",
        b"",
    ],
)
def test_not_a_dmarc_record(text: bytes) -> None:
    assert parse_record(text) is None


def test_defaults_and_values_that_are_not_valid() -> None:
    assert parse_record(b"v = DMARC1 ;p=none") == DmarcRecord(p="none")
    odd = parse_record(b"v=DMARC1; p=none; adkim=x; aspf=; psd=maybe; t=yes; pct=20")
    assert odd == DmarcRecord(p="none")  # defaults stand in; pct is gone (RFC 9989)
    assert parse_record(b"v=DMARC1; p=none; p=reject") == DmarcRecord(p="none")


def test_policies_and_their_fallbacks() -> None:
    record = DmarcRecord(p="reject")
    assert [record.policy(t) for t in ("p", "sp", "np")] == ["reject"] * 3
    record = DmarcRecord(p="none", sp="quarantine")
    assert [record.policy(t) for t in ("p", "sp", "np")] == ["none", "quarantine", "quarantine"]
    record = DmarcRecord(p="none", np="reject")
    assert [record.policy(t) for t in ("p", "sp", "np")] == ["none", "none", "reject"]


def test_a_record_without_a_valid_policy() -> None:
    bare = parse_record(b"v=DMARC1; p=bogus")
    assert bare is not None and bare.invalid == ("p",) and not bare.usable
    assert parse_record(b"v=DMARC1; adkim=s") == DmarcRecord(adkim="s")  # no p at all
    assert not DmarcRecord(adkim="s").usable
    reports = parse_record(b"v=DMARC1; p=reject; sp=bogus; rua=mailto:r@example.com")
    assert reports is not None and reports.usable
    assert reports.policy("p") == "none"  # section 4.10.1: act as if p=none


def test_the_deep_walk_of_section_4_10() -> None:
    assert walk_targets("a.b.c.d.e.f.g.h.i.j.mail.example.com") == [
        "a.b.c.d.e.f.g.h.i.j.mail.example.com",
        "g.h.i.j.mail.example.com",
        "h.i.j.mail.example.com",
        "i.j.mail.example.com",
        "j.mail.example.com",
        "mail.example.com",
        "example.com",
        "com",
    ]
    eight = "a.b.c.d.e.f.example.com"
    assert walk_targets(eight)[:2] == [eight, "b.c.d.e.f.example.com"]
    assert len(walk_targets(eight)) == 8
    assert walk_targets("example.com") == ["example.com", "com"]
    assert walk_targets("localhost") == ["localhost"]


PLAIN = DmarcRecord(p="none")
PSD = DmarcRecord(p="reject", psd="y")
NOT_PSD = DmarcRecord(p="reject", psd="n")


@pytest.mark.parametrize(
    ("domain", "walk", "organizational"),
    [
        # Section 4.10.2's examples.
        (
            "a.mail.example.com",
            [("mail.example.com", PLAIN), ("example.com", PLAIN)],
            "example.com",
        ),
        ("a.mail.example.com", [("mail.example.com", NOT_PSD)], "mail.example.com"),
        ("a.mail.example.com", [("com", PSD)], "example.com"),
        # A psd=y record at the starting name does not make it a suffix of itself.
        ("bank.example", [("bank.example", PSD)], "bank.example"),
        ("example.com", [], "example.com"),  # no record: the domain itself
    ],
)
def test_organizational_domain(
    domain: str, walk: list[tuple[str, DmarcRecord]], organizational: str
) -> None:
    assert DmarcEvaluator.organizational_domain(domain, walk) == organizational


def test_the_result_in_authentication_results() -> None:
    result = DmarcResult("fail", "a.example.com", "quarantine", "reject", "sp", True, "example.com")
    assert result.method_result().text() == (
        "dmarc=fail (sp=reject t=y from example.com) header.from=a.example.com"
        " policy.dmarc=quarantine"
    )
    assert DmarcResult("none", "x.test").method_result().text() == "dmarc=none header.from=x.test"


@pytest.mark.parametrize(
    ("head", "found"),
    [
        (b"From: Alice <alice@Example.COM>\r\n\r\n", ["example.com"]),
        (b"From: a@one.test, b@two.test, c@ONE.test\r\n\r\n", ["one.test", "two.test"]),
        ("From: a@bücher.example\r\n\r\n".encode(), ["xn--bcher-kva.example"]),
        (b"To: a@b.test\r\n\r\n", "no From field"),
        (b"From: a@b.test\r\nFrom: c@d.test\r\n\r\n", "several From fields"),
        (b"From: undisclosed\r\n\r\n", "a From address without a domain"),
        (b"From: \r\n\r\n", "no address in the From field"),
    ],
)
def test_author_domains(head: bytes, found: list[str] | str) -> None:
    assert author_domains(head) == found

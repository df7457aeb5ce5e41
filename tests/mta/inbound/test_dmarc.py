"""DMARC (RFC 9989) against a real name server: pass, fail and policy cases, the Tree
Walk with psd=y and psd=n, np for a domain that does not exist, t=y, and what the walk
asks (at most eight names, nothing for a domain that cannot align)."""

from __future__ import annotations

import pytest

from smtpx.mta.inbound.dmarc import DmarcEvaluator, DmarcResult
from smtpx.mta.inbound.lookup import Answer, AuthDns
from smtpx.testing.dns import DnsLab
from tests.mta.inbound.helpers import auth_dns

pytestmark = pytest.mark.interop


class Counting(AuthDns):
    """Notes every TXT name asked."""

    def __init__(self, lab: DnsLab) -> None:
        inner = auth_dns(lab)
        super().__init__(inner.resolver, timeout=inner.timeout)
        self.asked: list[str] = []

    async def txt(self, name: str) -> Answer:
        self.asked.append(name)
        return await super().txt(name)


async def evaluate(
    lab: DnsLab, author: str, spf: str | None = None, dkim: tuple[str, ...] = ()
) -> DmarcResult:
    return await DmarcEvaluator(auth_dns(lab)).evaluate(author, spf, dkim)


@pytest.mark.parametrize(
    ("author", "spf", "dkim", "result"),
    [
        ("example.test", "example.test", (), "pass"),  # SPF, identical
        ("example.test", "mail.example.test", (), "pass"),  # SPF, relaxed
        ("example.test", None, ("example.test",), "pass"),  # DKIM, identical
        ("example.test", None, ("news.example.test",), "pass"),  # DKIM, relaxed
        ("example.test", "other.test", ("other.test",), "fail"),  # passes, not aligned
        ("example.test", None, (), "fail"),  # nothing passed
        ("strict.test", "mail.strict.test", (), "fail"),  # aspf=s
        ("strict.test", None, ("mail.strict.test",), "fail"),  # adkim=s
        ("strict.test", "strict.test", (), "pass"),
        ("nothing.test", "nothing.test", (), "none"),  # no record anywhere
        ("twice.test", None, (), "none"),  # two records: none counts (section 4.10)
        ("notfirst.test", None, (), "none"),  # v= not first: not a record
    ],
)
async def test_alignment(
    lab: DnsLab, author: str, spf: str | None, dkim: tuple[str, ...], result: str
) -> None:
    assert (await evaluate(lab, author, spf, dkim)).result == result


async def test_policy_of_the_author_domain(lab: DnsLab) -> None:
    found = await evaluate(lab, "example.test")
    assert (found.result, found.policy, found.tag, found.policy_domain) == (
        "fail",
        "reject",
        "p",
        "example.test",
    )
    assert (await evaluate(lab, "quarantine.test")).policy == "quarantine"


async def test_t_y_lowers_the_policy_one_step(lab: DnsLab) -> None:
    found = await evaluate(lab, "testing.test")
    assert (found.published, found.policy, found.testing) == ("reject", "quarantine", True)


async def test_np_for_a_subdomain_that_does_not_exist(lab: DnsLab) -> None:
    ghost = await evaluate(lab, "ghost.np.test")  # NXDOMAIN
    assert (ghost.tag, ghost.policy, ghost.policy_domain) == ("np", "reject", "np.test")
    real = await evaluate(lab, "real.np.test")  # has an A record
    assert (real.tag, real.policy) == ("sp", "quarantine")


async def test_a_record_without_a_valid_policy(lab: DnsLab) -> None:
    broken = await evaluate(lab, "nopolicy.test")
    assert (broken.result, broken.policy) == ("permerror", "")
    reports = await evaluate(lab, "reportonly.test")  # it names rua: treated as p=none
    assert (reports.result, reports.policy) == ("fail", "none")


async def test_the_psd_example_of_appendix_b(lab: DnsLab) -> None:
    """RFC 9989 B.3: _dmarc.bank.test has psd=y; giant.bank.test is an Organizational
    Domain with a record of its own, mega.bank.test one without."""
    dmarc = DmarcEvaluator(auth_dns(lab))
    assert await dmarc.org_domain("giant.bank.test") == "giant.bank.test"
    assert await dmarc.org_domain("mail.giant.bank.test") == "giant.bank.test"
    assert await dmarc.org_domain("mail.mega.bank.test") == "mega.bank.test"
    spf = await dmarc.evaluate("giant.bank.test", "mail.giant.bank.test", ())
    assert (spf.result, spf.policy, spf.policy_domain) == ("pass", "quarantine", "giant.bank.test")
    dkim = await dmarc.evaluate("giant.bank.test", None, ("mail.mega.bank.test",))
    assert dkim.result == "fail"
    # No record of its own and none for its Organizational Domain: the PSD's applies.
    psd = await dmarc.evaluate("mail.mega.bank.test", None, ())
    assert (psd.policy, psd.tag, psd.policy_domain) == ("reject", "sp", "bank.test")


async def test_psd_n_ends_the_organization(lab: DnsLab) -> None:
    dmarc = DmarcEvaluator(auth_dns(lab))
    assert await dmarc.org_domain("a.mail.corp.test") == "mail.corp.test"
    assert await dmarc.org_domain("corp.test") == "corp.test"
    unaligned = await dmarc.evaluate("a.mail.corp.test", None, ("corp.test",))
    assert (unaligned.result, unaligned.policy_domain, unaligned.policy) == (
        "fail",
        "mail.corp.test",
        "reject",
    )
    assert (await dmarc.evaluate("a.mail.corp.test", None, ("a.mail.corp.test",))).result == (
        "pass"
    )


async def test_a_deep_walk_asks_eight_names_at_most(lab: DnsLab) -> None:
    dns = Counting(lab)
    author = "a.b.c.d.e.f.g.h.i.j.k.deep.test"
    found = await DmarcEvaluator(dns).evaluate(author, None, ("deep.test",))
    assert (found.result, found.policy_domain, found.tag) == ("pass", "deep.test", "sp")
    assert dns.asked == [
        f"_dmarc.{author}",
        "_dmarc.g.h.i.j.k.deep.test",
        "_dmarc.h.i.j.k.deep.test",
        "_dmarc.i.j.k.deep.test",
        "_dmarc.j.k.deep.test",
        "_dmarc.k.deep.test",
        "_dmarc.deep.test",
        "_dmarc.test",
    ]


async def test_an_identifier_that_cannot_align_costs_no_query(lab: DnsLab) -> None:
    dns = Counting(lab)
    found = await DmarcEvaluator(dns).evaluate("example.test", "other.test", ("x.other.test",))
    assert found.result == "fail"
    assert dns.asked == ["_dmarc.example.test", "_dmarc.test"]


async def test_dns_failures_are_temperror(lab: DnsLab) -> None:
    # The lab's name server refuses what is outside its zone: a failure, not an answer.
    failed = await evaluate(lab, "example.invalid", "example.invalid")
    assert (failed.result, failed.policy) == ("temperror", "")
    assert failed.reason == "_dmarc.example.invalid: DNS lookup failed"

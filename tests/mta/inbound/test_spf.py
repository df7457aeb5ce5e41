"""SPF (RFC 7208) with pyspf, its DNS answered by smtpx's resolver: a real name server
(the DNS lab) on 127.0.0.1, the checks in worker threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
import spf

from smtpx.mta.inbound.spf import SpfChecker, SpfResult
from smtpx.testing import LoopTurns
from smtpx.testing.dns import DnsLab
from tests.mta.inbound.helpers import CLIENT, auth_dns

pytestmark = pytest.mark.interop

HELO = "mx.example.test"


@pytest.mark.parametrize(
    ("sender", "result"),
    [
        ("alice@example.test", "pass"),  # ip4:127.0.0.1 -all
        ("alice@forged.test", "fail"),  # ip4:192.0.2.1 -all
        ("alice@soft.test", "softfail"),  # ~all
        ("alice@mxhost.test", "pass"),  # mx -all, the MX at 127.0.0.1
        ("alice@nothing.test", "none"),  # no record
        ("alice@two-spf.test", "permerror"),  # two v=spf1 records (4.5)
        ("alice@many.test", "permerror"),  # 11 DNS-querying terms (4.6.4)
        ("alice@broken-spf.test", "temperror"),  # include: refused by the name server
        ("alice@macro.test", "pass"),  # exists:%{l}.allow.macro.test: the local part counts
        ("bob@macro.test", "fail"),
    ],
)
async def test_mail_from_results(lab: DnsLab, sender: str, result: str) -> None:
    checked = await SpfChecker(auth_dns(lab)).check(CLIENT, HELO, sender)
    domain = sender.partition("@")[2]
    assert checked.mailfrom.identity == "mailfrom"
    assert (checked.mailfrom.result, checked.mailfrom.domain) == (result, domain)
    assert checked.helo == SpfResult("helo", "pass", HELO, checked.helo.explanation)
    assert checked.failed is (result == "fail")


async def test_the_helo_identity_is_checked_on_its_own(lab: DnsLab) -> None:
    checker = SpfChecker(auth_dns(lab))
    checked = await checker.check(CLIENT, "forged.test", "alice@example.test")
    assert (checked.mailfrom.result, checked.helo.result) == ("pass", "fail")
    assert checked.failed
    literal = await checker.check(CLIENT, "[127.0.0.1]", "alice@example.test")
    assert (literal.helo.result, literal.helo.domain) == ("none", "")  # nothing to check


async def test_the_null_sender_is_postmaster_at_the_helo_name(lab: DnsLab) -> None:
    checked = await SpfChecker(auth_dns(lab)).check(CLIENT, "forged.test", None)
    assert checked.mailfrom.result == checked.helo.result == "fail"
    assert checked.mailfrom.domain == "forged.test"
    assert checked.mailfrom.method_result().text() == (
        "spf=fail (null sender) smtp.mailfrom=forged.test"
    )


async def test_client_addresses(lab: DnsLab) -> None:
    checker = SpfChecker(auth_dns(lab))
    mapped = await checker.check("::ffff:127.0.0.1", HELO, "alice@example.test")
    assert mapped.mailfrom.result == "pass"  # a dual-stack socket's form of 127.0.0.1
    unknown = await checker.check(None, HELO, "alice@example.test")
    assert (unknown.mailfrom.result, unknown.helo.result) == ("none", "none")


async def test_checks_run_in_threads_while_the_loop_goes_on(lab: DnsLab) -> None:
    checker = SpfChecker(auth_dns(lab))
    seen: list[str] = []
    real = spf.query.check

    def check(query: spf.query, *args: object) -> object:
        seen.append(threading.current_thread().name)
        return real(query, *args)

    spf.query.check = check
    try:
        async with LoopTurns() as turns:
            results = await asyncio.gather(
                *(checker.check(CLIENT, HELO, f"u{n}@example.test") for n in range(8))
            )
    finally:
        spf.query.check = real
    assert {r.mailfrom.result for r in results} == {"pass"}
    assert seen and all(name.startswith("spf") for name in seen)
    assert turns.count > 4  # the loop ran while the checks waited (a blocked loop turns once)

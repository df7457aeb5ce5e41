"""MTA-STS (RFC 8461): policy parsing, discovery through the DNS lab, fetching from a real
HTTPS policy host on 127.0.0.1 (trustme certificates), caching on disk with max_age and
refreshing (a fake clock), and enforce/testing through a real MTA."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from smtpx.mta.app import Mta
from smtpx.mta.certs import Problem
from smtpx.mta.mtasts import MtaSts, StsPolicy, sts_id
from smtpx.mta.resolver import RoutingResolver
from smtpx.mta.tlspolicy import https_context
from smtpx.testing import ScriptedServer
from smtpx.testing.dns import DnsLab, Zone
from tests.mta.helpers import config, wait_until
from tests.mta.tls_helpers import (
    PolicyHost,
    deferred,
    policy,
    policy_host,
    send,
    tls_sessions,
    tls_sink,
)

StartLab = Callable[..., DnsLab]
DOMAINS = ["sts.test", "mismatch.test", "badcert.test", "testing.test", "moved.test"]


# -- the policy file and the TXT record ------------------------------------------------


def test_a_policy_is_parsed() -> None:
    parsed = StsPolicy.parse(policy("enforce", "mx1.example.com", "*.mx.example.com"))
    assert parsed.mode == "enforce" and parsed.max_age == 86400
    assert parsed.mx == ("mx1.example.com", "*.mx.example.com")
    assert parsed.lines[0] == "version: STSv1"
    # LF line endings, extension fields, spaces around the colon, a final dot.
    loose = StsPolicy.parse(
        "version:STSv1\nmode : testing\nmx:  MX.Example.com.\nx: y\nmax_age:0\n"
    )
    assert (loose.mode, loose.mx, loose.max_age) == ("testing", ("mx.example.com",), 0)
    assert StsPolicy.parse("version: STSv1\nmode: none\nmax_age: 60\n").mx == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mode: enforce\nmx: a.test\nmax_age: 1\n", "version: STSv1 is missing"),
        ("version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n", "mode must be"),
        ("version: STSv1\nmode: enforce\nmx: a.test\n", "max_age must be"),
        ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n", "max_age must be"),
        ("version: STSv1\nmode: enforce\nmax_age: 60\n", "names no mx"),
        ("version: STSv1\nmode: enforce\nmx: *a.test\nmax_age: 60\n", "not an MX pattern"),
        ("version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 60\n", "not an MX pattern"),
        ("<html>not a policy</html>\n", "not a 'key: value' line"),
    ],
)
def test_a_bad_policy_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        StsPolicy.parse(text)


def test_mx_patterns_match_one_label_for_a_wildcard() -> None:
    parsed = StsPolicy.parse(policy("enforce", "mail.example.com", "*.mx.example.com"))
    assert parsed.matches("mail.example.com") and parsed.matches("MAIL.example.com.")
    assert parsed.matches("a.mx.example.com")
    assert not parsed.matches("mx.example.com")
    assert not parsed.matches("a.b.mx.example.com")  # one label only (section 4.1)
    assert not parsed.matches("evil-mail.example.com")


def test_the_txt_record_must_be_one_valid_stsv1_record() -> None:
    assert sts_id(["v=STSv1; id=20260101T01;"]) == "20260101T01"
    assert sts_id(["v=spf1 -all", "v=STSv1;id=abc"]) == "abc"
    assert sts_id(["v=STSv1; id=1", "v=STSv1; id=2"]) is None  # not exactly one
    assert sts_id(["v=STSv1; id=has-dash"]) is None
    assert sts_id(["v=STSv1; id=" + "a" * 33]) is None
    assert sts_id(["v=STSv10; id=1"]) is None
    assert sts_id([]) is None


# -- discovery, fetching, caching ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def sts_zone(name: str, policy_id: str | None = "1") -> Zone:
    found = Zone(name).add("@", "MX", f"10 mx.{name}.").add("mx", "A", "127.0.0.1")
    found.add("mta-sts", "A", "127.0.0.1")
    if policy_id is not None:
        found.txt("_mta-sts", f"v=STSv1; id={policy_id}")
    return found


def lab_resolver(lab: DnsLab) -> RoutingResolver:
    """NSD, asked without a cache: these tests change records under it."""
    return RoutingResolver(lab.resolver())


@contextlib.asynccontextmanager
async def sts_world(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> AsyncIterator[tuple[MtaSts, PolicyHost, DnsLab, Clock, list[tuple[str, Problem]]]]:
    names = [f"mta-sts.{domain}" for domain in DOMAINS]
    async with policy_host(ca.issue_cert(*names)) as host:
        lab = dns_lab(*(sts_zone(domain) for domain in DOMAINS))
        clock = Clock()
        problems: list[tuple[str, Problem]] = []
        sts = MtaSts(
            dns=lab_resolver(lab),
            directory=tmp_path / "mta-sts",
            ssl_context=https_context(Path(ca_file)),
            clock=clock,
            on_problem=lambda domain, problem: problems.append((domain, problem)),
            port=host.port,
        )
        yield sts, host, lab, clock, problems


async def test_fetched_once_cached_on_disk_and_kept_across_a_restart(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> None:
    async with sts_world(tmp_path, dns_lab, ca, ca_file) as (sts, host, _, clock, _):
        host.serve("sts.test", policy("enforce", "mx.sts.test"))
        first = await sts.policy("sts.test")
        assert first.policy is not None and first.policy.mode == "enforce"
        assert first.how == "fetched (id 1)"
        again = await sts.policy("sts.test")
        assert again.how == "cached (id 1)" and host.requests == ["sts.test"]
        saved = json.loads((tmp_path / "mta-sts" / "sts.test.json").read_text())
        assert saved["id"] == "1" and saved["fetched_at"] == clock.now
        # A restart: a new instance, the policy host gone. The file still applies.
        host.policies.clear()
        restarted = MtaSts(sts.dns, tmp_path / "mta-sts", sts.ssl_context, clock=clock)
        after = await restarted.policy("sts.test")
        assert after.policy == first.policy and after.how == "cached (id 1)"
        assert host.requests == ["sts.test"]


async def test_refreshed_when_stale_kept_when_the_refresh_fails_dropped_when_expired(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> None:
    async with sts_world(tmp_path, dns_lab, ca, ca_file) as (sts, host, _, clock, problems):
        host.serve("sts.test", policy("enforce", "mx.sts.test", max_age=86400))
        await sts.policy("sts.test")
        clock.now += 43_201  # past half of max_age: fetched again
        host.serve("sts.test", policy("enforce", "mx2.sts.test", max_age=86400))
        refreshed = await sts.policy("sts.test")
        assert refreshed.how == "fetched (id 1)" and refreshed.policy is not None
        assert refreshed.policy.mx == ("mx2.sts.test",)
        clock.now += 43_201
        host.serve("sts.test", "", status=500)  # the refresh fails: the cached one stays
        kept = await sts.policy("sts.test")
        assert kept.policy == refreshed.policy
        assert kept.how.endswith("; the cached policy applies") and "HTTP 500" in kept.how
        assert problems[-1][1].result_type == "sts-policy-fetch-error"
        clock.now += 86_400  # expired, and nothing new: no policy
        gone = await sts.policy("sts.test")
        assert gone.policy is None and gone.cached is None


async def test_a_new_id_is_fetched_and_a_missing_txt_keeps_the_cached_policy(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> None:
    async with sts_world(tmp_path, dns_lab, ca, ca_file) as (sts, host, lab, clock, _):
        host.serve("sts.test", policy("enforce", "mx.sts.test"))
        await sts.policy("sts.test")
        host.serve("sts.test", policy("testing", "mx.sts.test"))
        await update(lab, sts.dns, "2")
        changed = await sts.policy("sts.test")
        assert changed.how == "fetched (id 2)" and changed.policy is not None
        assert changed.policy.mode == "testing"
        # The TXT record removed (or stripped by an attacker): the cached policy still
        # applies until it expires (section 5.1); mode none is how a domain opts out.
        await update(lab, sts.dns, None)
        stripped = await sts.policy("sts.test")
        assert stripped.policy == changed.policy
        assert stripped.how == "no STSv1 TXT record; the cached policy applies"
        clock.now += 86_400
        assert (await sts.policy("sts.test")).policy is None
        host.serve("sts.test", policy("none"))
        await update(lab, sts.dns, "3")
        opted_out = await sts.policy("sts.test")
        assert opted_out.cached is not None and opted_out.policy is None


async def update(lab: DnsLab, dns: RoutingResolver, policy_id: str | None) -> None:
    """Publish sts.test's TXT record with ``policy_id`` and wait until it is answered:
    just after a reload, NSD's previous server process can still answer a query."""
    lab.update(sts_zone("sts.test", policy_id))
    want = [] if policy_id is None else [f"v=STSv1; id={policy_id}"]
    for _ in range(250):
        texts, _answer = await dns.txt("_mta-sts.sts.test")
        if texts == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the lab does not serve {want}")


FETCH_FAILURES: dict[str, tuple[Callable[[PolicyHost], None], str, str]] = {
    "redirect": (
        lambda h: h.redirect("sts.test", "https://mta-sts.moved.test/"),
        "fetch-error",
        "302",
    ),
    "404": (lambda h: h.serve("sts.test", "", status=404), "fetch-error", "HTTP 404"),
    "html": (
        lambda h: h.serve("sts.test", policy("enforce", "a.test"), kind="text/html"),
        "invalid",
        "text/html",
    ),
    "bad mode": (lambda h: h.serve("sts.test", "version: STSv1\nmode: x\n"), "invalid", "mode"),
    "too big": (lambda h: h.serve("sts.test", "x: " + "y" * 70_000), "invalid", "more than 65536"),
}


@pytest.mark.parametrize("case", FETCH_FAILURES)
async def test_a_failed_fetch_means_no_policy_and_is_reported(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str, case: str
) -> None:
    setup, result_type, detail = FETCH_FAILURES[case]
    async with sts_world(tmp_path, dns_lab, ca, ca_file) as (sts, host, _, _, problems):
        host.serve("moved.test", policy("enforce", "mx.moved.test"))
        setup(host)
        found = await sts.policy("sts.test")
        assert found.policy is None and found.problem is not None
        assert found.problem.result_type == f"sts-policy-{result_type}"
        assert detail in found.problem.detail
        assert host.requests == ["sts.test"]  # a redirect is not followed
        assert [domain for domain, _ in problems] == ["sts.test"]


async def test_a_policy_host_with_a_bad_certificate_is_not_believed(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> None:
    async with policy_host(ca.issue_cert("mta-sts.elsewhere.test")) as host:
        lab = dns_lab(sts_zone("sts.test"))
        host.serve("sts.test", policy("enforce", "mx.sts.test"))
        sts = MtaSts(lab_resolver(lab), None, https_context(Path(ca_file)), port=host.port)
        found = await sts.policy("sts.test")
    assert found.policy is None and found.problem is not None
    assert found.problem.result_type == "sts-webpki-invalid"
    assert host.requests == []


# -- through the MTA ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mta_world(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> AsyncIterator[tuple[Mta, ScriptedServer, PolicyHost]]:
    # The sink's certificate names the MX hosts of sts.test and mismatch.test only.
    leaf = ca.issue_cert("mx.sts.test", "mx.mismatch.test")
    async with (
        tls_sink(leaf) as sink,
        policy_host(ca.issue_cert(*(f"mta-sts.{d}" for d in DOMAINS))) as host,
    ):
        lab = dns_lab(*(sts_zone(domain) for domain in DOMAINS))
        host.serve("sts.test", policy("enforce", "mx.sts.test"))
        host.serve("mismatch.test", policy("enforce", "mx.elsewhere.test"))
        host.serve("badcert.test", policy("enforce", "*.badcert.test"))
        host.serve("testing.test", policy("testing", "mx.testing.test"))
        routing = {
            "resolver": f"127.0.0.1:{lab.port}",
            "mta_sts": {"enabled": True, "ca_file": ca_file},
        }
        cfg = config(tmp_path, routing=routing, spool={"retry_intervals": ["1h"]})
        mta = Mta(cfg)
        mta.router.mx_port = sink.port
        assert mta.tls_policies is not None and mta.tls_policies.sts is not None
        mta.tls_policies.sts.port = host.port
        async with mta:
            yield mta, sink, host


async def test_enforce_delivers_over_verified_tls_to_a_named_mx(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> None:
    async with mta_world(tmp_path, dns_lab, ca, ca_file) as (mta, sink, _):
        await send(mta, "user@sts.test")
        await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
    assert tls_sessions(sink) == [True]
    assert (tmp_path / "spool" / "mta-sts" / "sts.test.json").exists()


async def test_enforce_with_a_mismatching_mx_does_not_deliver(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> None:
    async with mta_world(tmp_path, dns_lab, ca, ca_file) as (mta, sink, _):
        await send(mta, "user@mismatch.test")
        reason = await deferred(mta, "mismatch.test")
    assert reason.startswith("TLS policy: no MX host of mismatch.test can be used now")
    assert "MTA-STS (enforce): not among the policy's MX hosts (mx.elsewhere.test)" in reason
    assert sink.handlers == []


async def test_enforce_with_a_certificate_for_another_name_does_not_deliver(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> None:
    async with mta_world(tmp_path, dns_lab, ca, ca_file) as (mta, sink, _):
        await send(mta, "user@badcert.test")
        reason = await deferred(mta, "badcert.test")
    assert "MTA-STS for mx.badcert.test (badcert.test): the certificate is not for" in reason
    assert sink.messages() == []


async def test_testing_mode_delivers_and_logs_what_would_have_failed(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "smtpx.mta.tls")
    async with mta_world(tmp_path, dns_lab, ca, ca_file) as (mta, sink, _):
        await send(mta, "user@testing.test")
        await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
    assert tls_sessions(sink) == [True]  # the configured opportunistic TLS
    [warning] = [r.getMessage() for r in caplog.records if "would not deliver" in r.getMessage()]
    assert "MTA-STS for mx.testing.test (testing.test): the certificate is not for" in warning

"""DANE (RFC 7672) through a real MTA: MX and TLSA records from DNSSEC-signed zones in
the DNS lab, validated by Unbound (its AD bit), and a TLS sink with trustme certificates.
A wrong TLSA record or a bogus answer must not deliver; the right one delivers."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from smtpx.errors import ConfigError
from smtpx.mta.app import Mta
from smtpx.mta.config import MtaConfig
from smtpx.mta.resolver import RoutingResolver
from smtpx.spool.message import Status
from smtpx.testing import ScriptedServer
from smtpx.testing.dns import DnsLab, Zone
from tests.mta.helpers import config, maildir, wait_until
from tests.mta.tls_helpers import (
    deferred,
    der_chain,
    queued,
    send,
    spki_sha256,
    tls_sessions,
    tls_sink,
)

pytestmark = pytest.mark.interop

NAMES = ["mx.right.test", "mx.wrong.test", "mx.ta.test", "mx.bogus.test", "mx.plain.test"]
StartLab = Callable[..., DnsLab]


def zone(name: str, port: int, tlsa: str, *, signed: bool = True, rua: str = "") -> Zone:
    """``name`` with its MX host on 127.0.0.1 and ``tlsa`` for it at the sink's port (and
    a TLS-RPT record, given ``rua``)."""
    found = Zone(name, signed=signed).add("@", "MX", f"10 mx.{name}.").add("mx", "A", "127.0.0.1")
    if rua:
        found.txt("_smtp._tls", f"v=TLSRPTv1; rua={rua}")
    return found.add(f"_{port}._tcp.mx", "TLSA", tlsa)


def two_hosts(port: int, *, wrong: str, right: str) -> Zone:
    """two.test: its first MX host has a wrong TLSA record, its second a right one."""
    found = Zone("two.test", signed=True)
    found.add("@", "MX", "10 mx1.two.test.").add("@", "MX", "20 mx2.two.test.")
    found.add("mx1", "A", "127.0.0.1").add("mx2", "A", "127.0.0.1")
    found.add(f"_{port}._tcp.mx1", "TLSA", wrong)
    return found.add(f"_{port}._tcp.mx2", "TLSA", right)


def dane_config(tmp_path: Path, lab: DnsLab, **sections: Any) -> MtaConfig:
    routing = {"resolver": f"127.0.0.1:{lab.resolver_port}", "dane": {"enabled": True}}
    routing.update(sections.pop("routing", {}))
    sections.setdefault("spool", {"retry_intervals": ["1h"]})
    return config(tmp_path, routing=routing, **sections)


@contextlib.asynccontextmanager
async def world(
    tmp_path: Path, dns_lab: StartLab, ca: Any, rua: str = "", **sections: Any
) -> AsyncIterator[tuple[Mta, ScriptedServer, DnsLab]]:
    """A sink for every name in NAMES, the lab's zones for it, and an MTA using them."""
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert(*NAMES)
    async with tls_sink(leaf) as sink:
        leaf_der, intermediate_der = der_chain(leaf)
        ee = f"3 1 1 {spki_sha256(leaf_der)}"
        port = sink.port
        lab = dns_lab(
            zone("right.test", port, ee, rua=rua),
            zone("wrong.test", port, "3 1 1 " + "ab" * 32, rua=rua),
            zone("ta.test", port, f"2 1 1 {spki_sha256(intermediate_der)}"),
            zone("bogus.test", port, ee),
            zone("plain.test", port, "3 1 1 " + "ab" * 32, signed=False),
            two_hosts(port, wrong="3 1 1 " + "ab" * 32, right=ee),
        )
        mta = Mta(dane_config(tmp_path, lab, **sections))
        mta.router.mx_port = sink.port  # MX hosts listen on 25; the sink does not
        async with mta:
            yield mta, sink, lab


async def until_bogus(lab: DnsLab, name: str) -> None:
    """Wait until the validating resolver finds ``name`` bogus (asking without a cache):
    just after a reload, NSD's previous server process can still answer a query."""
    resolver = RoutingResolver(lab.resolver(validating=True), trust_ad=True)
    for _ in range(250):
        if (await resolver.lookup(name, "TLSA")).failed:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} is not bogus")


async def test_a_matching_dane_ee_record_delivers_over_tls(
    tmp_path: Path, dns_lab: StartLab, ca: Any
) -> None:
    async with world(tmp_path, dns_lab, ca) as (mta, sink, _):
        await send(mta, "user@right.test")
        await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
        assert tls_sessions(sink) == [True]
        assert mta.tls_policies is not None
        [hop] = mta.tls_policies._plans["right.test"].hops
        assert hop.kind == "dane" and "1 usable TLSA record" in hop.reason


async def test_a_dane_ta_record_delivers_when_the_name_matches(
    tmp_path: Path, dns_lab: StartLab, ca: Any
) -> None:
    async with world(tmp_path, dns_lab, ca) as (mta, sink, _):
        await send(mta, "user@ta.test")
        await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
        assert tls_sessions(sink) == [True]


async def test_a_wrong_tlsa_record_does_not_deliver(
    tmp_path: Path, dns_lab: StartLab, ca: Any
) -> None:
    async with world(tmp_path, dns_lab, ca) as (mta, sink, _):
        await send(mta, "user@wrong.test")
        reason = await deferred(mta, "wrong.test")
        assert "DANE for mx.wrong.test (wrong.test)" in reason
        assert "matches none of the 1 usable TLSA records" in reason
        assert sink.messages() == []
        # Not even MAIL FROM was sent: the session ended after the handshake.
        assert all(handler._mail is None for handler in sink.handlers)
        entry = queued(mta, "wrong.test")
        assert entry is not None and entry.status is Status.SEND_AT and not entry.failed


async def test_a_host_that_fails_dane_is_skipped_for_the_next(
    tmp_path: Path, dns_lab: StartLab, ca: Any
) -> None:
    async with world(tmp_path, dns_lab, ca) as (mta, sink, _):
        await send(mta, "user@two.test")
        await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
        # mx1's session ended after the handshake; mx2's took the message.
        assert [handler._mail is None for handler in sink.handlers] == [True, False]


async def test_a_bogus_tlsa_answer_skips_the_host(
    tmp_path: Path, dns_lab: StartLab, ca: Any
) -> None:
    async with world(tmp_path, dns_lab, ca) as (mta, sink, lab):
        lab.tamper("bogus.test", "TLSA\t3 1 1 ", "TLSA\t3 1 0 ")  # breaks its signature
        await until_bogus(lab, f"_{sink.port}._tcp.mx.bogus.test")
        await send(mta, "user@bogus.test")
        reason = await deferred(mta, "bogus.test")
        assert reason.startswith("TLS policy: no MX host of bogus.test can be used now")
        assert "the TLSA lookup of _" in reason and "SERVFAIL" in reason
        assert sink.handlers == []  # never connected: no plaintext instead


async def test_an_unsigned_zone_gets_no_dane(tmp_path: Path, dns_lab: StartLab, ca: Any) -> None:
    # Its TLSA record is wrong, but not DNSSEC-secure: it does not count (RFC 7672 2.2).
    async with world(tmp_path, dns_lab, ca) as (mta, sink, _):
        await send(mta, "user@plain.test")
        await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
        assert mta.tls_policies is not None
        [hop] = mta.tls_policies._plans["plain.test"].hops
        assert hop.kind == "configured"
        assert (
            "DANE: the MX records are not DNSSEC-secure"
            in mta.tls_policies._plans["plain.test"].notes[0]
        )


async def test_out_of_retries_the_bounce_says_no_remote_mta_answered(
    tmp_path: Path, dns_lab: StartLab, ca: Any
) -> None:
    async with world(tmp_path, dns_lab, ca, spool={"retry_intervals": []}) as (mta, sink, _):
        await send(mta, "user@wrong.test", sender="alice@example.org")
        await wait_until(lambda: maildir(tmp_path, "alice@example.org"))
    [bounce] = maildir(tmp_path, "alice@example.org")
    report = email.message_from_bytes(bounce, policy=email.policy.default)
    text = bounce.decode()
    assert "DANE for mx.wrong.test" in text
    assert "Remote-MTA" not in text  # nobody remote said it: found here
    assert report.get_content_type() == "multipart/report"
    assert sink.messages() == []


def test_dane_needs_the_resolver_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routing\.dane\.enabled: DANE needs routing\.resolver"):
        config(tmp_path, routing={"dane": {"enabled": True}})

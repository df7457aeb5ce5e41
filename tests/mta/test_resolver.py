"""RoutingResolver: lookups that say whether DNSSEC secured them, believed only from the
configured (trusted) validating resolver; MX host addresses; against the DNS lab."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from smtpx.mta.config import ListenAddress
from smtpx.mta.resolver import RoutingResolver
from smtpx.testing.dns import DnsLab, Zone

pytestmark = pytest.mark.interop

StartLab = Callable[..., DnsLab]


def zones() -> list[Zone]:
    signed = Zone("signed.test", signed=True).add("mx", "A", "127.0.0.1")
    signed.add("_25._tcp.mx", "TLSA", "3 1 1 " + "ab" * 32)
    plain = Zone("plain.test").add("mx", "A", "127.0.0.2").add("mx", "AAAA", "::1")
    return [signed, plain]


async def test_secure_insecure_absent_and_bogus(dns_lab: StartLab) -> None:
    lab = dns_lab(*zones())
    trusted = RoutingResolver.at(
        ListenAddress(host="127.0.0.1", port=lab.resolver_port), trust_ad=True
    )
    tlsa = await trusted.lookup("_25._tcp.mx.signed.test", "TLSA")
    assert tlsa.secure and len(tlsa.records) == 1 and not tlsa.failed
    absent = await trusted.lookup("nothing.signed.test", "TLSA")  # NXDOMAIN, signed denial
    assert absent.records == () and absent.secure and not absent.failed
    nodata = await trusted.lookup("mx.signed.test", "TLSA")  # NODATA, signed denial
    assert nodata.records == () and nodata.secure
    insecure = await trusted.lookup("mx.plain.test", "A")
    assert insecure.records and not insecure.secure
    # The same validating resolver, not trusted: its AD bit counts for nothing.
    untrusted = RoutingResolver.at(ListenAddress(host="127.0.0.1", port=lab.resolver_port))
    assert not (await untrusted.lookup("_25._tcp.mx.signed.test", "TLSA")).secure
    lab.tamper("signed.test", "ab" * 32, "cd" * 32)
    fresh = RoutingResolver(lab.resolver(validating=True), trust_ad=True)  # no cache
    for _ in range(100):  # NSD's previous process may answer once more
        bogus = await fresh.lookup("_25._tcp.mx.signed.test", "TLSA")
        if bogus.failed:
            break
    assert bogus.failed and "SERVFAIL" in (bogus.error or "")


async def test_addresses_for_the_client_and_for_aiohttp(dns_lab: StartLab) -> None:
    lab = dns_lab(*zones())
    dns = RoutingResolver(lab.resolver())
    assert await dns.addresses("mx.plain.test") == ["127.0.0.2", "::1"]
    with pytest.raises(OSError, match="no address"):
        await dns.addresses("absent.plain.test")
    found = await dns.aiohttp_resolver().resolve("mx.plain.test", 443, socket.AF_INET)
    assert [(r["host"], r["port"], r["family"]) for r in found] == [
        ("127.0.0.2", 443, socket.AF_INET)
    ]

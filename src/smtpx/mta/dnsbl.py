"""DNS block and allow lists (RFC 5782) asked when a client connects.

Each ``[[dnsbl.zones]]`` list is asked at once, in parallel, for the client's address:
``7.2.0.192.<zone>`` for 192.0.2.7, 32 reversed nibbles for IPv6 (RFC 5782 2.1, 2.4). An
A record in 127.0.0.0/8 is a listing; NXDOMAIN is none. The weights of the lists naming
the client (a zone's ``weight``, or its ``codes`` table's weight for the answer) are added
up; at ``threshold`` or more the client gets ``554 5.7.1`` naming the lists and the text
of the heaviest one's TXT record (printable ASCII, 200 characters at most), and the
session ends. A negative weight makes an allow list (DNSWL): it can outweigh block lists,
and a client it names is not greylisted.

What is not a listing: ``127.0.0.1`` (a list answering it lists the world, RFC 5782 5),
the error answers in 127.255.255.0/24 (Spamhaus: "query through a public resolver",
"too many queries"), anything outside 127.0.0.0/8, a lookup that fails or that the
``timeout`` (for all the lists together) cuts short. Those count as errors in the metrics
and in the log, and the client is judged on the other lists: a broken list never refuses
mail. Clients in ``relay.trusted_networks`` are not checked. Answers are cached for their
TTL by the MTA's resolver (``[dns]``): use a local caching resolver, never a public one,
which the big lists refuse.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
from prometheus_client.core import CounterMetricFamily

from smtpx.mta.config import DnsblSettings, DnsblZone, on_listener
from smtpx.mta.guards import Guard, is_own
from smtpx.protocol.replies import Reply
from smtpx.server import Reject, Session
from smtpx.server.limits import client_ip

__all__ = ["DnsblGuard", "Listing", "query_name"]

log = logging.getLogger("smtpx.mta.dnsbl")

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
ERRORS = ipaddress.IPv4Network("127.255.255.0/24")
WORLD = ipaddress.IPv4Address("127.0.0.1")
MAX_TEXT = 200


def query_name(address: str, zone: str) -> str | None:
    """The name to ask ``zone`` about ``address`` (None when it is not an IP address)."""
    ip = client_ip(address)
    if ip is None:
        return None
    reverse = ip.reverse_pointer.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")
    return f"{reverse}.{zone}"


@dataclass(frozen=True, slots=True)
class Listing:
    """What one list said: ``codes`` (the 127.0.0.x answers that are listings), ``weight``
    (what they weigh), ``error`` (why the list could not be used) or none of these."""

    zone: DnsblZone
    codes: tuple[str, ...] = ()
    weight: float = 0.0
    error: str | None = None


def _weigh(zone: DnsblZone, answers: Iterable[str]) -> Listing:
    codes: list[str] = []
    for answer in answers:
        ip = ipaddress.ip_address(answer)
        if not isinstance(ip, ipaddress.IPv4Address) or ip not in LOOPBACK:
            return Listing(zone, error=f"answer {answer} outside 127.0.0.0/8")
        if ip == WORLD or ip in ERRORS:
            return Listing(zone, error=f"error answer {answer}")
        codes.append(answer)
    if not codes:
        return Listing(zone)
    if zone.codes:
        weights = [zone.codes[code] for code in codes if code in zone.codes]
        weight = max(weights, key=abs) if weights else 0.0
    else:
        weight = zone.weight
    return Listing(zone, tuple(codes), weight)


class DnsblGuard(Guard):
    """Asks the DNS lists at connect (see the module docstring)."""

    name = "dnsbl"

    def __init__(self, settings: DnsblSettings, resolver: dns.asyncresolver.Resolver) -> None:
        super().__init__()
        self.settings = settings
        self.resolver = resolver

    async def connect(self, session: Session) -> None:
        settings = self.settings
        ip = session.remote_ip
        if ip is None or is_own(session) or not on_listener(settings.listeners, session.listener):
            return
        listings = await self.check(ip)
        if listings is None:
            return
        score = sum(listing.weight for listing in listings)
        if any(listing.weight < 0 for listing in listings):
            session.data["dnswl"] = True
        if score < settings.threshold:
            return
        self.stats["rejected"] += 1
        blocking = sorted((x for x in listings if x.weight > 0), key=lambda x: -x.weight)
        text = await self._text(ip, blocking[0].zone)
        zones = ", ".join(x.zone.zone for x in blocking)
        reason = f"Service unavailable; client [{ip}] blocked using {zones}"
        log.info("dnsbl: refused %s (score %g): %s", ip, score, zones)
        raise Reject(Reply.of(554, f"{reason}: {text}" if text else reason, "5.7.1"))

    async def check(self, ip: str) -> list[Listing] | None:
        """What each list says about ``ip`` (None when ``ip`` is not an IP address)."""
        zones = self.settings.zones
        if not zones or query_name(ip, "") is None:
            return None
        tasks = [asyncio.ensure_future(self._ask(zone, ip)) for zone in zones]
        done, pending = await asyncio.wait(tasks, timeout=self.settings.timeout)
        for task in pending:
            task.cancel()
        listings = [
            task.result() if task in done else Listing(zone, error="timed out")
            for zone, task in zip(zones, tasks, strict=True)
        ]
        for listing in listings:
            self._count(ip, listing)
        return listings

    async def _ask(self, zone: DnsblZone, ip: str) -> Listing:
        name = query_name(ip, zone.zone)
        assert name is not None
        try:
            answer = await self.resolver.resolve(name, "A")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Listing(zone)
        except dns.exception.DNSException as exc:
            return Listing(zone, error=type(exc).__name__)
        return _weigh(zone, (record.to_text() for record in answer))

    def _count(self, ip: str, listing: Listing) -> None:
        zone = listing.zone.zone
        if listing.error is not None:
            self.stats[f"error {zone}"] += 1
            log.warning("dnsbl: %s for %s unusable: %s", zone, ip, listing.error)
        elif listing.codes:
            self.stats[f"listed {zone}"] += 1
        else:
            self.stats[f"clear {zone}"] += 1

    async def _text(self, ip: str, zone: DnsblZone) -> str:
        """The TXT record beside the listing, made safe for a reply line."""
        name = query_name(ip, zone.zone)
        assert name is not None
        try:
            async with asyncio.timeout(self.settings.timeout):
                answer = await self.resolver.resolve(name, "TXT")
        except (dns.exception.DNSException, TimeoutError):
            return ""
        raw = b"".join(b"".join(record.strings) for record in answer)
        text = "".join(c if " " <= c <= "~" else " " for c in raw.decode("latin-1"))
        text = " ".join(text.split())
        return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."

    def metrics(self) -> Iterable[object]:
        lookups = CounterMetricFamily(
            "smtpx_dnsbl_lookups",
            "DNS list lookups at connect, by list and result (listed, clear, error)",
            labels=["zone", "result"],
        )
        for zone in self.settings.zones:
            for result in ("listed", "clear", "error"):
                lookups.add_metric([zone.zone, result], self.stats[f"{result} {zone.zone}"])
        yield lookups
        rejected = CounterMetricFamily(
            "smtpx_dnsbl_rejected", "Clients refused at connect by the DNS lists (554 5.7.1)"
        )
        rejected.add_metric([], self.stats["rejected"])
        yield rejected

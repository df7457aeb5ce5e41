"""Where mail for a domain goes: local delivery, a static route, a smarthost, or MX.

:class:`Router` applies these rules in order (RFC 5321 section 5.1, RFC 7505):

1. a local domain (``relay.local_domains``): ``Route(local=True)``;
2. an explicit route (``routing.routes``), the domain itself first, then its parent
   domains, the longest match winning: its hops, in order;
3. the smarthost (``routing.smarthost``);
4. an address literal (``[192.0.2.1]``): that address (RFC 5321 5.1);
5. MX records: sorted by preference, equal preferences shuffled (RFC 5321 5.1: "the
   sender-SMTP MUST randomize them to spread the load"), each exchange on port 25. A null
   MX (RFC 7505) is a permanent ``556 5.1.10``; a domain without MX records is its own
   implicit MX (A/AAAA fallback); a domain that does not exist is a permanent
   ``550 5.1.2``; a DNS failure is temporary. Exchanges that are IP addresses are
   refused (an MX must name a host, RFC 5321 5.1), and so are records at or after our
   own name (the same section's rule against loops).

Routing works on the domain's A-label form (IDNA), which is what the DNS holds. DNS is
injected (:class:`Dns`): :class:`DnsPythonResolver` asks the system's name servers through
dnspython; tests use :class:`FakeDns`. Finding the addresses of the hops (A/AAAA) is the
client's job (:mod:`smtpx.io.resolve`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.MX
import dns.resolver

from smtpx.envelope import HostPort
from smtpx.errors import SMTPXError
from smtpx.io.resolve import is_ip_address
from smtpx.mta.config import MtaConfig, a_label
from smtpx.protocol.replies import Reply

__all__ = [
    "Dns",
    "DnsError",
    "DnsPythonResolver",
    "DnsTemporaryError",
    "FakeDns",
    "NoRecords",
    "NoRoute",
    "NoSuchDomain",
    "Route",
    "RouteKind",
    "RouteLater",
    "RouteResult",
    "Router",
]

MX_PORT = 25  # RFC 5321 4.5.4


# ---------------------------------------------------------------------------------------
# DNS


class DnsError(SMTPXError):
    """An MX lookup did not give records. ``domain`` is the name asked about."""

    def __init__(self, domain: str, message: str) -> None:
        super().__init__(f"{domain}: {message}")
        self.domain = domain


class NoSuchDomain(DnsError):
    """NXDOMAIN: the domain does not exist (permanent)."""

    def __init__(self, domain: str) -> None:
        super().__init__(domain, "no such domain (NXDOMAIN)")


class NoRecords(DnsError):
    """The domain exists but has no MX records (NOERROR, empty answer)."""

    def __init__(self, domain: str) -> None:
        super().__init__(domain, "no MX records")


class DnsTemporaryError(DnsError):
    """The lookup failed for now: a timeout, SERVFAIL, no name server answering."""


class Dns(Protocol):
    """MX lookups."""

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """The MX records of ``domain`` (an A-label name) as (preference, exchange), in
        any order; a null MX's exchange is ``"."``. Raises :class:`NoSuchDomain`,
        :class:`NoRecords` or :class:`DnsTemporaryError`."""
        ...


class DnsPythonResolver:
    """MX lookups through :mod:`dns.asyncresolver`.

    By default a resolver configured from the system (``/etc/resolv.conf``), made on the
    first lookup, with a TTL-respecting cache. Pass ``resolver`` to use another (tests
    pass one aimed at a fake name server, or a stub). ``lifetime`` bounds each lookup,
    retries included, in seconds.
    """

    def __init__(
        self, resolver: dns.asyncresolver.Resolver | None = None, *, lifetime: float = 10.0
    ) -> None:
        self._resolver = resolver
        self.lifetime = lifetime

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            resolver = dns.asyncresolver.Resolver()
            resolver.cache = dns.resolver.LRUCache()
            self._resolver = resolver
        return self._resolver

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        name = domain.rstrip(".") + "."
        try:
            answer = await self._get_resolver().resolve(
                name, dns.rdatatype.MX, search=False, lifetime=self.lifetime
            )
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomain(domain) from None
        except dns.resolver.NoAnswer:
            raise NoRecords(domain) from None
        except dns.resolver.YXDOMAIN:
            # A DNAME made the name too long: it cannot exist.
            raise NoSuchDomain(domain) from None
        except dns.exception.Timeout:
            raise DnsTemporaryError(domain, "DNS lookup timed out") from None
        except dns.resolver.NoNameservers as exc:
            raise DnsTemporaryError(domain, f"no name server answered: {exc}") from None
        except dns.exception.DNSException as exc:  # includes NoResolverConfiguration
            raise DnsTemporaryError(domain, f"DNS lookup failed: {exc}") from None
        records: list[tuple[int, str]] = []
        for rdata in answer:
            if not isinstance(rdata, dns.rdtypes.ANY.MX.MX):
                continue
            exchange = rdata.exchange
            text = "." if exchange == dns.name.root else exchange.to_text(omit_final_dot=True)
            records.append((int(rdata.preference), text))
        if not records:
            raise NoRecords(domain)
        return records


def _dns_key(domain: str) -> str:
    return domain.lower().rstrip(".")


class FakeDns:
    """A fixed MX table, for tests.

    ``mx`` maps domains to their records; ``nxdomain`` names domains that do not exist;
    ``failing`` names domains whose lookups fail temporarily. Any other domain exists
    without MX records (so it is its own implicit MX). ``queries`` records each lookup.
    """

    def __init__(
        self,
        *,
        mx: Mapping[str, Sequence[tuple[int, str]]] | None = None,
        nxdomain: Iterable[str] = (),
        failing: Iterable[str] = (),
    ) -> None:
        self._mx = {_dns_key(domain): list(records) for domain, records in (mx or {}).items()}
        self._nxdomain = {_dns_key(domain) for domain in nxdomain}
        self._failing = {_dns_key(domain) for domain in failing}
        self.queries: list[str] = []

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        self.queries.append(domain)
        key = _dns_key(domain)
        if key in self._failing:
            raise DnsTemporaryError(domain, "SERVFAIL (fake)")
        if key in self._nxdomain:
            raise NoSuchDomain(domain)
        records = self._mx.get(key)
        if not records:
            raise NoRecords(domain)
        return list(records)


# ---------------------------------------------------------------------------------------
# Results


# Which rule of the Router gave a route (in its order): a local domain, an explicit
# route, the smarthost, an address literal, MX records, or the domain as its own MX.
RouteKind = Literal["local", "route", "smarthost", "literal", "mx", "implicit-mx"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where to deliver: ``hops`` in order of preference (empty for local delivery).

    ``name`` identifies the destination, for per-destination limits and caches: the
    domain for MX routes and local domains, the matching route key for explicit routes
    (mail to every subdomain shares it), ``host:port`` for the smarthost. ``kind`` says
    which rule gave it (outbound TLS policies apply to MX routes only).
    """

    name: str
    hops: tuple[HostPort, ...]
    local: bool = False
    kind: RouteKind = field(default="route", compare=False)  # an explanation, not identity

    @property
    def by_mx(self) -> bool:
        return self.kind in ("mx", "implicit-mx")


@dataclass(frozen=True, slots=True)
class NoRoute:
    """The domain cannot receive mail, for good: ``reply`` says why (for the bounce)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class RouteLater:
    """No route for now (a DNS failure): try again later."""

    reason: str


RouteResult = Route | NoRoute | RouteLater


# ---------------------------------------------------------------------------------------
# The router


class Router:
    """Decides where mail for a domain goes (see the module docstring).

    ``rng`` shuffles MX records of equal preference; tests pass a seeded one.
    ``mx_port`` is the port of MX hosts: 25, which only tests change.
    """

    def __init__(self, config: MtaConfig, dns: Dns, rng: random.Random | None = None) -> None:
        self.config = config
        self.dns = dns
        self.mx_port = MX_PORT
        self._rng = rng if rng is not None else random.Random()
        try:
            self._own_name = a_label(config.hostname)
        except ValueError:
            self._own_name = config.hostname.lower().rstrip(".")

    async def route(self, domain: str) -> RouteResult:
        """The route for mail to ``domain`` (a U- or A-label domain, or an address
        literal in brackets)."""
        text = domain.strip()
        if text.startswith("[") and text.endswith("]"):
            return self._literal(text)
        try:
            name = a_label(text)
        except ValueError as exc:
            return NoRoute(Reply.of(550, f"Bad destination domain {domain!r}: {exc}", "5.1.2"))
        if name in self.config.relay.local_domains:
            return Route(name=name, hops=(), local=True, kind="local")
        explicit = self._explicit(name)
        if explicit is not None:
            return explicit
        smarthost = self.config.routing.smarthost
        if smarthost is not None:
            return Route(name=str(smarthost), hops=(smarthost,), kind="smarthost")
        return await self._mx(name)

    def _explicit(self, name: str) -> Route | None:
        routes = self.config.routing.routes
        labels = name.split(".")
        for start in range(len(labels)):
            key = ".".join(labels[start:])
            hops = routes.get(key)
            if hops is not None:
                return Route(name=key, hops=hops)
        return None

    def _literal(self, text: str) -> RouteResult:
        # RFC 5321 5.1: "If it is an address literal, the address is the target". Only
        # when no smarthost takes everything (the order in the module docstring).
        smarthost = self.config.routing.smarthost
        if smarthost is not None:
            return Route(name=str(smarthost), hops=(smarthost,), kind="smarthost")
        inner = text[1:-1]
        if inner[:5].lower() == "ipv6:":
            inner = inner[5:]
        if not is_ip_address(inner):
            return NoRoute(Reply.of(550, f"Unsupported address literal {text}", "5.1.2"))
        hop = HostPort(inner, self.mx_port)
        return Route(name=str(hop), hops=(hop,), kind="literal")

    async def _mx(self, name: str) -> RouteResult:
        try:
            records = await self.dns.mx(name)
        except NoSuchDomain:
            return NoRoute(Reply.of(550, f"Domain {name} does not exist (NXDOMAIN)", "5.1.2"))
        except NoRecords:
            # RFC 5321 5.1: no MX records, so the domain is its own (implicit) MX, and the
            # client will look up its A and AAAA records.
            if name == self._own_name:
                return self._loop(name)
            return Route(name=name, hops=(HostPort(name, self.mx_port),), kind="implicit-mx")
        except DnsTemporaryError as exc:
            return RouteLater(f"MX lookup for {name} failed: {exc}")
        except DnsError as exc:  # another implementation's subclass: treat as temporary
            return RouteLater(f"MX lookup for {name} failed: {exc}")

        exchanges = [(pref, _dns_key(exchange) or ".") for pref, exchange in records]
        real = [(pref, host) for pref, host in exchanges if host != "."]
        if not real:
            # RFC 7505 section 3: a single record of preference 0 whose exchange is the
            # root. A set of only root exchanges cannot be delivered to either.
            return NoRoute(Reply.of(556, f"Domain {name} does not accept mail (null MX)", "5.1.10"))
        named = [(pref, host) for pref, host in real if not is_ip_address(host)]
        if not named:
            return NoRoute(
                Reply.of(
                    550,
                    f"Domain {name}: every MX is an IP address, not a host name (RFC 5321 5.1)",
                    "5.4.4",
                )
            )
        # RFC 5321 5.1: if our own name is in the list, discard it and every record of
        # equal or higher preference number, lest the mail loop back to us.
        own = [pref for pref, host in named if host == self._own_name]
        if own:
            named = [(pref, host) for pref, host in named if pref < min(own)]
            if not named:
                return self._loop(name)
        hops: list[HostPort] = []
        for preference in sorted({pref for pref, _ in named}):
            # Sorted first so the result depends on the rng alone, not on answer order.
            group = sorted({host for pref, host in named if pref == preference})
            self._rng.shuffle(group)
            for host in group:
                try:
                    hop = HostPort(host, self.mx_port)
                except ValueError:
                    continue  # not a usable host name
                if hop not in hops:
                    hops.append(hop)
        if not hops:
            return NoRoute(Reply.of(550, f"Domain {name}: no usable MX host", "5.4.4"))
        return Route(name=name, hops=tuple(hops), kind="mx")

    def _loop(self, name: str) -> NoRoute:
        return NoRoute(
            Reply.of(
                550,
                f"Mail for {name} loops back to myself ({self._own_name})",
                "5.4.6",
            )
        )

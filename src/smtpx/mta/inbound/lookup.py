"""DNS for judging inbound mail: TXT records and name existence through dnspython's async
resolver, with the outcome as a closed type (records, no such name, no records, a
temporary failure), and a synchronous twin for libraries that resolve synchronously in a
worker thread (pyspf).

Every lookup of SPF, DKIM, DMARC and ARC goes through one :class:`AuthDns`, so one
resolver configuration (``[dns]``, or the resolver a test injects) serves them all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from smtpx.errors import ConfigError

__all__ = ["Answer", "AuthDns", "Outcome", "make_resolver"]


class Outcome(enum.Enum):
    FOUND = "found"  # records of the type asked for
    NODATA = "nodata"  # the name exists, without records of that type
    NXDOMAIN = "nxdomain"  # the name does not exist (RFC 8020: nor anything below it)
    TEMPERROR = "temperror"  # a timeout, SERVFAIL, no server answering: try again later


@dataclass(frozen=True, slots=True)
class Answer:
    """What a lookup gave: for TXT, each record's character-strings joined (RFC 7208
    3.3, RFC 6376 3.6.2.2, RFC 9989 4.6); for other types, the records' text."""

    outcome: Outcome
    records: tuple[bytes, ...] = ()
    error: str = ""

    @property
    def found(self) -> bool:
        return self.outcome is Outcome.FOUND


def make_resolver(
    nameservers: tuple[tuple[str, int], ...] = (), *, timeout: float = 5.0
) -> dns.asyncresolver.Resolver:
    """A dnspython async resolver with a cache that honours TTLs: the system's name
    servers (``/etc/resolv.conf``), or ``nameservers`` as (address, port) pairs."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in nameservers]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise ConfigError(
                "no name servers in /etc/resolv.conf: set them in [dns] nameservers",
                key="dns.nameservers",
            ) from None
    resolver.cache = dns.resolver.LRUCache()
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    return resolver


class AuthDns:
    """Lookups for mail authentication. ``timeout`` bounds each lookup, retries included."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, *, timeout: float = 5.0) -> None:
        self.resolver = resolver
        self.timeout = timeout

    async def txt(self, name: str) -> Answer:
        """The TXT records of ``name`` (an A-label domain name)."""
        return await self.query(name, "TXT")

    async def exists(self, name: str) -> bool | None:
        """Whether ``name`` exists (any answer but NXDOMAIN, RFC 9989 11.4); None when
        the DNS did not say."""
        answer = await self.query(name, "A")
        if answer.outcome is Outcome.TEMPERROR:
            return None
        return answer.outcome is not Outcome.NXDOMAIN

    async def query(self, name: str, rdtype: str) -> Answer:
        try:
            qname = dns.name.from_text(name.rstrip(".") + ".")
        except dns.exception.DNSException as exc:  # a label of 64 octets, a name too long
            return Answer(Outcome.NXDOMAIN, error=f"not a valid DNS name: {exc}")
        try:
            found = await self.resolver.resolve(
                qname, rdtype, search=False, lifetime=self.timeout, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return Answer(Outcome.NXDOMAIN)
        except (dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return Answer(Outcome.NODATA)
        except dns.exception.Timeout:
            return Answer(Outcome.TEMPERROR, error=f"{name} {rdtype}: DNS timeout")
        except dns.exception.DNSException as exc:  # SERVFAIL, REFUSED, no name server
            return Answer(Outcome.TEMPERROR, error=f"{name} {rdtype}: {exc}")
        if found.rrset is None:
            return Answer(Outcome.NODATA)
        return Answer(Outcome.FOUND, tuple(_data(rdata) for rdata in found.rrset))

    def blocking(self) -> dns.resolver.Resolver:
        """A synchronous twin of this resolver, for libraries that resolve synchronously
        in a worker thread: the same name servers, port, limits and EDNS options, and the
        same cache (dnspython's caches lock; answers found by either serve both)."""
        source = self.resolver
        twin = dns.resolver.Resolver(configure=False)
        twin.nameservers = list(source.nameservers)
        twin.port = source.port
        twin.lifetime = self.timeout
        twin.timeout = source.timeout
        twin.use_edns(source.edns, source.ednsflags, source.payload)
        twin.flags = source.flags
        twin.cache = source.cache
        return twin


def _data(rdata: Any) -> bytes:
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings)
    return str(rdata.to_text()).encode()

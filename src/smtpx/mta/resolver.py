"""One DNS resolver for every routing decision: MX records (the :class:`Router`'s
:class:`~smtpx.mta.routing.Dns`), MX host addresses (the client's
:class:`~smtpx.io.Resolver`), and the lookups of outbound TLS policies (MTA-STS TXT
records, TLSA records), which also say whether DNSSEC secured their answer.

"Secure" is the AD bit of the answer, believed only with ``trust_ad``: when the resolver
is the validating one the operator named (``routing.resolver`` with ``routing.dane``),
on this host or across a link they trust (RFC 7672 section 2.1). The queries then carry
the DO bit. A resolver's AD bit is not worth more than the path to it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rdata
import dns.rdatatype
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult

from smtpx.mta.config import ListenAddress
from smtpx.mta.routing import DnsPythonResolver

__all__ = ["Lookup", "RoutingResolver"]


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer to one query. ``records`` is empty when the name or the type does not
    exist; ``secure`` says a trusted validating resolver vouched for the answer (or for
    the denial); ``error`` says the lookup failed (SERVFAIL, which a validating resolver
    answers for DNSSEC-bogus data, a timeout, no answer at all)."""

    name: str
    records: tuple[dns.rdata.Rdata, ...] = ()
    secure: bool = False
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


class RoutingResolver(DnsPythonResolver):
    """MX, address and policy lookups through one :mod:`dns.asyncresolver` resolver."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver | None = None,
        *,
        lifetime: float = 10.0,
        trust_ad: bool = False,
    ) -> None:
        super().__init__(resolver, lifetime=lifetime)
        self.trust_ad = trust_ad

    @classmethod
    def at(cls, address: ListenAddress | None, *, trust_ad: bool = False) -> RoutingResolver:
        """A resolver asking ``address`` (None: the system's, from /etc/resolv.conf,
        read at the first lookup), with a cache; with ``trust_ad``, queries carry the DO
        bit and answers' AD bit counts."""
        if address is None:
            return cls(trust_ad=trust_ad)
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [address.host]
        resolver.port = address.port
        resolver.cache = dns.resolver.LRUCache()
        if trust_ad:
            resolver.use_edns(0, dns.flags.DO, 1232)
        return cls(resolver, trust_ad=trust_ad)

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        fresh = self._resolver is None
        resolver = super()._get_resolver()
        if fresh and self.trust_ad:
            resolver.use_edns(0, dns.flags.DO, 1232)
        return resolver

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        """The ``rdtype`` records of ``name`` (absolute or not: a final dot is added)."""
        qname = name.rstrip(".") + "."
        try:
            answer = await self._get_resolver().resolve(
                qname, rdtype, search=False, lifetime=self.lifetime, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[object, dns.message.Message] = exc.kwargs.get("responses", {})
            secure = bool(responses) and all(map(self._secure, responses.values()))
            return Lookup(name, secure=secure)
        except dns.exception.Timeout:
            return Lookup(name, error="DNS lookup timed out")
        except dns.resolver.NoNameservers as exc:
            return Lookup(name, error=f"no name server answered (SERVFAIL?): {exc}")
        except dns.exception.DNSException as exc:
            return Lookup(name, error=f"DNS lookup failed: {exc}")
        records = tuple(answer.rrset) if answer.rrset is not None else ()
        return Lookup(name, records, self._secure(answer.response))

    def _secure(self, response: dns.message.Message | None) -> bool:
        return self.trust_ad and response is not None and bool(response.flags & dns.flags.AD)

    async def txt(self, name: str) -> tuple[list[str], Lookup]:
        """The TXT records of ``name``, each one's strings joined (RFC 7208 3.3)."""
        found = await self.lookup(name, "TXT")
        texts = [
            b"".join(getattr(record, "strings", ())).decode("utf-8", "replace")
            for record in found.records
        ]
        return texts, found

    async def addresses(self, host: str) -> list[str]:
        """The IPv4 then IPv6 addresses of ``host`` (:class:`smtpx.io.Resolver`)."""
        found: list[str] = []
        problems: list[str] = []
        for rdtype in ("A", "AAAA"):
            answer = await self.lookup(host, rdtype)
            if answer.error is not None:
                problems.append(f"{rdtype}: {answer.error}")
            found.extend(str(getattr(record, "address", "")) for record in answer.records)
        if not found:
            raise OSError(f"{host}: no address ({'; '.join(problems) or 'no A or AAAA records'})")
        return found

    def aiohttp_resolver(self) -> _AiohttpResolver:
        """This resolver for aiohttp (MTA-STS policy fetches, TLS-RPT uploads), so that
        they resolve where routing does."""
        return _AiohttpResolver(self)


class _AiohttpResolver(AbstractResolver):
    """aiohttp's resolver interface over a :class:`RoutingResolver`."""

    def __init__(self, resolver: RoutingResolver) -> None:
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._resolver.addresses(host)
        results: list[ResolveResult] = []
        for address in addresses:
            kind = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, kind):
                continue
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": kind,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not results:
            raise OSError(f"{host}: no address of the family asked for")
        return results

    async def close(self) -> None:
        return None

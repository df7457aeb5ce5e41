"""Routing: local domains, explicit routes, the smarthost, MX (RFC 5321 5.1, RFC 7505).

No test asks real DNS: the router gets a FakeDns, and DnsPythonResolver is fed a stub
resolver or a fake name server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, cast

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from smtpx.envelope import HostPort
from smtpx.mta.config import MtaConfig
from smtpx.mta.routing import (
    DnsError,
    DnsPythonResolver,
    DnsTemporaryError,
    FakeDns,
    NoRecords,
    NoRoute,
    NoSuchDomain,
    Route,
    RouteLater,
    Router,
)
from smtpx.protocol.replies import Reply


def make_router(
    dns: FakeDns | None = None,
    *,
    rng: random.Random | None = None,
    hostname: str = "relay.self.test",
    **sections: Mapping[str, object],
) -> Router:
    config = MtaConfig.from_dict({"hostname": hostname, **sections}, base_dir="/nonexistent")
    return Router(config, dns or FakeDns(), rng=rng)


def hops(*names: str) -> tuple[HostPort, ...]:
    return tuple(HostPort.parse(name) for name in names)


# ---------------------------------------------------------------------------------------
# Local, explicit, smarthost


async def test_local_domains_are_delivered_locally() -> None:
    dns = FakeDns()
    router = make_router(dns, relay={"local_domains": ["example.com", "bücher.example"]})
    assert await router.route("example.com") == Route(name="example.com", hops=(), local=True)
    assert await router.route("EXAMPLE.COM.") == Route(name="example.com", hops=(), local=True)
    assert await router.route("Bücher.example") == Route(
        name="xn--bcher-kva.example", hops=(), local=True
    )
    assert await router.route("xn--bcher-kva.example") == Route(
        name="xn--bcher-kva.example", hops=(), local=True
    )
    assert dns.queries == []


async def test_default_local_domain_is_localhost() -> None:
    assert await make_router().route("localhost") == Route(name="localhost", hops=(), local=True)


async def test_local_beats_routes_and_smarthost() -> None:
    router = make_router(
        relay={"local_domains": ["example.com"]},
        routing={"smarthost": "smart.test:587", "routes": {"example.com": ["mx.internal"]}},
    )
    assert (await router.route("example.com")) == Route(name="example.com", hops=(), local=True)


async def test_explicit_route_exact_then_parent_suffix() -> None:
    dns = FakeDns()
    router = make_router(
        dns,
        routing={
            "routes": {
                "example.com": ["mx1.internal:2525", "mx2.internal"],
                "deep.example.com": ["[2001:db8::25]:25"],
            }
        },
    )
    wide = hops("mx1.internal:2525", "mx2.internal:25")
    assert await router.route("example.com") == Route(name="example.com", hops=wide)
    assert await router.route("Sub.Example.com") == Route(name="example.com", hops=wide)
    assert await router.route("a.b.example.com") == Route(name="example.com", hops=wide)
    # The longest matching route wins.
    deep = (HostPort("2001:db8::25", 25),)
    assert await router.route("deep.example.com") == Route(name="deep.example.com", hops=deep)
    assert await router.route("x.deep.example.com") == Route(name="deep.example.com", hops=deep)
    assert dns.queries == []
    # A suffix match is on whole labels: badexample.com is not example.com.
    assert await router.route("badexample.com") == Route(
        name="badexample.com", hops=hops("badexample.com")
    )
    assert dns.queries == ["badexample.com"]


async def test_explicit_route_beats_smarthost() -> None:
    router = make_router(
        routing={"smarthost": "smart.test:587", "routes": {"example.com": ["mx.internal"]}}
    )
    assert await router.route("mail.example.com") == Route(
        name="example.com", hops=hops("mx.internal")
    )


async def test_smarthost_beats_mx() -> None:
    dns = FakeDns(mx={"example.org": [(10, "mx.example.org")]})
    router = make_router(dns, routing={"smarthost": "smart.test:587"})
    expected = Route(name="smart.test:587", hops=(HostPort("smart.test", 587),))
    assert await router.route("example.org") == expected
    assert await router.route("[192.0.2.7]") == expected
    assert await router.route("Bücher.example") == expected
    assert dns.queries == []


async def test_explicit_route_with_idna_key() -> None:
    router = make_router(routing={"routes": {"Bücher.example": ["mx.bücher.example"]}})
    assert await router.route("mail.bücher.example") == Route(
        name="xn--bcher-kva.example", hops=hops("mx.xn--bcher-kva.example")
    )


# ---------------------------------------------------------------------------------------
# MX


async def test_mx_in_preference_order_on_port_25() -> None:
    dns = FakeDns(
        mx={"example.org": [(30, "mx3.example.org."), (10, "MX1.example.org."), (20, "mx2.net")]}
    )
    route = await make_router(dns).route("example.org")
    assert route == Route(
        name="example.org", hops=hops("mx1.example.org", "mx2.net", "mx3.example.org")
    )
    assert isinstance(route, Route)
    assert all(hop.port == 25 for hop in route.hops)
    assert dns.queries == ["example.org"]


async def test_equal_preferences_are_shuffled_with_the_rng() -> None:
    records = [(10, "a.mx"), (10, "b.mx"), (10, "c.mx"), (5, "first.mx"), (20, "last.mx")]

    async def order(seed: int, answer: Sequence[tuple[int, str]] = records) -> list[str]:
        route = await make_router(
            FakeDns(mx={"example.org": answer}), rng=random.Random(seed)
        ).route("example.org")
        assert isinstance(route, Route)
        return [hop.host for hop in route.hops]

    # Deterministic for a given seed, whatever order the DNS answered in.
    for seed in range(5):
        assert await order(seed) == await order(seed)
        assert await order(seed) == await order(seed, list(reversed(records)))
    seen = set()
    for seed in range(60):
        result = await order(seed)
        assert result[0] == "first.mx"
        assert result[-1] == "last.mx"
        assert sorted(result[1:4]) == ["a.mx", "b.mx", "c.mx"]
        seen.add(tuple(result[1:4]))
    # Every permutation of the equal-preference group turns up.
    assert seen == set(itertools.permutations(["a.mx", "b.mx", "c.mx"]))


async def test_shuffle_uses_the_injected_rng_exactly() -> None:
    rng = random.Random(7)
    expected = sorted(["a.mx", "b.mx", "c.mx", "d.mx"])
    random.Random(7).shuffle(expected)
    dns = FakeDns(mx={"example.org": [(10, name) for name in ["d.mx", "b.mx", "a.mx", "c.mx"]]})
    route = await make_router(dns, rng=rng).route("example.org")
    assert isinstance(route, Route)
    assert [hop.host for hop in route.hops] == expected


async def test_duplicate_exchanges_are_tried_once() -> None:
    dns = FakeDns(mx={"example.org": [(10, "mx.example.org"), (20, "MX.example.org.")]})
    assert await make_router(dns).route("example.org") == Route(
        name="example.org", hops=hops("mx.example.org")
    )


async def test_null_mx() -> None:
    dns = FakeDns(mx={"example.org": [(0, ".")]})
    result = await make_router(dns).route("example.org")
    assert isinstance(result, NoRoute)
    assert result.reply.code == 556
    assert str(result.reply.enhanced) == "5.1.10"
    assert result.reply == Reply.of(
        556, "Domain example.org does not accept mail (null MX)", "5.1.10"
    )


async def test_null_mx_mixed_with_real_records_uses_the_real_ones() -> None:
    dns = FakeDns(mx={"example.org": [(0, "."), (10, "mx.example.org")]})
    assert await make_router(dns).route("example.org") == Route(
        name="example.org", hops=hops("mx.example.org")
    )


async def test_nxdomain() -> None:
    dns = FakeDns(nxdomain={"nowhere.example"})
    result = await make_router(dns).route("nowhere.example")
    assert result == NoRoute(
        Reply.of(550, "Domain nowhere.example does not exist (NXDOMAIN)", "5.1.2")
    )


async def test_no_mx_means_the_domain_is_its_own_mx() -> None:
    # RFC 5321 5.1: without MX records the domain is an implicit MX of preference 0; the
    # client then looks up its A and AAAA records.
    dns = FakeDns(mx={"example.org": []})
    assert await make_router(dns).route("example.org") == Route(
        name="example.org", hops=(HostPort("example.org", 25),)
    )


async def test_temporary_dns_error() -> None:
    dns = FakeDns(failing={"example.org"})
    result = await make_router(dns).route("example.org")
    assert isinstance(result, RouteLater)
    assert "example.org" in result.reason
    assert "SERVFAIL" in result.reason


async def test_idna_domain_is_routed_on_its_a_label() -> None:
    dns = FakeDns(mx={"xn--bcher-kva.example": [(10, "mx.xn--bcher-kva.example")]})
    router = make_router(dns)
    expected = Route(name="xn--bcher-kva.example", hops=hops("mx.xn--bcher-kva.example"))
    assert await router.route("Bücher.example") == expected
    assert await router.route("xn--bcher-kva.example") == expected
    assert dns.queries == ["xn--bcher-kva.example", "xn--bcher-kva.example"]


async def test_idna_2008_form() -> None:
    # IDNA 2008 keeps the sharp s (xn--fa-hia), where IDNA 2003 maps it to "ss": the
    # former is what the DNS holds for faß.de.
    dns = FakeDns(mx={"xn--fa-hia.de": [(10, "mx.xn--fa-hia.de")]})
    result = await make_router(dns).route("faß.de")
    assert result == Route(name="xn--fa-hia.de", hops=hops("mx.xn--fa-hia.de"))


async def test_ip_address_exchanges_are_refused() -> None:
    dns = FakeDns(mx={"example.org": [(5, "192.0.2.1"), (10, "mx.example.org"), (15, "::1")]})
    assert await make_router(dns).route("example.org") == Route(
        name="example.org", hops=hops("mx.example.org")
    )
    dns = FakeDns(mx={"example.org": [(5, "192.0.2.1"), (10, "[2001:db8::1]")]})
    result = await make_router(dns).route("example.org")
    assert isinstance(result, NoRoute)
    assert result.reply.code == 550
    assert str(result.reply.enhanced) == "5.4.4"
    assert "IP address" in result.reply.text


async def test_own_name_and_worse_mx_records_are_dropped() -> None:
    dns = FakeDns(
        mx={
            "example.org": [
                (10, "primary.example.org"),
                (20, "relay.self.test"),
                (20, "peer.example.org"),
                (30, "backup.example.org"),
            ]
        }
    )
    assert await make_router(dns).route("example.org") == Route(
        name="example.org", hops=hops("primary.example.org")
    )


async def test_own_name_as_best_mx_is_a_loop() -> None:
    dns = FakeDns(mx={"example.org": [(10, "Relay.Self.Test."), (20, "backup.example.org")]})
    result = await make_router(dns).route("example.org")
    assert isinstance(result, NoRoute)
    assert str(result.reply.enhanced) == "5.4.6"
    assert "loops back to myself" in result.reply.text
    # The same for our own name without MX records (an implicit MX pointing at us).
    result = await make_router(FakeDns()).route("relay.self.test")
    assert isinstance(result, NoRoute)
    assert str(result.reply.enhanced) == "5.4.6"


async def test_address_literals() -> None:
    router = make_router()
    assert await router.route("[192.0.2.7]") == Route(
        name="192.0.2.7:25", hops=(HostPort("192.0.2.7", 25),)
    )
    assert await router.route("[IPv6:2001:db8::7]") == Route(
        name="[2001:db8::7]:25", hops=(HostPort("2001:db8::7", 25),)
    )
    result = await router.route("[tag:whatever]")
    assert isinstance(result, NoRoute)
    assert str(result.reply.enhanced) == "5.1.2"


@pytest.mark.parametrize("domain", ["", "bad domain", "a..b", "-x.example"])
async def test_invalid_domain(domain: str) -> None:
    result = await make_router().route(domain)
    assert isinstance(result, NoRoute)
    assert result.reply.code == 550
    assert str(result.reply.enhanced) == "5.1.2"


async def test_fake_dns() -> None:
    dns = FakeDns(
        mx={"Example.org.": [(10, "mx.example.org")]}, nxdomain={"gone.test"}, failing={"x.test"}
    )
    assert await dns.mx("example.org") == [(10, "mx.example.org")]
    with pytest.raises(NoSuchDomain):
        await dns.mx("GONE.test")
    with pytest.raises(DnsTemporaryError):
        await dns.mx("x.test.")
    with pytest.raises(NoRecords):
        await dns.mx("other.test")
    assert dns.queries == ["example.org", "GONE.test", "x.test.", "other.test"]


# ---------------------------------------------------------------------------------------
# DnsPythonResolver


def mx_answer(name: str, *records: str) -> dns.resolver.Answer:
    qname = dns.name.from_text(name)
    query = dns.message.make_query(qname, dns.rdatatype.MX)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(qname, 300, "IN", "MX", *records))
    # Through the wire form, as from a server (which also builds the message's index).
    received = dns.message.from_wire(response.to_wire())
    assert isinstance(received, dns.message.QueryMessage)
    return dns.resolver.Answer(qname, dns.rdatatype.MX, dns.rdataclass.IN, received)


class StubResolver(dns.asyncresolver.Resolver):
    """Answers every lookup with ``outcome`` (or raises it); records the calls."""

    def __init__(self, outcome: dns.resolver.Answer | BaseException) -> None:
        super().__init__(configure=False)
        self.outcome = outcome
        self.calls: list[tuple[Any, Any, dict[str, Any]]] = []

    async def resolve(  # type: ignore[override]
        self, qname: Any, rdtype: Any = dns.rdatatype.A, **kwargs: Any
    ) -> dns.resolver.Answer:
        self.calls.append((qname, rdtype, kwargs))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def test_dnspython_resolver_can_be_constructed() -> None:
    # The system resolver is only configured on the first lookup: constructing one reads
    # nothing and sends nothing.
    resolver = DnsPythonResolver()
    assert resolver.lifetime == 10.0
    assert DnsPythonResolver(lifetime=2.0).lifetime == 2.0


async def test_dnspython_resolver_maps_an_answer() -> None:
    stub = StubResolver(mx_answer("example.org.", "10 mx1.example.org.", "20 MX2.example.net."))
    resolver = DnsPythonResolver(stub, lifetime=3.0)
    assert sorted(await resolver.mx("example.org")) == [
        (10, "mx1.example.org"),
        (20, "MX2.example.net"),
    ]
    [(qname, rdtype, kwargs)] = stub.calls
    assert qname == "example.org."  # absolute: no search list
    assert rdtype == dns.rdatatype.MX
    assert kwargs == {"search": False, "lifetime": 3.0}


async def test_dnspython_resolver_maps_a_null_mx() -> None:
    stub = StubResolver(mx_answer("example.org.", "0 ."))
    assert await DnsPythonResolver(stub).mx("example.org") == [(0, ".")]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (dns.resolver.NXDOMAIN, NoSuchDomain),
        (dns.resolver.NoAnswer, NoRecords),
        (dns.resolver.YXDOMAIN, NoSuchDomain),
        (dns.resolver.LifetimeTimeout, DnsTemporaryError),
        (dns.exception.Timeout, DnsTemporaryError),
        (dns.resolver.NoNameservers, DnsTemporaryError),
        (dns.resolver.NoResolverConfiguration, DnsTemporaryError),
    ],
)
async def test_dnspython_resolver_maps_errors(
    error: type[dns.exception.DNSException], expected: type[DnsError]
) -> None:
    stub = StubResolver(error())
    with pytest.raises(expected) as caught:
        await DnsPythonResolver(stub).mx("example.org")
    assert caught.value.domain == "example.org"


class FakeNameServer(asyncio.DatagramProtocol):
    """A UDP name server on 127.0.0.1 with a fixed MX table."""

    def __init__(
        self,
        mx: Mapping[str, Iterable[str]],
        nxdomain: Iterable[str] = (),
        servfail: Iterable[str] = (),
    ) -> None:
        self.mx = {name: list(records) for name, records in mx.items()}
        self.nxdomain = set(nxdomain)
        self.servfail = set(servfail)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in self.nxdomain:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif name in self.mx and question.rdtype == dns.rdatatype.MX and self.mx[name]:
            response.answer.append(
                dns.rrset.from_text(question.name, 60, "IN", "MX", *self.mx[name])
            )
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def name_server() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = FakeNameServer(
        mx={"example.org": ["10 mx1.example.org.", "5 mx0.example.org."], "nomx.test": []},
        nxdomain={"gone.test"},
        servfail={"broken.test"},
    )
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_dnspython_resolver_against_a_loopback_name_server(name_server: int) -> None:
    inner = dns.asyncresolver.Resolver(configure=False)
    inner.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", name_server)]
    resolver = DnsPythonResolver(inner, lifetime=5.0)
    assert sorted(await resolver.mx("example.org")) == [
        (5, "mx0.example.org"),
        (10, "mx1.example.org"),
    ]
    with pytest.raises(NoRecords):
        await resolver.mx("nomx.test")
    with pytest.raises(NoSuchDomain):
        await resolver.mx("gone.test")
    with pytest.raises(DnsTemporaryError):
        await resolver.mx("broken.test")
    # And the whole way through the router.
    config = MtaConfig.from_dict({"hostname": "relay.self.test"}, base_dir="/nonexistent")
    router = Router(config, resolver)
    assert await router.route("example.org") == Route(
        name="example.org", hops=hops("mx0.example.org", "mx1.example.org")
    )
    assert isinstance(await router.route("gone.test"), NoRoute)
    assert isinstance(await router.route("broken.test"), RouteLater)

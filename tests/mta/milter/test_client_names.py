"""A client's verified host name for the milters (``[server] client_names``): the PTR
name counts only when its address records lead back to the client (a real NSD on
127.0.0.1 serves the zones)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import dns.asyncresolver

from smtpx.mta.app import Mta
from smtpx.mta.inbound.clientname import ClientName, client_name
from smtpx.mta.inbound.lookup import AuthDns
from smtpx.mta.routing import FakeDns
from smtpx.testing.dns import DnsLab, Zone
from tests.mta.milter.fake import FakeMilter, serving
from tests.mta.milter.test_milters import commands, mta_config, talk

StartLab = Callable[..., DnsLab]


def zones() -> list[Zone]:
    reverse = (
        Zone("127.in-addr.arpa")
        .add("1.0.0", "PTR", "mx.client.test.")  # 127.0.0.1 -> leads back
        .add("2.0.0", "PTR", "forged.client.test.")  # 127.0.0.2 -> another address
        .add("2.0.0", "PTR", "also.client.test.")
    )
    forward = (
        Zone("client.test")
        .add("mx", "A", "127.0.0.1")
        .add("forged", "A", "127.0.0.9")
        .add("also", "A", "127.0.0.10")
    )
    v6 = Zone("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa").add(
        "@", "PTR", "six.client.test."
    )
    forward.add("six", "AAAA", "::1")
    return [reverse, forward, v6]


async def test_forward_confirmed_names(dns_lab: StartLab) -> None:
    lookup = AuthDns(dns_lab(*zones()).resolver(), timeout=2.0)
    assert await client_name(lookup, "127.0.0.1") == ClientName(
        "mx.client.test", "mx.client.test", "OK"
    )
    assert await client_name(lookup, "::1") == ClientName(
        "six.client.test", "six.client.test", "OK"
    )
    assert await client_name(lookup, "127.0.0.2") == ClientName(
        "unknown", "forged.client.test", "FORGED"
    )
    assert await client_name(lookup, "127.0.0.3") == ClientName("unknown", "unknown", "FAIL")
    assert await client_name(lookup, "not an address") == ClientName("unknown", "unknown", "FAIL")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # a server that never answers
        silent.bind(("127.0.0.1", 0))
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = silent.getsockname()[1]
        quiet = AuthDns(resolver, timeout=0.3)
        assert await client_name(quiet, "127.0.0.1") == ClientName("unknown", "unknown", "TEMP")


async def test_the_milter_hears_the_name(tmp_path: Path, dns_lab: StartLab) -> None:
    lab = dns_lab(*zones())
    milter = FakeMilter(macro_lists={0: "j {client_name} {client_ptr} {client_resolve} _"})
    async with serving(milter) as address:
        base = mta_config(tmp_path, {"name": "m", "address": address})
        named = replace(base, server=replace(base.server, client_names=True))
        async with Mta(named, dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
            replies = await talk(mta, commands())
        assert replies[-2].startswith("250 ")
    assert milter.macros[b"C"] == {
        "j": "mx.test",
        "{client_name}": "mx.client.test",
        "{client_ptr}": "mx.client.test",
        "{client_resolve}": "OK",
        "_": "mx.client.test [127.0.0.1]",
    }
    (connect,) = [data for code, data in milter.received if code == b"C"]
    assert connect.startswith(b"mx.client.test\0")


async def test_off_by_default_every_client_is_unknown(tmp_path: Path) -> None:
    milter = FakeMilter(macro_lists={0: "{client_name} {client_resolve}"})
    async with serving(milter) as address:
        config = mta_config(tmp_path, {"name": "m", "address": address})
        assert not config.server.client_names
        async with Mta(config, dns=FakeDns()) as mta:
            await talk(mta, commands())
    assert milter.macros[b"C"] == {"{client_name}": "unknown"}  # no {client_resolve}: not asked

"""The PROXY protocol header parser (haproxy's doc/proxy-protocol.txt), v1 and v2."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpx.protocol.proxy import V2_SIGNATURE, ProxyHeaderError, parse_proxy_header


def v2(
    source: str = "192.0.2.7",
    destination: str = "198.51.100.1",
    ports: tuple[int, int] = (41234, 25),
    *,
    command: int = 1,
    tlvs: bytes = b"",
    family: int | None = None,
) -> bytes:
    """A version 2 header as HAProxy builds it."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if family is None:
        family = 0x11 if src.version == 4 else 0x21
    block = src.packed + dst.packed + ports[0].to_bytes(2, "big") + ports[1].to_bytes(2, "big")
    body = block + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + len(body).to_bytes(2, "big") + body


def test_v1_tcp4_and_what_follows() -> None:
    data = b"PROXY TCP4 192.0.2.7 198.51.100.1 41234 25\r\nEHLO x\r\n"
    header = parse_proxy_header(data)
    assert header is not None
    assert header.version == 1
    assert header.source == ("192.0.2.7", 41234)
    assert header.destination == ("198.51.100.1", 25)
    assert data[header.length :] == b"EHLO x\r\n"


def test_v1_tcp6_and_unknown() -> None:
    header = parse_proxy_header(b"PROXY TCP6 2001:db8::1 2001:db8::25 65535 25\r\n")
    assert header is not None
    assert header.source == ("2001:db8::1", 65535)
    unknown = parse_proxy_header(b"PROXY UNKNOWN ff:: ff:: 1 2\r\n")
    assert unknown is not None
    assert (unknown.source, unknown.length) == (None, 29)
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") is not None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"EHLO client.example\r\n", "no PROXY protocol header"),
        (b"PROXI TCP4", "no PROXY protocol header"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 41234\r\n", "malformed"),
        (b"PROXY TCP4 192.0.2.777 198.51.100.1 1 25\r\n", "not an IPv4 address"),
        (b"PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n", "not an IPv4 address"),
        (b"PROXY TCP6 192.0.2.1 2001:db8::1 1 25\r\n", "not an IPv6 address"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n", "port out of range"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 025 25\r\n", "malformed"),
        (b"PROXY TCP4 192.0.2.7  198.51.100.1 1 25\r\n", "malformed"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n", "without CRLF"),
        (b"PROXY UNKNOWN " + b"x" * 100, "without CRLF"),
        (V2_SIGNATURE[:5] + b"X", "no PROXY protocol header"),
        (V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1"),
        (V2_SIGNATURE + b"\x22\x11\x00\x00", "unknown command 2"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4, "address block of 4 octets"),
        (v2(tlvs=b"\x04\x00\x05ab"), "TLV longer than the header"),
        (v2(tlvs=b"\x04\x00"), "TLV cut short"),
        (b"\x16\x03\x01\x02\x00", "no PROXY protocol header"),  # a TLS ClientHello
    ],
)
def test_what_is_not_a_header_is_refused_at_once(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        parse_proxy_header(data)


def test_v2_tcp4_tcp6_with_tlvs() -> None:
    tlvs = b"\x02\x00\x0bexample.org" + b"\x04\x00\x00"  # AUTHORITY, NOOP
    data = v2(tlvs=tlvs) + b"EHLO"
    header = parse_proxy_header(data)
    assert header is not None
    assert (header.version, header.source, header.destination) == (
        2,
        ("192.0.2.7", 41234),
        ("198.51.100.1", 25),
    )
    assert header.tlvs == ((2, b"example.org"), (4, b""))
    assert data[header.length :] == b"EHLO"
    six = parse_proxy_header(v2("2001:db8::7", "2001:db8::25", (1, 25)))
    assert six is not None
    assert six.source == ("2001:db8::7", 1)


def test_v2_local_and_other_families_carry_no_address() -> None:
    local = parse_proxy_header(v2(command=0))  # a health check
    assert local is not None
    assert local.source is None
    assert local.tlvs == ()
    unix = parse_proxy_header(V2_SIGNATURE + b"\x21\x31\x00\x04abcd")
    assert unix is not None
    assert (unix.source, unix.length) == (None, 20)


@pytest.mark.parametrize(
    "header", [b"PROXY TCP4 192.0.2.7 198.51.100.1 41234 25\r\n", v2(tlvs=b"\x04\x00\x01x")]
)
def test_every_prefix_of_a_header_asks_for_more(header: bytes) -> None:
    for end in range(len(header)):
        assert parse_proxy_header(header[:end]) is None
    parsed = parse_proxy_header(header + b"QUIT\r\n")
    assert parsed is not None
    assert parsed.length == len(header)


@given(st.binary(max_size=120))
def test_any_bytes_give_a_header_more_or_a_clear_error(data: bytes) -> None:
    try:
        header = parse_proxy_header(data)
    except ProxyHeaderError:
        return
    assert header is None or 0 < header.length <= len(data)

"""The PROXY protocol header (versions 1 and 2, haproxy's ``doc/proxy-protocol.txt``), sans-I/O.

A load balancer that passes TCP through (HAProxy's ``send-proxy``, ``send-proxy-v2``)
sends this header as the very first bytes of the connection, so that the server learns
the real client's address. :func:`parse_proxy_header` reads it from the bytes received
so far::

    header = parse_proxy_header(buffer)     # None: not complete yet, read more
    header.source                           # ("192.0.2.7", 41234), or None (LOCAL, UNKNOWN)
    rest = buffer[header.length:]           # what the client sent after it

Anything that is not a well-formed header raises :class:`ProxyHeaderError` as soon as the
bytes show it (a client talking SMTP to a proxied listener is refused at its first
line, not after a timeout). Version 2's TLVs are returned, not interpreted; its CRC32C
TLV is not checked (the header comes from a proxy on a trusted network, never from the
client). Only TCP over IPv4 and IPv6 carry addresses: LOCAL (a health check), UNKNOWN, a
UNIX or UDP family all mean "use the connection's own addresses" (``source`` is None).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from smtpx.errors import ParseError

__all__ = ["V1_MAX", "V2_SIGNATURE", "ProxyHeader", "ProxyHeaderError", "parse_proxy_header"]

V1_MAX = 107  # the longest version 1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
# The fields after "PROXY ": TCP4|TCP6 src dst sport dport, ports without a leading zero.
_V1_LINE = re.compile(
    rb"(TCP4|TCP6) ([0-9A-Fa-f.:]+) ([0-9A-Fa-f.:]+) (0|[1-9][0-9]{0,4})"
    rb" (0|[1-9][0-9]{0,4})"
)
_V2_ADDRESS_SIZES = {0x11: 12, 0x21: 36}  # TCP over IPv4, over IPv6 (address block octets)

Address = tuple[str, int]


class ProxyHeaderError(ParseError):
    """The bytes are not a valid PROXY protocol header (the message says why)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. ``source`` is the real client and ``destination`` the address it
    connected to (on the proxy), both None when the header gives none; ``length`` is the
    header's size in octets; ``tlvs`` are version 2's (type, value) pairs."""

    version: int
    source: Address | None
    destination: Address | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while ``data`` is a valid beginning of
    one; :class:`ProxyHeaderError` when it cannot be one."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyHeaderError(f"no PROXY protocol header: {_shown(data)}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if not _V1_PREFIX.startswith(data[:6]):
            raise ProxyHeaderError(f"no PROXY protocol header: {_shown(data)}")
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyHeaderError("PROXY v1 line without CRLF in its first 107 octets")
        return None
    line = data[:end]
    if not line.startswith(_V1_PREFIX):
        raise ProxyHeaderError(f"no PROXY protocol header: {_shown(line)}")
    fields = line[len(_V1_PREFIX) :]
    if fields == b"UNKNOWN" or fields.startswith(b"UNKNOWN "):
        return ProxyHeader(1, None, None, end + 2)
    match = _V1_LINE.fullmatch(fields)
    if match is None:
        raise ProxyHeaderError(f"malformed PROXY v1 line: {_shown(line)}")
    family, src, dst, sport, dport = (part.decode("ascii") for part in match.groups())
    kind = ipaddress.IPv4Address if family == "TCP4" else ipaddress.IPv6Address
    source = (_address(kind, src), _port(sport))
    destination = (_address(kind, dst), _port(dport))
    return ProxyHeader(1, source, destination, end + 2)


def _address(kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address], text: str) -> str:
    try:
        return str(kind(text))
    except ValueError:
        raise ProxyHeaderError(f"not an {kind.__name__[:4]} address: {text!r}") from None


def _port(text: str) -> int:
    port = int(text)
    if port > 65_535:
        raise ProxyHeaderError(f"port out of range: {port}")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if not data.startswith(V2_SIGNATURE[: len(data)]):
        raise ProxyHeaderError(f"no PROXY protocol header: {_shown(data)}")
    if len(data) < 16:
        return None
    version_command, family = data[12], data[13]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header of version {version_command >> 4}")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"PROXY v2 header with unknown command {command}")
    length = 16 + int.from_bytes(data[14:16], "big")
    if len(data) < length:
        return None
    body = data[16:length]
    size = _V2_ADDRESS_SIZES.get(family, 0) if command == 1 else 0
    if len(body) < size:
        raise ProxyHeaderError(f"PROXY v2 address block of {len(body)} octets, not {size}")
    source = destination = None
    if size:
        source, destination = _v2_addresses(family, body[:size])
    return ProxyHeader(2, source, destination, length, _tlvs(body[size:] if size else b""))


def _v2_addresses(family: int, block: bytes) -> tuple[Address, Address]:
    width = 4 if family == 0x11 else 16
    src = ipaddress.ip_address(block[:width])
    dst = ipaddress.ip_address(block[width : 2 * width])
    ports = block[2 * width :]
    sport, dport = int.from_bytes(ports[:2], "big"), int.from_bytes(ports[2:4], "big")
    return (str(src), sport), (str(dst), dport)


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    found: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        if len(data) - at < 3:
            raise ProxyHeaderError("PROXY v2 TLV cut short")
        size = int.from_bytes(data[at + 1 : at + 3], "big")
        value = data[at + 3 : at + 3 + size]
        if len(value) != size:
            raise ProxyHeaderError("PROXY v2 TLV longer than the header")
        found.append((data[at], value))
        at += 3 + size
    return tuple(found)


def _shown(data: bytes) -> str:
    return repr(data[:40].decode("ascii", "backslashreplace"))

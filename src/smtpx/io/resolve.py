"""Name resolution and connecting to the first address that answers (Happy Eyeballs).

Resolution is injected (DESIGN.md: time, randomness and DNS are injected): the default
:class:`SystemResolver` asks the operating system (so ``/etc/hosts`` and ``localhost``
work); tests use :class:`StaticResolver`. MX lookups arrive with the relay (dnspython).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import socket
import ssl
from asyncio.staggered import staggered_race
from collections.abc import Mapping, Sequence
from typing import Protocol

from smtpx.errors import ConnectError, ParseError
from smtpx.io.stream import Stream, TransportStream
from smtpx.protocol.domains import domain_to_ascii

__all__ = [
    "Resolver",
    "StaticResolver",
    "SystemResolver",
    "connect_first",
    "interleave",
    "is_ip_address",
]


class Resolver(Protocol):
    async def addresses(self, host: str) -> list[str]:
        """The IPv4 and IPv6 addresses of ``host`` (A and AAAA), in preference order."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), run off the event loop."""

    async def addresses(self, host: str) -> list[str]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        seen: dict[str, None] = {}
        for _family, _type, _proto, _name, sockaddr in infos:
            seen.setdefault(str(sockaddr[0]), None)
        return list(seen)


class StaticResolver:
    """A fixed table, for tests: ``StaticResolver({"mx.test": ["127.0.0.1"]})``."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self._table = {name.lower().rstrip("."): list(ips) for name, ips in table.items()}

    async def addresses(self, host: str) -> list[str]:
        try:
            return list(self._table[host.lower().rstrip(".")])
        except KeyError:
            raise OSError(f"{host}: name not known to the static resolver") from None


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def interleave(addresses: Sequence[str]) -> list[str]:
    """``addresses`` reordered as RFC 8305 section 4 asks: alternate the families (IPv6,
    IPv4), starting with the family of the first address, each in its own order."""
    first = [a for a in addresses if _is_v6(a) == _is_v6(addresses[0])] if addresses else []
    other = [a for a in addresses if a not in first]
    return [a for pair in itertools.zip_longest(first, other) for a in pair if a is not None]


def _is_v6(address: str) -> bool:
    return ":" in address


async def connect_first(
    host: str,
    port: int,
    *,
    resolver: Resolver | None = None,
    timeout: float | None = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    attempt_delay: float | None = 0.25,
) -> Stream:
    """Connect to ``host``'s addresses with Happy Eyeballs (RFC 8305): try the first, and
    if it has not answered after ``attempt_delay`` seconds (or failed sooner), the next as
    well, and so on, families alternating; the first connection made wins, the others
    are dropped. ``attempt_delay`` None tries one address after another.

    ``timeout`` bounds each attempt. With ``ssl_context`` the connection is TLS from the
    start (implicit TLS, port 465 style), verified against ``host``; an address whose
    handshake fails counts as failed, and the others are tried. When every address
    fails, :class:`~smtpx.errors.ConnectError` lists each one with its error.
    """
    name, addresses = await _resolve(host, port, resolver)
    failures: dict[str, BaseException] = {}
    while untried := [a for a in addresses if a not in failures]:
        won = await _race(untried, port, timeout, attempt_delay, failures)
        if won is None:
            break
        address, sock = won
        try:
            return await TransportStream.from_socket(
                sock, ssl_context=ssl_context, server_hostname=name, timeout=timeout
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            sock.close()
            failures[address] = exc
    raise ConnectError(host, port, [(a, failures[a]) for a in addresses if a in failures])


async def _resolve(host: str, port: int, resolver: Resolver | None) -> tuple[str, list[str]]:
    """The name to verify and send as SNI, and the addresses to try, interleaved."""
    if is_ip_address(host):
        return host, [host.strip("[]")]
    try:
        # The A-label form (IDNA 2008): the OS resolver and ssl would encode a U-label
        # with IDNA 2003, which makes straße.de strasse.de, another domain.
        name = domain_to_ascii(host)
        addresses = await (resolver or SystemResolver()).addresses(name)
    except (OSError, ParseError) as exc:
        raise ConnectError(host, port, [(host, exc)]) from exc
    if not addresses:
        raise ConnectError(host, port, [(host, OSError("no addresses"))])
    return name, interleave(list(dict.fromkeys(addresses)))


async def _race(
    addresses: list[str],
    port: int,
    timeout: float | None,
    delay: float | None,
    failures: dict[str, BaseException],
) -> tuple[str, socket.socket] | None:
    """The first of ``addresses`` to accept a TCP connection, with its socket, or None;
    each failure goes into ``failures``. asyncio's own Happy Eyeballs race (the one
    ``loop.create_connection(happy_eyeballs_delay=...)`` runs) staggers the attempts."""
    loop = asyncio.get_running_loop()

    async def attempt(address: str) -> tuple[str, socket.socket]:
        family = socket.AF_INET6 if _is_v6(address) else socket.AF_INET
        # IPPROTO_TCP named, as getaddrinfo would: asyncio turns Nagle off only then.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        timer = asyncio.timeout(timeout)
        try:
            sock.setblocking(False)
            async with timer:
                await loop.sock_connect(sock, (address, port))
        except BaseException as exc:  # a loser is cancelled: its socket goes too
            sock.close()
            if timer.expired():
                failures[address] = TimeoutError(f"no answer in {timeout:g} s")
            elif isinstance(exc, Exception):
                failures[address] = exc
            raise
        return address, sock

    won, _, _ = await staggered_race([functools.partial(attempt, a) for a in addresses], delay)
    return won  # type: ignore[no-any-return]

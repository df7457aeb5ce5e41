"""Name resolution and connecting to the first address that answers.

Resolution is injected (DESIGN.md: time, randomness and DNS are injected): the default
:class:`SystemResolver` asks the operating system (so ``/etc/hosts`` and ``localhost``
work); tests use :class:`StaticResolver`. MX lookups arrive with the relay (dnspython).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Protocol

from smtpx.errors import ConnectError, ParseError
from smtpx.io.stream import Stream, TransportStream
from smtpx.protocol.domains import domain_to_ascii

__all__ = ["Resolver", "StaticResolver", "SystemResolver", "connect_first", "is_ip_address"]


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


async def connect_first(
    host: str,
    port: int,
    *,
    resolver: Resolver | None = None,
    timeout: float | None = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Stream:
    """Connect to the first of ``host``'s addresses that accepts, trying each in turn.

    ``timeout`` bounds each attempt. With ``ssl_context`` the connection is TLS from the
    start (implicit TLS, port 465 style), verified against ``host``. When every address
    fails, :class:`~smtpx.errors.ConnectError` lists each one with its error.
    """
    name = host
    if is_ip_address(host):
        addresses = [host.strip("[]")]
    else:
        try:
            # The A-label form (IDNA 2008): the OS resolver and ssl would encode a U-label
            # with IDNA 2003, which makes straße.de strasse.de, another domain.
            name = domain_to_ascii(host)
            addresses = await (resolver or SystemResolver()).addresses(name)
        except (OSError, ParseError) as exc:
            raise ConnectError(host, port, [(host, exc)]) from exc
        if not addresses:
            raise ConnectError(host, port, [(host, OSError("no addresses"))])
    failures: list[tuple[str, BaseException]] = []
    for address in addresses:
        try:
            async with asyncio.timeout(timeout):
                return await TransportStream.connect(
                    address, port, ssl_context=ssl_context, server_hostname=name
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            failures.append((address, exc))
    raise ConnectError(host, port, failures)

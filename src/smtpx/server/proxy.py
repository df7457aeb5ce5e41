"""Listeners behind a load balancer: the PROXY protocol header, read before the greeting.

On a ``proxied`` listener (:class:`~smtpx.server.Listener`) every connection must come
from one of the listener's ``proxy_from`` networks and start with a PROXY v1 or v2 header
(:mod:`smtpx.protocol.proxy`); :func:`unwrap` reads it and gives a :class:`ProxiedStream`
whose :meth:`~ProxiedStream.peername` is the real client. Everything the server does with
a peer address (client limits, the session's ``remote``, and through it the relay policy,
``Received:``, the mail log) then sees the client, not the proxy, which is kept in
:attr:`ProxiedStream.proxy_peer`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Sequence
from typing import IO

from smtpx.io.stream import Stream
from smtpx.protocol.proxy import ProxyHeaderError, parse_proxy_header
from smtpx.server.limits import client_ip

__all__ = ["ProxiedStream", "ProxyHeaderError", "peer_allowed", "unwrap"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A v2 header may carry TLVs up to 64 KB; more than this is not a header we want.
MAX_HEADER = 4096


def peer_allowed(peer: tuple[str, int] | None, networks: Sequence[IPNetwork]) -> bool:
    """Whether a connection from ``peer`` may send a PROXY header."""
    ip = None if peer is None else client_ip(peer[0])
    return ip is not None and any(ip in network for network in networks)


async def unwrap(stream: Stream, timeout: float) -> ProxiedStream:
    """Read the PROXY header that starts ``stream`` (within ``timeout`` seconds overall).

    Raises :class:`ProxyHeaderError` for anything else, TimeoutError, or ConnectionError
    when the peer leaves first."""
    buffer = b""
    async with asyncio.timeout(timeout):
        while (header := parse_proxy_header(buffer)) is None:
            if len(buffer) > MAX_HEADER:
                raise ProxyHeaderError(f"PROXY header longer than {MAX_HEADER} octets")
            data = await stream.read()
            if not data:
                raise ConnectionResetError("the proxy closed before its header was complete")
            buffer += data
    source = header.source or stream.peername()
    return ProxiedStream(stream, source, header.version, buffer[header.length :])


class ProxiedStream(Stream):
    """A stream whose PROXY header has been read: it reports the real client as its
    peer, and returns what followed the header before reading further."""

    def __init__(
        self, inner: Stream, client: tuple[str, int] | None, version: int, rest: bytes
    ) -> None:
        self.inner = inner
        self.client = client
        self.version = version
        self.proxy_peer = inner.peername()
        self.tls = inner.tls
        self._rest = rest

    async def read(self, timeout: float | None = None) -> bytes:
        if self._rest:
            data, self._rest = self._rest, b""
            return data
        return await self.inner.read(timeout)

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    async def drain(self, timeout: float | None = None) -> None:
        await self.inner.drain(timeout)

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> int:
        # Plaintext after STARTTLS is thrown away, as by the inner stream (CVE-2011-0411).
        discarded = len(self._rest)
        self._rest = b""
        discarded += await self.inner.start_tls(
            context, server_side=server_side, server_hostname=server_hostname, timeout=timeout
        )
        self.tls = self.inner.tls
        return discarded

    async def sendfile(
        self,
        file: IO[bytes],
        offset: int = 0,
        count: int | None = None,
        timeout: float | None = None,
    ) -> int:
        return await self.inner.sendfile(file, offset, count, timeout)

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    @property
    def write_blocked(self) -> bool:
        return self.inner.write_blocked

    @property
    def is_closing(self) -> bool:
        return self.inner.is_closing

    def interrupt(self, exc: BaseException) -> None:
        self.inner.interrupt(exc)

    @property
    def has_input(self) -> bool:
        return bool(self._rest) or self.inner.has_input

    def peername(self) -> tuple[str, int] | None:
        return self.client

    def sockname(self) -> tuple[str, int] | None:
        return self.inner.sockname()

    def tls_version(self) -> str | None:
        return self.inner.tls_version()

    def peer_certificates(self) -> tuple[bytes, ...]:
        return self.inner.peer_certificates()

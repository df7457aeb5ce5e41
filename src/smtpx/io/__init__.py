"""The asyncio edge: byte streams (TCP, TLS, unix sockets, in memory), TLS contexts, name
resolution."""

from smtpx.io.resolve import Resolver, StaticResolver, SystemResolver, connect_first
from smtpx.io.stream import MemoryStream, Stream, TransportStream, memory_pair, open_unix
from smtpx.io.tls import client_context, server_context

__all__ = [
    "MemoryStream",
    "Resolver",
    "StaticResolver",
    "Stream",
    "SystemResolver",
    "TransportStream",
    "client_context",
    "connect_first",
    "memory_pair",
    "open_unix",
    "server_context",
]

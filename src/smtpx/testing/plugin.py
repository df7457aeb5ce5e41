"""A server plugin's session in memory (F34, async_smtp's ``Server.For_test``).

:func:`plugin_session` runs one session of a real :class:`~smtpx.server.Server` (the
plugin's hooks, the configuration's limits and timeouts) over an in-memory stream and
hands the test the client's end: talk to it by hand, or with
:func:`smtpx.client.connect` (``stream=``). With ``emulate_tls`` both ends start as if
TLS were up, without certificates or a handshake (async_smtp's ``emulate_tls``): the
plugin sees ``session.tls`` (``tls_version`` ``"emulated"``), AUTH is offered as on a
TLS connection, and a client sends its password as it would over TLS. STARTTLS is then
not offered, as after a real upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from smtpx.io import MemoryStream, memory_pair
from smtpx.server import Listener, Plugin, Server, ServerConfig

__all__ = ["PluginSession", "plugin_session"]


@dataclass(frozen=True, slots=True)
class PluginSession:
    """The client's end of the session, and the server running it."""

    client: MemoryStream
    server: Server


@contextlib.asynccontextmanager
async def plugin_session(
    plugin: Plugin,
    config: ServerConfig | None = None,
    *,
    emulate_tls: bool = False,
    listener: str | Listener = "test",
    tap: Callable[[str, bytes], None] | None = None,
) -> AsyncIterator[PluginSession]:
    """Run one session of ``plugin``; it ends when the block does (the client's end is
    closed, and the session's end awaited). ``listener`` lends its name and its TLS and
    AUTH requirements; ``tap(who, data)`` sees every write (a
    :class:`~smtpx.testing.Transcript`'s ``record``)."""
    server = Server(plugin, config)
    client, server_end = memory_pair(tap)
    if emulate_tls:
        client.tls = server_end.tls = True
    task = asyncio.get_running_loop().create_task(server.serve_stream(server_end, listener))
    try:
        yield PluginSession(client, server)
    finally:
        client.close()
        await task

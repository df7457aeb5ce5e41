"""Connecting with Happy Eyeballs (RFC 8305): a host's addresses are raced, staggered by
``ClientConfig.happy_eyeballs_delay``; the error lists every address and why it failed.

A "black hole" here is a listening socket on a loopback address whose accept queue is
full: Linux drops further SYNs, so a connection attempt there hangs until it times out,
as with a dead host. Everything stays on 127.0.0.0/8. These tests use real sockets, so
they run on the real clock (a virtual one would skip the kernel's handshake); their waits
are a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from smtpx.client import CertificateCheck, ClientConfig, TlsConfig, TlsMode, connect
from smtpx.errors import ConnectError
from smtpx.io import StaticResolver
from smtpx.io.resolve import interleave
from smtpx.testing import Handler, ScriptedServer
from tests.conftest import server_tls_context

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="black holes need Linux")


@contextlib.contextmanager
def black_hole(address: str, port: int) -> Iterator[None]:
    """``address``:``port`` takes no more connections (SYNs dropped, nothing answers)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind((address, port))
        listener.listen(0)
        for _ in range(2):  # a backlog of 0 still queues one: fill it, and then some
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((address, port))
            fillers.append(filler)
        time.sleep(0.05)  # the handshakes above complete in the kernel
        yield
    finally:
        for sock in (*fillers, listener):
            sock.close()


def config(**overrides: object) -> ClientConfig:
    values: dict[str, object] = {"connect_timeout": 5.0, "happy_eyeballs_delay": 0.05}
    values.update(overrides)
    return ClientConfig.for_testing(**values)


async def test_the_next_address_is_tried_long_before_the_first_times_out() -> None:
    async with ScriptedServer(Handler) as server:
        resolver = StaticResolver({"mx.test": ["127.0.0.2", "127.0.0.1"]})
        with black_hole("127.0.0.2", server.port):
            start = time.monotonic()
            async with connect("mx.test", server.port, config=config(), resolver=resolver) as c:
                took = time.monotonic() - start
                assert c.remote_address == ("127.0.0.1", server.port)
                assert (await c.noop()).code == 250
    # The second attempt started after the 0.05 s delay, not after the 5 s timeout.
    assert took < 1.0, took


async def test_without_a_delay_addresses_go_one_after_another() -> None:
    async with ScriptedServer(Handler) as server:
        resolver = StaticResolver({"mx.test": ["127.0.0.2", "127.0.0.1"]})
        slow = config(connect_timeout=0.3, happy_eyeballs_delay=None)
        with black_hole("127.0.0.2", server.port):
            start = time.monotonic()
            async with connect("mx.test", server.port, config=slow, resolver=resolver) as c:
                assert c.remote_address == ("127.0.0.1", server.port)
            assert time.monotonic() - start >= 0.3  # the black hole's timeout, waited out


async def test_the_error_lists_every_address_and_why() -> None:
    async with ScriptedServer(Handler) as server:
        port = server.port
    # Nothing listens on the port any more: 127.0.0.3 refuses at once; 127.0.0.2 is a
    # black hole and times out; 127.0.0.4 refuses too.
    resolver = StaticResolver({"mx.test": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]})
    with black_hole("127.0.0.2", port), pytest.raises(ConnectError) as caught:
        await connect("mx.test", port, config=config(connect_timeout=0.3), resolver=resolver)
    failures = dict(caught.value.failures)
    assert list(failures) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert isinstance(failures["127.0.0.2"], TimeoutError)
    assert isinstance(failures["127.0.0.3"], ConnectionRefusedError)
    assert isinstance(failures["127.0.0.4"], ConnectionRefusedError)
    text = str(caught.value)
    assert f"cannot connect to mx.test:{port}" in text
    assert "127.0.0.2: no answer in 0.3 s" in text
    assert "127.0.0.3: " in text and "127.0.0.4: " in text


def test_families_alternate_first_family_first() -> None:
    assert interleave(["::1", "::2", "127.0.0.1", "127.0.0.2", "127.0.0.3"]) == [
        "::1",
        "127.0.0.1",
        "::2",
        "127.0.0.2",
        "127.0.0.3",
    ]
    assert interleave(["127.0.0.1", "::1", "127.0.0.2"]) == ["127.0.0.1", "::1", "127.0.0.2"]
    assert interleave([]) == []


async def test_a_failed_tls_handshake_moves_on_to_the_next_address(ca: Any, ca_file: str) -> None:
    """Implicit TLS: the race is for TCP; an address whose handshake fails counts as
    failed, and the others are tried."""

    async def plaintext(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 no TLS here\r\n")  # not a TLS record: the handshake fails
        await writer.drain()
        writer.close()

    tls = server_tls_context(ca, "mx.test")
    async with ScriptedServer(Handler, tls_context=tls, implicit_tls=True) as server:
        impostor = await asyncio.start_server(plaintext, "127.0.0.2", server.port)
        async with impostor:
            policy = TlsConfig(
                mode=TlsMode.IMPLICIT, certificate=CertificateCheck.VERIFY, ca_file=ca_file
            )
            resolver = StaticResolver({"mx.test": ["127.0.0.2", "127.0.0.1"]})
            cfg = config(tls=[("", policy)])
            async with connect("mx.test", server.port, config=cfg, resolver=resolver) as c:
                assert c.is_using_tls and c.remote_address == ("127.0.0.1", server.port)

"""SharedListener: a listening socket served together with other processes (here: other
listeners in the same loop, on duplicates of the same socket), one connection at a
time; implicit TLS; an accept error pauses it, and it takes connections again."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from smtpx.io import accept
from smtpx.io.accept import SharedListener
from smtpx.io.stream import TransportStream, server_protocol_factory
from tests.conftest import server_tls_context


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _greeter(taken: list[str], name: str) -> Callable[[TransportStream], None]:
    def on_stream(stream: TransportStream) -> None:
        taken.append(name)
        stream.write(f"220 {name}\r\n".encode())
        stream.close()

    return on_stream


async def _greeting(port: int, tls: ssl.SSLContext | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


def _runner(loop_kind: str) -> asyncio.Runner:
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_listeners_on_one_socket_share_its_connections(loop_kind: str) -> None:
    with _runner(loop_kind) as runner:
        runner.run(_share())


async def _share() -> None:
    sock = _bound()
    port = sock.getsockname()[1]
    taken: list[str] = []
    listeners = [
        SharedListener(
            socket.socket(fileno=os.dup(sock.fileno())), server_protocol_factory(_greeter(taken, n))
        )
        for n in ("a", "b")
    ]
    sock.close()  # (a supervisor's copy: the listeners keep theirs)
    for listener in listeners:
        assert not listener.is_serving()
        await listener.start_serving()  # the first listens; the second's listen is harmless
        assert listener.is_serving() and listener.sockets
    greetings = await asyncio.gather(*(_greeting(port) for _ in range(10)))
    assert sorted(g[4:5] for g in greetings) == sorted(n.encode() for n in taken)
    assert len(taken) == 10
    listeners[0].close()  # one gone: the other takes every connection
    assert not listeners[0].sockets and not listeners[0].is_serving()
    assert [await _greeting(port) for _ in range(3)] == [b"220 b\r\n"] * 3
    listeners[1].close()
    await listeners[1].wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await _greeting(port)  # the last copy closed: the port is free again


async def test_an_implicit_tls_listener_shakes_hands(ca: Any) -> None:
    sock = _bound()
    taken: list[str] = []
    listener = SharedListener(
        sock,
        server_protocol_factory(_greeter(taken, "tls"), tls=True),
        tls=server_tls_context(ca, "localhost"),
    )
    await listener.start_serving()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.check_hostname = False
    assert await _greeting(sock.getsockname()[1], client) == b"220 tls\r\n"
    # A client that never says hello: closing does not wait for its handshake's timeout.
    _, silent = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
    while not listener._connecting:
        await asyncio.sleep(0)
    listener.close()
    async with asyncio.timeout(5):
        await listener.wait_closed()
    assert not listener._connecting
    silent.close()


async def test_an_accept_error_pauses_the_listener_then_it_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(accept, "RETRY_ACCEPT", 0.05)
    sock = _OutOfDescriptorsOnce()
    sock.bind(("127.0.0.1", 0))
    taken: list[str] = []
    listener = SharedListener(sock, server_protocol_factory(_greeter(taken, "x")))
    await listener.start_serving()
    greeting = asyncio.ensure_future(_greeting(sock.getsockname()[1]))
    while not sock.failed:
        await asyncio.sleep(0)
    assert listener.is_serving()  # (paused, not stopped)
    assert await greeting == b"220 x\r\n"  # taken after the pause
    assert sock.failed and "cannot accept" in caplog.text
    assert listener.is_serving()
    listener.close()


class _OutOfDescriptorsOnce(socket.socket):
    """Its first accept fails as a process out of file descriptors does."""

    failed = False

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_listener_over_its_share_leaves_a_connection_to_another_then_takes_it(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (On uvloop the listener serves through uvloop's own server, closed and opened
    # again around a deferral.)
    monkeypatch.setattr(accept, "DEFER", 0.05)
    with _runner(loop_kind) as runner:
        runner.run(_leave_to_another())


async def _leave_to_another() -> None:
    sock = _bound()
    port = sock.getsockname()[1]
    taken: list[str] = []
    full = SharedListener(
        socket.socket(fileno=os.dup(sock.fileno())),
        server_protocol_factory(_greeter(taken, "full")),
        takes_more=lambda _pending: False,
    )
    await full.start_serving()
    # Nobody else serves: the connection waits DEFER, then the full one takes it (still
    # serving all along: a deferral is not a pause to the health check).
    assert await _greeting(port) == b"220 full\r\n"
    assert full.is_serving()
    free = SharedListener(sock, server_protocol_factory(_greeter(taken, "free")))
    await free.start_serving()
    # Now another does: every connection goes to it while the first one waits.
    assert [await _greeting(port) for _ in range(4)] == [b"220 free\r\n"] * 4
    assert taken == ["full", "free", "free", "free", "free"]
    for listener in (full, free):
        listener.close()


def test_uvloops_server_that_cannot_open_pauses_and_keeps_no_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On uvloop a listener serves through a server of uvloop's own, on a copy of the
    # socket. When that server cannot be made, the listener pauses and tries again, and
    # the copy it made for the failed one is closed (a descriptor a retry otherwise):
    # after two failures the socket is open twice, the listener's and the server's.
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.setattr(accept, "RETRY_ACCEPT", 0.01)

    class Failing(uvloop.Loop):  # type: ignore[name-defined,misc]
        left = 2

        async def create_server(self, *args: Any, **kwargs: Any) -> Any:
            if Failing.left:
                Failing.left -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return await super().create_server(*args, **kwargs)

    Failing.__module__ = "uvloop.failing"  # (what the listener takes for uvloop)

    def copies(sock: socket.socket) -> int:
        """The descriptors of this process open on ``sock``'s socket."""
        target = os.readlink(f"/proc/self/fd/{sock.fileno()}")
        return sum(
            1 for fd in os.listdir("/proc/self/fd") if _link(f"/proc/self/fd/{fd}") == target
        )

    async def run() -> int:
        sock = _bound()
        taken: list[str] = []
        listener = SharedListener(sock, server_protocol_factory(_greeter(taken, "u")))
        await listener.start_serving()
        assert await _greeting(sock.getsockname()[1]) == b"220 u\r\n"
        open_now = copies(sock)
        listener.close()
        await listener.wait_closed()
        return open_now

    with asyncio.Runner(loop_factory=Failing) as runner:
        assert runner.run(run()) == 2
    assert Failing.left == 0


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:  # (closed meanwhile: the listing's own descriptor)
        return None

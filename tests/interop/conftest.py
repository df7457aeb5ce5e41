"""A minimal blocking socket server around ServerConnection, so real SMTP clients can talk
to the protocol core before the asyncio server exists. Test support only."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from smtpx.errors import RemoteProtocolError
from smtpx.protocol import NEED_DATA, ConnectionClosed, Limits, ServerConnection
from smtpx.testing import Handler


class CoreServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler_factory: type[Handler] = Handler, limits: Limits | None = None):
        super().__init__(("127.0.0.1", 0), _Session)
        self.handler_factory = handler_factory
        self.limits = limits
        self.handlers: list[Handler] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def messages(self) -> list[bytes]:
        with self.lock:
            return [m.data for h in self.handlers for m in h.messages]


class _Session(socketserver.BaseRequestHandler):
    server: CoreServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        handler = self.server.handler_factory()
        with self.server.lock:
            self.server.handlers.append(handler)
        conn = ServerConnection(self.server.limits)
        conn.send(handler.greeting)
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                conn.send(handler.protocol_error(exc))
                continue
            if event is NEED_DATA:
                # Write replies only when the pipelined input is used up (RFC 2920).
                sock.sendall(conn.data_to_send())
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, ConnectionClosed):
                with contextlib.suppress(OSError):
                    sock.sendall(conn.data_to_send())
                return
            with self.server.lock:
                reply = handler.handle(event)
            if reply is not None:
                conn.send(reply)


@pytest.fixture
def core_server() -> Iterator[CoreServer]:
    server = CoreServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()

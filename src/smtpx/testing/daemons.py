"""Real peers for the MX edge tests, run from Debian's packages on loopback: HAProxy in
front of smtpx (``send-proxy``, ``send-proxy-v2``) and a Redis server (shared rate
limits and greylisting).

::

    with HAProxy(tmp_path / "haproxy", backend_port=2526, send="send-proxy-v2") as proxy:
        ...  # connect to 127.0.0.1:proxy.port; smtpx sees the PROXY header
    with RedisServer(tmp_path / "redis") as redis:
        redis.url                # redis://127.0.0.1:PORT/0
        redis.kill(); redis.start()   # down mid-test, then back on the same port

Each runs in the foreground (no daemonizing), in its own process group, with its files in
the given directory, bound to 127.0.0.1 only, and is stopped by its own process id. A
missing tool or a daemon that does not come up raises :class:`DaemonUnavailable`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["DaemonUnavailable", "HAProxy", "RedisServer", "free_port"]

START_TIMEOUT = 15.0
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


class DaemonUnavailable(Exception):
    """A peer could not be started (the message says why)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=_SBIN)
    if found is None:
        raise DaemonUnavailable(f"{name} is not installed")
    return found


class _Daemon:
    """One foreground process in its own session, its output in a log file."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / f"{name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                said = self.log.read_text(errors="replace")[-2000:]
                raise DaemonUnavailable(f"{self.name} did not start: {said}")
            time.sleep(0.02)

    def kill(self) -> None:
        """Stop it at once (SIGKILL to its process group), as a crash would."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def __enter__(self) -> _Daemon:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


class HAProxy(_Daemon):
    """HAProxy in TCP mode on 127.0.0.1:``port``, passing connections to
    127.0.0.1:``backend_port`` with a PROXY header (``send`` is ``"send-proxy"`` for v1,
    ``"send-proxy-v2"`` for v2)."""

    def __init__(self, directory: Path, *, backend_port: int, send: str) -> None:
        super().__init__(directory, "haproxy")
        self.binary = tool("haproxy")
        self.port = free_port()
        self.admin = directory / "admin.sock"
        config = f"""\
global
    maxconn 200
    stats socket {self.admin} mode 600 level admin
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp_in
    bind 127.0.0.1:{self.port}
    default_backend smtp_pool
backend smtp_pool
    server mx1 127.0.0.1:{backend_port} {send}
"""
        self.config = directory / "haproxy.cfg"
        self.config.write_text(config)

    def argv(self) -> list[str]:
        return [self.binary, "-db", "-f", str(self.config)]

    def ready(self) -> bool:
        # The admin socket answers once the listeners are bound (a probe connection to
        # the frontend would reach the backend as a session of its own).
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1)
                sock.connect(str(self.admin))
                sock.sendall(b"show info\n")
                return b"Name: HAProxy" in sock.recv(4096)
        except OSError:
            return False

    def __enter__(self) -> HAProxy:
        self.start()
        return self


class RedisServer(_Daemon):
    """redis-server on 127.0.0.1 and a free port, no persistence, protected mode on."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "redis")
        self.binary = tool("redis-server")
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        self.start()
        return self

"""What the benchmarks share: ports, Postfix's tools, /proc readings, SMTP replies."""

from __future__ import annotations

import shutil
import socket
import sys
import time


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; bind it soon)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """The path of one of Postfix's tools (smtp-source, smtp-sink, postfix), or exit."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        sys.exit(f"{name} not found: install Debian's postfix package (see .ci/run)")
    return found


def rss_kb(pid: int) -> int:
    """The resident memory of process ``pid`` (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_listening(port: int, seconds: float = 10.0) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds:g} s")


def read_reply(sock: socket.socket) -> bytes:
    """Read one (possibly multi-line) reply; enough for a greeting and an EHLO answer."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
        last = data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if data.endswith(b"\r\n") and last[3:4] == b" ":
            return data

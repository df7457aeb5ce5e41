"""What the benchmarks share: ports, Postfix's tools, /proc readings, SMTP replies, a
latency probe."""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; bind it soon)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def smtpx_build() -> str:
    """Which smtpx is measured: "compiled (N modules)" when the installed one is the
    compiled build (SMTPX_COMPILE=1, docs/performance.md), else "pure Python"."""
    import importlib.machinery

    import smtpx

    root = Path(smtpx.__file__).parent
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = [path for path in root.rglob("*") if path.name.endswith(suffixes)]
    return f"compiled ({len(compiled)} modules)" if compiled else "pure Python"


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


# --- one message's round trip -------------------------------------------------------------


def percentile(samples: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the samples lie (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass(frozen=True)
class Latency:
    """Round trips of single messages, in milliseconds."""

    count: int
    p50: float
    p99: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency | None:
        if not seconds:
            return None
        ms = [s * 1e3 for s in seconds]
        return cls(len(ms), percentile(ms, 0.50), percentile(ms, 0.99))

    def __str__(self) -> str:
        return f"{self.p50:.2f} / {self.p99:.2f} ms"


class LatencyProbe:
    """One client that sends single messages one after another over one connection
    (MAIL, RCPT, DATA, the content: lock-step, as smtp-source) and times each from MAIL
    to the 250 after the content. :meth:`run` sends ``count`` of them; :meth:`start` /
    :meth:`stop` send them in a thread while something else loads the server."""

    def __init__(self, port: int, sender: str, recipient: str, size: int = 4096) -> None:
        self.port = port
        self.commands = [f"MAIL FROM:<{sender}>\r\n", f"RCPT TO:<{recipient}>\r\n"]
        line = b"x" * 70 + b"\r\n"
        head = f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: probe\r\n\r\n".encode()
        self.content = head + line * max(1, (size - len(head)) // len(line)) + b".\r\n"
        self.seconds: list[float] = []
        self.sent = 0  # messages the server accepted (they count in its totals)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self, count: int) -> Latency | None:
        self._send(count)
        if self.error is not None:
            raise RuntimeError(f"latency probe: {self.error}")
        return Latency.of(self.seconds)

    def start(self, pause: float = 0.02) -> None:
        """Send messages in a thread (``pause`` seconds apart) until :meth:`stop`. The
        pause keeps the probe small beside the load it measures: 2 ms apart, its messages
        were an eighth of the load's and cut the measured throughput."""
        self._thread = threading.Thread(target=self._send, args=(None, pause), daemon=True)
        self._thread.start()

    def stop(self) -> Latency | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        if self.error is not None:
            raise RuntimeError(f"latency probe: {self.error}")
        return Latency.of(self.seconds)

    def _send(self, count: int | None, pause: float = 0.0) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                expect(sock, b"220")
                sock.sendall(b"EHLO probe.example\r\n")
                expect(sock, b"250")
                while (count is None or self.sent < count) and not self._stop.is_set():
                    self.seconds.append(self._transaction(sock))
                    self.sent += 1
                    if pause:
                        self._stop.wait(pause)
                sock.sendall(b"QUIT\r\n")
                read_reply(sock)
        except (OSError, RuntimeError) as exc:
            self.error = exc

    def _transaction(self, sock: socket.socket) -> float:
        start = time.perf_counter()
        for command in self.commands:
            sock.sendall(command.encode())
            expect(sock, b"250")
        sock.sendall(b"DATA\r\n")
        expect(sock, b"354")
        sock.sendall(self.content)
        expect(sock, b"250")
        return time.perf_counter() - start


def expect(sock: socket.socket, code: bytes) -> bytes:
    reply = read_reply(sock)
    if not reply.startswith(code):
        raise RuntimeError(f"expected {code.decode()}, got {reply[:200]!r}")
    return reply


def parse_workers(text: str) -> list[int]:
    """``--workers 1,2`` as a list of counts (each >= 1)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--workers: not a list of numbers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"--workers: counts must be >= 1: {text!r}")
    return counts


def event_loop(choice: str) -> str:
    """``--loop``'s "auto" made concrete: uvloop when it is installed, else asyncio."""
    if choice != "auto":
        return choice
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


@contextlib.contextmanager
def smtpx_serve(path: Path, ready: Callable[[], None]) -> Iterator[subprocess.Popen[bytes]]:
    """``smtpx serve --config path`` in a child (warnings and worse logged beside the
    file), from when ``ready`` returns until the block ends."""
    log = path.with_suffix(".log").open("wb")
    argv = [sys.executable, "-m", "smtpx", "serve", "--config", str(path), "--log-level", "warning"]
    process = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        ready()
        yield process
    finally:
        process.terminate()
        process.wait(120)
        log.close()

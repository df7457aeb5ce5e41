"""Helpers for the CLI tests: a real ``smtpx serve`` subprocess, message injection, and an
SMTP sink on a background event loop (the commands run ``asyncio.run`` themselves, so the
tests are synchronous)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from click.testing import CliRunner, Result

from smtpx.cli import main
from smtpx.client import ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.testing import Handler, ScriptedServer
from smtpx.testing.transcript import ReceivedMessage

PLAIN = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))])
TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def invoke(*args: str, input: bytes | str | None = None, **env: str) -> Result:
    """Run ``smtpx ARGS`` in-process (stdout and stderr kept apart)."""
    return CliRunner().invoke(main, list(args), input=input, env=env or None, prog_name="smtpx")


class Daemon:
    """A real ``python -m smtpx serve --config FILE`` with a spool, a control socket, a
    loopback HTTP control listener with a token, and mail for example.net and example.com
    routed to a closed port (so it waits in the spool)."""

    def __init__(self, directory: Path, runtime: Path | None = None) -> None:
        """``runtime``: the runtime directory it records itself in (SMTPX_RUNTIME_DIR;
        by default the test run's)."""
        self.directory = directory
        self.runtime = runtime or Path(os.environ["SMTPX_RUNTIME_DIR"])
        self.port = free_port()
        self.http_port = free_port()
        self.closed_port = free_port()  # nothing listens there
        self.socket = directory / "control.sock"
        self.spool_dir = directory / "spool"
        self.token_file = directory / "token"
        self.token_file.write_text(TOKEN + "\n", encoding="utf-8")
        self.config = directory / "smtpx.toml"
        hours = ", ".join(['"1h"'] * 8)
        self.config.write_text(
            f"""
hostname = "mx.test"
[server]
listen = ["127.0.0.1:{self.port}"]
[spool]
dir = "spool"
fsync = "never"
retry_intervals = [{hours}]
bounce = false
[local]
maildir = "mail"
[control]
socket = "control.sock"
http = "127.0.0.1:{self.http_port}"
token_file = "token"
[routing.routes]
"example.net" = ["127.0.0.1:{self.closed_port}"]
"example.com" = ["127.0.0.1:{self.closed_port}"]
""",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        log = open(self.directory / "serve.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smtpx", "serve", "--config", str(self.config)],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "SMTPX_RUNTIME_DIR": str(self.runtime)},
        )
        log.close()
        record = self.runtime / f"serve-{self.process.pid}.json"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.directory / "serve.log").read_text())
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0 and record.exists():
                    return
            time.sleep(0.02)
        raise RuntimeError("smtpx serve did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- looking at it --------------------------------------------------------------------

    def cli(self, *args: str, input: bytes | str | None = None) -> Result:
        """``smtpx ARGS --socket <the daemon's socket>``."""
        return invoke(*args, "--socket", str(self.socket), input=input)

    def messages(self, *filters: str) -> list[dict[str, Any]]:
        result = self.cli("spool", "status", "--format", "json", *filters)
        assert result.exit_code == 0, result.output
        messages: list[dict[str, Any]] = json.loads(result.stdout)
        return messages

    def inject(
        self, sender: str, recipients: Sequence[str], *, subject: str = "hello", count: int = 1
    ) -> list[str]:
        """Send ``count`` messages over SMTP; wait until each has had its first (failed)
        attempt; return their spool ids."""
        queued = asyncio.run(send(self.port, sender, recipients, subject, count))
        return self.wait_for(
            lambda m: m["parent_id"] in queued and m["attempt_count"] >= 1,
            count,
        )

    def wait_for(self, matches: Callable[[dict[str, Any]], bool], count: int) -> list[str]:
        deadline = time.monotonic() + 10
        while True:
            found = [m["id"] for m in self.messages() if matches(m)]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) == count, found
                return found
            time.sleep(0.05)


async def send(
    port: int, sender: str, recipients: Sequence[str], subject: str = "hello", count: int = 1
) -> set[str]:
    """Send ``count`` messages over SMTP; the ids of their 250 replies."""
    queued: set[str] = set()
    async with connect("127.0.0.1", port, config=PLAIN) as client:
        for n in range(count):
            envelope = Envelope.create(
                sender=sender,
                recipients=recipients,
                message=(
                    f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n"
                    f"Message-ID: <{n}.{time.time_ns()}@cli.test>\r\n\r\nbody {n}\r\n"
                ),
            )
            status = await client.send(envelope)
            assert status.ok, status
            queued.add(status.reply.text.rsplit(" ", 1)[-1])
    return queued


def inject_in_background(daemon: Daemon, sender: str, stop: threading.Event) -> threading.Thread:
    """Inject a message every 0.3 s until ``stop`` is set (for watching events)."""

    def loop() -> None:
        n = 0
        while not stop.wait(0.3):
            asyncio.run(send(daemon.port, sender, ["watch@example.net"], f"watch {n}", 1))
            n += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


class Sink:
    """A :class:`~smtpx.testing.ScriptedServer` on its own event loop thread."""

    def __init__(self, handler_factory: Callable[[], Handler] = Handler, **options: Any) -> None:
        self.handler_factory = handler_factory
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: ScriptedServer | None = None

    def __enter__(self) -> Sink:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> ScriptedServer:
        server = ScriptedServer(self.handler_factory, **self.options)
        return await server.__aenter__()

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self.loop).result(
            10
        )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    def received(self) -> list[ReceivedMessage]:
        assert self.server is not None
        return [m for h in self.server.handlers for m in h.messages]


def smtpx_process(*args: str, **options: Any) -> subprocess.Popen[bytes]:
    """``python -m smtpx ARGS`` as a real process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "smtpx", *args], env=env, **options)


class Lines:
    """The lines of a process's pipe, read on a thread (``get`` waits for the next one)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.queue: queue.Queue[bytes] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.queue.put(line)
        self.queue.put(b"")

    def get(self, timeout: float = 10) -> bytes:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no line in time") from None

    def rest(self, timeout: float = 10) -> bytes:
        """Everything up to the end of the stream."""
        lines = []
        while line := self.get(timeout):
            lines.append(line)
        return b"".join(lines)

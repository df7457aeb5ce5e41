"""A real ``smtpx serve`` with ``[server] workers = N`` (a supervisor and its workers), for
test_workers.py, the crash tests and the PostgreSQL tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from smtpx.testing.daemons import free_port

START_TIMEOUT = 60.0  # a worker imports all of smtpx: seconds on a loaded 2-core machine


def workers_config(
    directory: Path,
    *,
    workers: int,
    sink: int,
    retry: str = "1s",
    spool: str = "",
    token: bool = False,
) -> tuple[Path, int]:
    """An MTA config for ``directory`` (mail for example.net goes to port ``sink``); the
    config file and the SMTP port."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    http = ""
    if token:
        (directory / "token").write_text("t0ken\n", encoding="utf-8")
        http = f'http = "127.0.0.1:{free_port()}"\ntoken_file = "token"\n'
    path = directory / "smtpx.toml"
    intervals = ", ".join([f'"{retry}"'] * 10)
    path.write_text(
        f"""
hostname = "mx.test"
[server]
listen = ["127.0.0.1:{port}"]
workers = {workers}
[spool]
dir = "spool"
fsync = "batch"
bounce = false
retry_intervals = [{intervals}]
{spool}
[local]
maildir = "mail"
[control]
socket = "control.sock"
{http}
[routing.routes]
"example.net" = ["127.0.0.1:{sink}"]
""",
        encoding="utf-8",
    )
    return path, port


class Supervised:
    """``python -m smtpx serve --config FILE`` with workers: started, asked over its
    control socket, stopped."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.directory = config.parent
        self.socket = self.directory / "control.sock"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start, and return once every worker answers (healthz ok)."""
        log = open(self.directory / "serve.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smtpx", "serve", "--config", str(self.config)],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        await self.wait_healthy()

    async def wait_healthy(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(self.log())
            with contextlib.suppress(aiohttp.ClientError, OSError):
                status, health = await self.request("GET", "/healthz")
                if status == 200:
                    return health  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)
        raise RuntimeError(f"not healthy in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return (self.directory / "serve.log").read_text(errors="replace")

    async def request(
        self, method: str, path: str, body: Any = None, socket: Path | None = None
    ) -> tuple[int, Any]:
        connector = aiohttp.UnixConnector(path=str(socket or self.socket))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, f"http://smtpx{path}", json=body) as reply,
        ):
            text = await reply.text()
            try:
                return reply.status, json.loads(text)
            except ValueError:
                return reply.status, text

    async def get(self, path: str, socket: Path | None = None) -> Any:
        status, data = await self.request("GET", path, socket=socket)
        assert status == 200, data
        return data

    async def workers(self) -> list[dict[str, Any]]:
        server = await self.get("/v1/server")
        return server["workers"]  # type: ignore[no-any-return]

    def worker_socket(self, index: int) -> Path:
        return self.socket.with_name(f"control.sock.worker-{index}")

    async def terminate(self) -> int:
        """SIGTERM; the exit status once every worker has drained (at most 60 s: past
        that the failure shows the supervisor's and workers' log)."""
        assert self.process is not None
        self.process.terminate()
        try:
            return await asyncio.to_thread(self.process.wait, 60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 60 s after SIGTERM; the log:\n{self.log()}") from None

    def cleanup(self, worker_pids: list[int] | None = None) -> None:
        """Stop what a failed test left running (never leak a server)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in worker_pids or []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def wait_all_tried(daemon: Supervised, count: int) -> list[dict[str, Any]]:
    """Every one of the ``count`` queued messages has had its first attempt (its next
    hop down): none is still being tried, so each can be released."""
    for _ in range(400):
        messages = await daemon.get("/v1/spool/messages")
        if len(messages["messages"]) == count and all(
            m["attempt_count"] >= 1 for m in messages["messages"]
        ):
            return messages["messages"]  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"not all {count} messages were tried: {messages}")

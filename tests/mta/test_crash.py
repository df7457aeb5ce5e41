"""Crash safety: kill -9 a real ``smtpx serve`` during intake and during delivery, restart
it, and prove that every message that got a 250 reaches the sink (duplicates are counted
and allowed: delivery is at-least-once; losses are not)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from smtpx.client import ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.errors import SMTPXError
from smtpx.testing import Handler, ScriptedServer
from tests.mta.workers_helpers import Supervised, workers_config

PLAIN = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))], command_timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, listen: int, sink: int) -> Path:
    path = tmp_path / "smtpx.toml"
    path.write_text(
        f"""
hostname = "mx.test"
[server]
listen = ["127.0.0.1:{listen}"]
[spool]
dir = "spool"
fsync = "batch"
retry_intervals = ["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
[local]
maildir = "mail"
[routing.routes]
"example.net" = ["127.0.0.1:{sink}"]
""",
        encoding="utf-8",
    )
    return path


class Daemon:
    """A real ``python -m smtpx serve`` process."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smtpx",
                "serve",
                "--config",
                str(self.config),
                "--log-level",
                "warning",
            ],
            cwd=self.config.parent,
            stdout=subprocess.DEVNULL,
            stderr=open(self.config.parent / "serve.log", "ab"),  # noqa: SIM115
        )
        for _ in range(500):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                raise RuntimeError((self.config.parent / "serve.log").read_text())
            await asyncio.sleep(0.02)
        raise RuntimeError("smtpx serve did not start listening")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def cleanup(self) -> None:
        """Kill the daemon if a failed test left it running (never leak a server)."""
        if self.process is not None and self.process.poll() is None:
            self.kill()

    async def terminate(self) -> int:
        """SIGTERM, then wait without blocking the loop (the sink lives on it and must
        answer the daemon's QUITs)."""
        assert self.process is not None
        self.process.terminate()
        try:
            return await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            log = (self.config.parent / "serve.log").read_text(errors="replace")
            raise AssertionError(
                f"no exit 30 s after SIGTERM; its log ends:\n{log[-6000:]}"
            ) from None


def message(n: int) -> Envelope:
    return Envelope.create(
        sender="a@example.com",
        recipients=["x@example.net"],
        message=(
            f"Message-ID: <{n}@crash.test>\r\nSubject: {n}\r\n\r\n{'body ' * 50}{n}\r\n"
        ).encode(),
    )


async def send_until_stopped(port: int, numbers: range, acknowledged: set[int]) -> None:
    """Send each message once; remember which got a 250. Stops quietly at the crash."""
    with contextlib.suppress(OSError, SMTPXError):
        async with connect("127.0.0.1", port, config=PLAIN) as client:
            for n in numbers:
                status = await client.send(message(n))
                if status.ok:
                    acknowledged.add(n)


def delivered(sink: ScriptedServer) -> Counter[int]:
    seen: Counter[int] = Counter()
    for data in sink.messages():
        start = data.index(b"Message-ID: <") + len(b"Message-ID: <")
        seen[int(data[start : data.index(b"@", start)])] += 1
    return seen


async def wait_for(sink: ScriptedServer, wanted: set[int], timeout: float = 60) -> Counter[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        seen = delivered(sink)
        if wanted <= set(seen) or loop.time() > deadline:
            return seen
        await asyncio.sleep(0.05)


@pytest.mark.timeout(180)
async def test_kill_during_intake_loses_nothing_acknowledged(tmp_path: Path) -> None:
    async with ScriptedServer(Handler) as sink:
        port = free_port()
        daemon = Daemon(write_config(tmp_path, port, sink.port), port)
        try:
            await daemon.start()
            acknowledged: set[int] = set()
            senders = [
                asyncio.create_task(
                    send_until_stopped(port, range(k * 50, k * 50 + 50), acknowledged)
                )
                for k in range(10)
            ]
            while len(acknowledged) < 200:
                await asyncio.sleep(0.005)
            daemon.kill()  # in the middle of intake (and of delivery: both run at once)
            await asyncio.gather(*senders)
            assert 200 <= len(acknowledged) < 500
            await daemon.start()
            seen = await wait_for(sink, acknowledged)
            assert await daemon.terminate() == 0
        finally:
            daemon.cleanup()
    lost = acknowledged - set(seen)
    assert not lost, f"{len(lost)} acknowledged messages lost: {sorted(lost)[:10]}"
    duplicates = sum(count - 1 for count in seen.values())
    print(f"acknowledged {len(acknowledged)}, delivered {len(seen)}, duplicates {duplicates}")


KILLS = 3
# Each outcome is recorded as soon as its reply arrives, so a kill repeats at most the
# messages in flight (with the default limits, up to 10 connections to the destination,
# each with a few messages pipelined) and the outcomes still waiting for their shared
# fsync. Measured on a quiet machine (2026-12-04): 20-29 a kill at 07a79b5, 14-23 with
# the fsync helper, later 13.7-45; with two CPU hogs beside it 7.7-51.7 at 27230f7 and
# 48.7-55 at bd5968c (two modes: the kill lands between syncs or during one); 54 and 62
# in CI runs with the whole suite (the fsyncs slower, more outcomes waiting). Up to
# max_per_destination x batch_size (200) could be in flight. (Outcomes written per
# batch of 20 gave 38-145 when the relay was slower: a batch now holds more.)
MAX_DUPLICATES_PER_KILL = 100


@pytest.mark.timeout(180)
async def test_kill_during_delivery_loses_nothing_and_repeats_little(tmp_path: Path) -> None:
    sink_port = free_port()
    port = free_port()
    daemon = Daemon(write_config(tmp_path, port, sink_port), port)
    try:
        await daemon.start()
        acknowledged: set[int] = set()
        # The destination is down while 600 messages are accepted: they wait in the spool.
        await asyncio.gather(
            *(send_until_stopped(port, range(k * 60, k * 60 + 60), acknowledged) for k in range(10))
        )
        assert len(acknowledged) == 600
        async with ScriptedServer(Handler, port=sink_port) as sink:
            for kill in range(1, KILLS + 1):
                while len(delivered(sink)) < kill * 130:
                    await asyncio.sleep(0.002)
                daemon.kill()  # in the middle of delivery
                assert len(delivered(sink)) < 600
                await daemon.start()
            seen = await wait_for(sink, acknowledged)
            assert await daemon.terminate() == 0
    finally:
        daemon.cleanup()
    lost = acknowledged - set(seen)
    assert not lost, f"{len(lost)} messages lost after the crashes: {sorted(lost)[:10]}"
    duplicates = sum(c - 1 for c in seen.values())
    per_kill = duplicates / KILLS
    print(f"delivered {len(seen)}, {KILLS} kills, duplicates {duplicates} ({per_kill:.1f}/kill)")
    assert per_kill <= MAX_DUPLICATES_PER_KILL


@pytest.mark.timeout(240)
async def test_kill_a_worker_during_intake_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """``workers = 2``: SIGKILL one worker while both take mail (delivery held): the
    supervisor restarts it, its shard is replayed, every message that got a 250 is in
    the queue, and once released each is delivered exactly once."""
    sink_port = free_port()  # nothing listens yet: the mail waits
    config, port = workers_config(tmp_path, workers=2, sink=sink_port, retry="1h")
    daemon = Supervised(config)
    pids: list[int] = []
    try:
        await daemon.start()
        pids = [worker["pid"] for worker in await daemon.workers()]
        acknowledged: set[int] = set()
        senders = [
            asyncio.create_task(send_until_stopped(port, range(k * 40, k * 40 + 40), acknowledged))
            for k in range(10)
        ]
        while len(acknowledged) < 120:
            await asyncio.sleep(0.005)
        os.kill(pids[1], signal.SIGKILL)  # in the middle of intake
        await asyncio.gather(*senders)
        assert 120 <= len(acknowledged) < 400  # worker 1's sessions were cut off
        health = await daemon.wait_healthy()
        assert [w["restarts"] for w in health["workers"]] == [0, 1]
        pids = [worker["pid"] for worker in health["workers"]]
        queued = (await daemon.get("/v1/spool/messages"))["messages"]
        numbers = {int(m["message_id"].strip("<>").partition("@")[0]) for m in queued}
        assert acknowledged <= numbers  # written before the 250: replayed from shard-1
        async with ScriptedServer(Handler, port=sink_port) as sink:
            status, released = await daemon.request("POST", "/v1/spool/send", {"all": True})
            assert status == 200 and released["released"] == len(queued)
            seen = await wait_for(sink, numbers)
            assert await daemon.terminate() == 0
    finally:
        daemon.cleanup(pids)
    assert set(seen) == numbers and max(seen.values()) == 1  # each once, none lost
    assert "worker 1" in daemon.log() and "restarting worker 1" in daemon.log()

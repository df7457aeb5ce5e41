"""``[server] workers = 2``: a real supervisor and its two workers. Both take mail on the
same port; every message is delivered exactly once; the control plane and the CLI see one
MTA; SIGTERM drains and exits 0; going back to one worker keeps shard-1's mail. (A worker
killed mid-intake: test_crash.py; the shared PostgreSQL queue: tests/spool/pg.)"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smtpx.testing import Handler, ScriptedServer
from tests.cli.helpers import invoke
from tests.conftest import proc_stat
from tests.mta.test_crash import free_port, send_until_stopped, wait_for
from tests.mta.workers_helpers import Supervised, wait_all_tried, workers_config


async def cli(daemon: Supervised, *args: str) -> Any:
    """``smtpx ARGS --socket <the supervisor's>`` (in a thread: it runs its own loop)."""
    return await asyncio.to_thread(invoke, *args, "--socket", str(daemon.socket))


async def send_many(port: int, connections: int, each: int) -> set[int]:
    acknowledged: set[int] = set()
    await asyncio.gather(
        *(
            send_until_stopped(port, range(k * each, (k + 1) * each), acknowledged)
            for k in range(connections)
        )
    )
    return acknowledged


@pytest.mark.timeout(180)
async def test_two_workers_take_the_mail_and_deliver_each_message_once(tmp_path: Path) -> None:
    async with ScriptedServer(Handler) as sink:
        config, port = workers_config(tmp_path, workers=2, sink=sink.port)
        daemon = Supervised(config)
        try:
            await daemon.start()
            acknowledged = await send_many(port, connections=30, each=2)
            assert len(acknowledged) == 60
            seen = await wait_for(sink, acknowledged)
            workers = await daemon.workers()
            assert daemon.process is not None
            # [server] worker_scheduling = "batch" (the default): the workers, not the
            # supervisor; and each worker's journal is synced by its fsync helper.
            assert os.sched_getscheduler(daemon.process.pid) == os.SCHED_OTHER
            for worker in workers:
                assert os.sched_getscheduler(worker["pid"]) == os.SCHED_BATCH
                assert fsync_helpers(worker["pid"]), worker
            metrics = await daemon.get("/metrics")
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGHUP)  # passed on: each worker reloads
            while daemon.log().count("reload: done") < 2:
                await asyncio.sleep(0.05)
            assert (await daemon.wait_healthy())["status"] == "ok"
            assert await daemon.terminate() == 0  # SIGTERM: both drained, all well
        finally:
            daemon.cleanup()
    assert set(seen) == acknowledged and max(seen.values()) == 1  # each exactly once
    took = [worker["stats"]["messages"] for worker in workers]
    assert sum(took) == 60 and min(took) > 0, took  # each worker took its part
    assert {worker["restarts"] for worker in workers} == {0}
    assert "smtpx_messages_received_total 60.0" in metrics
    assert "smtpx_messages_delivered_total 60.0" in metrics
    assert 'smtpx_workers_up{worker="1"} 1' in metrics
    assert "shutting down" in daemon.log()
    reloads = [line for line in daemon.log().splitlines() if "reload: done" in line]
    assert {line.rsplit("worker=", 1)[-1] for line in reloads} == {"0", "1"}  # who said it


@pytest.mark.timeout(180)
async def test_a_worker_that_is_busy_leaves_new_connections_to_the_others(
    tmp_path: Path,
) -> None:
    """The workers share their supervisor's listening socket and take a connection when
    they are free: with one worker stopped (SIGSTOP, as a worker stuck in a long task
    would look), every new connection is greeted by the other. (With a socket of its
    own per worker, SO_REUSEPORT, the kernel queued about half of them on the stopped
    one: they waited for it.) Taken one at a time, a burst of kept connections is shared
    too."""
    config, port = workers_config(tmp_path, workers=2, sink=free_port())
    daemon = Supervised(config)
    stopped: int | None = None
    try:
        await daemon.start()
        workers = await daemon.workers()
        stopped = workers[0]["pid"]
        os.kill(stopped, signal.SIGSTOP)
        for _ in range(12):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                greeting = await asyncio.wait_for(reader.readline(), 10)
            finally:
                writer.close()
            assert greeting.startswith(b"220 "), greeting
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        # A burst of connections kept open: both workers take some (each at most one
        # a pass of its loop, not the whole queue at once).
        burst = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for reader, _ in burst:
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220 ")
        sessions = [w["stats"]["sessions"] for w in await daemon.workers()]
        for _, writer in burst:
            writer.close()
        assert await daemon.terminate() == 0
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        daemon.cleanup()
    assert sessions[1] >= 12 and min(sessions) > 0, sessions


@pytest.mark.timeout(180)
async def test_connections_queued_when_a_worker_dies_are_served_by_the_others(
    tmp_path: Path,
) -> None:
    """What the operators' guide says of the shared socket: connections waiting in its
    queue are nobody's until taken. Both workers stopped, six clients connect (the
    kernel queues them); one worker is killed, the other goes on: every client is
    greeted. (With a socket of its own per worker, SO_REUSEPORT, the connections queued
    on the dead worker's would have been reset.)"""
    config, port = workers_config(tmp_path, workers=2, sink=free_port())
    daemon = Supervised(config)
    stopped: list[int] = []
    try:
        await daemon.start()
        dead, other = (worker["pid"] for worker in await daemon.workers())
        for pid in (dead, other):
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        while any((proc_stat(pid) or ["T"])[0] != "T" for pid in stopped):
            await asyncio.sleep(0.01)  # (stopped for sure: no accept from here on)
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
        os.kill(dead, signal.SIGKILL)
        stopped.remove(dead)
        os.kill(other, signal.SIGCONT)
        stopped.remove(other)
        for reader, _ in clients:
            greeting = await asyncio.wait_for(reader.readline(), 10)
            assert greeting.startswith(b"220 "), greeting
        for _, writer in clients:
            writer.close()
        await daemon.wait_healthy()  # (the supervisor starts the dead one again)
        assert [w["restarts"] for w in await daemon.workers()] == [1, 0]
        assert await daemon.terminate() == 0
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        daemon.cleanup()


def fsync_helpers(pid: int) -> list[int]:
    """The fsync helper processes whose parent is ``pid``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = proc_stat(int(entry))
        if fields is not None and int(fields[1]) == pid:
            with contextlib.suppress(OSError):
                if b"fsync_helper.py" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


@pytest.mark.timeout(240)
async def test_the_cli_sees_one_mta_and_one_worker_keeps_all_the_mail(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there: the mail waits in the shards
    config, port = workers_config(tmp_path, workers=2, sink=closed, retry="1h", token=True)
    daemon = Supervised(config)
    try:
        await daemon.start()
        assert len(await send_many(port, connections=20, each=1)) == 20
        messages = await wait_all_tried(daemon, 20)
        ids = {m["id"] for m in messages}
        shards = [
            {m["id"] for m in (await daemon.get("/v1/spool/messages", sock))["messages"]}
            for sock in (daemon.worker_socket(0), daemon.worker_socket(1))
        ]
        assert shards[0] and shards[1] and shards[0] | shards[1] == ids  # both shards
        assert not shards[0] & shards[1]

        # smtpx spool status: one queue, oldest first
        status = await cli(daemon, "spool", "status", "--format", "json")
        assert status.exit_code == 0, status.output
        listed = json.loads(status.stdout)
        assert {m["id"] for m in listed} == ids
        assert [m["spool_date"] for m in listed] == sorted(m["spool_date"] for m in listed)
        count = await daemon.get("/v1/spool/count")
        assert count == {"count": 20, "by_status": {"send_at": 20}}

        # an action on ids of both shards reaches each; an unknown id changes nothing
        one, two = sorted(shards[0])[0], sorted(shards[1])[0]
        frozen = await cli(daemon, "spool", "freeze", one, two)
        assert frozen.exit_code == 0, frozen.output
        refused = await cli(daemon, "spool", "freeze", sorted(shards[0])[1], "nonesuch")
        assert refused.exit_code != 0 and "nonesuch: not found" in refused.output
        shown = await cli(daemon, "spool", "show", "--json", two)
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["status"] == "frozen"
        assert (await daemon.request("GET", "/v1/spool/messages/nonesuch"))[0] == 404
        count = await daemon.get("/v1/spool/count")
        assert count["by_status"] == {"send_at": 18, "frozen": 2}
        daemon_status = await cli(daemon, "daemon", "status")
        assert daemon_status.exit_code == 0 and "messages=20" in daemon_status.output

        process = await daemon.get("/v1/process")
        assert process["supervisor"] and len(process["workers"]) == 2
        assert (await daemon.get("/v1/cache"))["open"] == 0
        bad = await daemon.request("GET", "/v1/spool/events?ping=0")
        assert bad[0] == 400 and "ping" in bad[1]["error"]  # the workers' refusal

        # events from both workers, merged; HTTP needs the token
        events = await _first_events(daemon, 20)
        assert {e["id"] for e in events if e["kind"] == "listed"} == ids
        assert {e["worker"] for e in events} == {0, 1}
        await _token_is_required(config)
        assert await daemon.terminate() == 0
    finally:
        daemon.cleanup()
    assert (tmp_path / "spool" / "shard-1").is_dir()

    # one worker again: shard-1's mail moves into the spool, states kept
    config.write_text(config.read_text().replace("workers = 2", "workers = 1"))
    single = Supervised(config)
    try:
        await single.start()
        after = (await single.get("/v1/spool/messages"))["messages"]
        assert {m["id"] for m in after} == ids
        assert {m["id"] for m in after if m["status"] == "frozen"} == {one, two}
        assert "workers" not in await single.get("/v1/server")  # no supervisor
        assert await single.terminate() == 0
    finally:
        single.cleanup()
    assert not (tmp_path / "spool" / "shard-1").exists()


async def _first_events(daemon: Supervised, count: int) -> list[dict[str, Any]]:
    connector = aiohttp.UnixConnector(path=str(daemon.socket))
    lines: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://smtpx/v1/spool/events?existing=1&ping=0.2") as reply,
    ):
        assert reply.status == 200
        async for line in reply.content:
            lines.append(json.loads(line))
            if sum(event["kind"] == "listed" for event in lines) == count:
                return lines
    raise AssertionError(lines)


async def _token_is_required(config: Path) -> None:
    http = next(
        line.split('"')[1] for line in config.read_text().splitlines() if line.startswith("http")
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{http}/v1/spool/count") as reply:
            assert reply.status == 401
        headers = {"Authorization": "Bearer t0ken"}
        async with session.get(f"http://{http}/v1/spool/count", headers=headers) as reply:
            assert reply.status == 200
            assert (await reply.json())["count"] == 20


@pytest.mark.timeout(120)
async def test_a_worker_that_cannot_start_stops_them_all(tmp_path: Path) -> None:
    """At start, a worker that ends (here: its shard is locked by another process) is
    not restarted in a loop: the supervisor stops the others and exits 1, saying why."""
    config, port = workers_config(tmp_path, workers=2, sink=free_port())
    shard = tmp_path / "spool" / "shard-1"
    shard.mkdir(parents=True)
    with open(shard / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "smtpx", "serve", "--config", str(config)],
            cwd=tmp_path,
            capture_output=True,
            timeout=90,
        )
    assert result.returncode == 1, result.stderr
    assert b"smtpx serve: worker 1 ended with status 1" in result.stderr
    with socket.socket() as probe:  # worker 0 was stopped, the port let go
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert not (tmp_path / "control.sock").exists()

"""[server] workers: the key, a worker's configuration, port reservation, shard adoption and
the merging of the workers' control-plane answers (no processes: see test_workers.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from smtpx.envelope import Envelope
from smtpx.errors import ConfigError
from smtpx.io.balance import Beats, SessionBalance, make_balance
from smtpx.mta.app import Mta
from smtpx.mta.config import ListenAddress, MtaConfig
from smtpx.mta.config_toml import to_toml
from smtpx.mta.fanout import merge_cache, merge_metrics, sum_counts
from smtpx.mta.supervisor import (
    DRAIN_DEADLINE,
    WATCHDOG,
    WATCHDOG_EVERY,
    Supervisor,
    split_state_warnings,
    watch_parent,
)
from smtpx.mta.tlsrpt import SUCCESS, PolicyRef, TlsEvent
from smtpx.mta.workermetrics import WorkerMetrics
from smtpx.mta.workers import (
    adopt_shards,
    reserve_ports,
    shard_dir,
    worker_config,
    worker_socket,
)
from smtpx.spool.journal_store import JournalStore
from smtpx.spool.spool import Delivery, Spool, SpoolConfig
from smtpx.testing import run_virtual
from tests.cli.helpers import invoke
from tests.mta.helpers import config as mta_config


@pytest.fixture(autouse=True)
def fixed_fqdn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.getfqdn", lambda: "mta.test.example")


def test_workers_default_auto_and_refusals() -> None:
    assert MtaConfig.default().server.workers == 1
    auto = MtaConfig.from_toml('[server]\nworkers = "auto"\n')
    assert auto.server.workers == (os.cpu_count() or 1)
    assert MtaConfig.from_toml("[server]\nworkers = 3\n").server.workers == 3
    for bad in ("0", "-1", '"many"', "true", "257", "1.5"):
        with pytest.raises(ConfigError, match=r"server\.workers"):
            MtaConfig.from_toml(f"[server]\nworkers = {bad}\n")


def test_config_show_prints_workers() -> None:
    text = to_toml(MtaConfig.from_toml("[server]\nworkers = 4\n"))
    assert "workers = 4" in text
    assert MtaConfig.from_toml(text).server.workers == 4
    # the listeners of several workers share their ports
    assert MtaConfig.from_toml("[server]\nworkers = 4\n").server_config().reuse_port
    assert not MtaConfig.default().server_config().reuse_port


def test_worker_config(tmp_path: Path) -> None:
    config = MtaConfig.from_toml(
        """
[server]
workers = 2
listen = ["127.0.0.1:0", "[::1]:2525"]
lmtp = ["127.0.0.1:0"]
proxied = ["127.0.0.1:0"]
proxy_from = ["127.0.0.1/32"]
[control]
socket = "run/control.sock"
http = "127.0.0.1:8025"
token_file = "token"
[spool]
dir = "spool"
""",
        base_dir=tmp_path,
    )
    first = worker_config(config, 0, 2, [3001, 3002, 3003])
    second = worker_config(config, 1, 2, [3001, 3002, 3003])
    assert first.spool.dir == tmp_path / "spool"  # worker 0: the spool itself
    assert second.spool.dir == tmp_path / "spool" / "shard-1"
    assert second.control.socket == tmp_path / "run" / "control.sock.worker-1"
    assert second.control.http is None  # the supervisor serves HTTP
    assert [a.port for a in second.server.listen] == [3001, 3002]
    assert [a.port for a in second.server.lmtp] == [3003]
    assert second.server.proxied == (ListenAddress(host="127.0.0.1", port=3001),)
    assert [listener.proxied for listener in second.listeners()] == [True, False, False]
    with pytest.raises(ValueError, match="2 ports given for 3 listeners"):
        worker_config(config, 1, 2, [1, 2])
    # The supervisor's sockets, one per listener in order, and the shared counts.
    shared = worker_config(config, 1, 2, [3001, 3002, 3003], fds=[7, 8, 9], balance=5)
    assert [listener.fd for listener in shared.listeners()] == [7, 8, 9]
    assert shared.server.balance_fd == 5
    assert not shared.server_config().reuse_port  # nothing of its own to bind
    assert second.server_config().reuse_port  # (a worker given no sockets binds its own)
    assert "listen_fds" not in to_toml(shared) and "balance_fd" not in to_toml(shared)
    with pytest.raises(ValueError, match="2 sockets given for 3 listeners"):
        worker_config(config, 1, 2, [3001, 3002, 3003], fds=[7, 8])
    # Each knows its index, which is not a key of the file: config show leaves it out.
    assert (config.server.worker, first.server.worker, second.server.worker) == (None, 0, 1)
    assert "worker =" not in to_toml(second) and "workers = 2" in to_toml(second)


async def test_workers_share_one_tls_report(tmp_path: Path) -> None:
    """TLS-RPT with workers: every worker records in the spool's tlsrpt/ (one file a
    day, whole lines), and worker 0 alone sends the reports."""
    base = mta_config(tmp_path, server={"workers": 2}, routing={"tlsrpt": {"enabled": True}})
    mtas = [Mta(worker_config(base, i, 2, [0])) for i in range(2)]
    logs = [mta.tls_reports for mta in mtas if mta.tls_reports is not None]
    assert len(logs) == 2
    assert logs[0].directory == logs[1].directory == tmp_path / "spool" / "tlsrpt"
    assert mtas[0].tls_reporter is not None and mtas[1].tls_reporter is None
    policy = PolicyRef("sts", "example.org", ("version: STSv1",), ("mx.example.org",))
    for n in range(200):
        result = SUCCESS if n % 3 == 0 else "starttls-not-supported"
        logs[n % 2].record(TlsEvent(policy, result, 1_700_000_000.0, mx_host="mx.example.org"))
    events = logs[0].events(logs[0].finished_days()[0])
    assert len(events) == 200 and sum(e.result == SUCCESS for e in events) == 67


def test_worker_config_postgresql_nodes(tmp_path: Path) -> None:
    config = MtaConfig.from_toml(
        '[spool]\nbackend = "postgresql"\n[spool.postgresql]\n'
        'dsn = "postgresql://u@127.0.0.1/q"\nnode = "mx1"\n',
        base_dir=tmp_path,
    )
    nodes = {worker_config(config, i, 3, [2525]).spool.postgresql.node for i in range(3)}  # type: ignore[union-attr]
    assert nodes == {"mx1-w0", "mx1-w1", "mx1-w2"}  # each its own leases


def test_reserve_ports_resolves_port_zero_and_shares_them() -> None:
    config = MtaConfig.from_toml('[server]\nlisten = ["127.0.0.1:0", "127.0.0.1:0"]\n')
    held, ports = reserve_ports(config.server)
    try:
        assert len(set(ports)) == 2 and 0 not in ports
        # a worker can listen there (SO_REUSEPORT), nobody else can
        with socket.socket() as worker:
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", ports[0]))
            worker.listen()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", ports[0]))
    finally:
        for sock in held:
            sock.close()


def test_reserve_ports_names_a_taken_address() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = MtaConfig.from_toml(f'[server]\nlisten = ["127.0.0.1:{port}"]\n')
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            reserve_ports(config.server)


def _message(n: int) -> Envelope:
    return Envelope.create(
        sender="a@example.com", recipients=["x@example.net"], message=f"Subject: {n}\r\n\r\nhi\r\n"
    )


async def _fill(directory: Path, count: int) -> set[str]:
    spool = Spool(SpoolConfig(directory=directory), router=None)
    await spool.start()
    try:
        deliveries = [Delivery(_message(n), route="example.net") for n in range(count)]
        ids = await spool.add(deliveries, frozen=True)  # held: nothing is tried
    finally:
        await spool.kill_and_flush(0)
    return set(ids)


async def _ids(directory: Path) -> dict[str, str]:
    store = JournalStore(SpoolConfig(directory=directory), Counter())
    await store.open()
    try:
        return {m.id: m.status.value for m in await store.all()}
    finally:
        await store.close()


async def test_fewer_workers_adopt_the_shards_left_over(tmp_path: Path) -> None:
    config = MtaConfig.from_toml('[spool]\ndir = "spool"\n', base_dir=tmp_path)
    spool_dir = config.spool.dir
    shards = {index: await _fill(shard_dir(spool_dir, index), 2 + index) for index in range(4)}
    moved = await adopt_shards(config, 2)  # shard 2 -> worker 0, shard 3 -> worker 1
    assert moved == Counter({2: 4, 3: 5})
    assert not (spool_dir / "shard-2").exists() and not (spool_dir / "shard-3").exists()
    held0, held1 = await _ids(spool_dir), await _ids(spool_dir / "shard-1")
    assert set(held0) == shards[0] | shards[2]
    assert set(held1) == shards[1] | shards[3]
    assert set(held0.values()) == {"frozen"}  # states kept
    assert await adopt_shards(config, 2) == Counter()  # nothing left to do
    assert await adopt_shards(config, 1) == Counter({1: 8})  # back to one process
    assert set(await _ids(spool_dir)) == set().union(*shards.values())


def test_merge_metrics_adds_samples_family_by_family() -> None:
    one = (
        "# HELP smtpx_sessions_total SMTP sessions\n# TYPE smtpx_sessions_total counter\n"
        "smtpx_sessions_total 3.0\nsmtpx_sessions_created 100.0\n"
        '# HELP q Queue\n# TYPE q gauge\nq{status="frozen"} 1.0\n'
    )
    two = (
        "# HELP smtpx_sessions_total SMTP sessions\n# TYPE smtpx_sessions_total counter\n"
        "smtpx_sessions_total 4.0\nsmtpx_sessions_created 90.0\n"
        '# HELP q Queue\n# TYPE q gauge\nq{status="frozen"} 1.0\nq{status="a b"} 2.0\n'
        "# HELP only Only here\n# TYPE only gauge\nonly 1.5\n"
    )
    merged = merge_metrics([one, two])
    assert merged.splitlines() == [
        "# HELP smtpx_sessions_total SMTP sessions",
        "# TYPE smtpx_sessions_total counter",
        "smtpx_sessions_total 7.0",
        "smtpx_sessions_created 90.0",
        "# HELP q Queue",
        "# TYPE q gauge",
        'q{status="frozen"} 2.0',
        'q{status="a b"} 2.0',
        "# HELP only Only here",
        "# TYPE only gauge",
        "only 1.5",
    ]
    shared = merge_metrics([one, two], first_only=frozenset({"q"}))
    assert 'q{status="frozen"} 1.0' in shared and "a b" not in shared


def test_merge_cache_and_counts() -> None:
    one = {"open": 1, "opened": 2, "reused": 0, "destinations": {"a": {"open": 1, "idle": 1}}}
    two = {"open": 2, "opened": 2, "reused": 5, "destinations": {"b": {"open": 2, "idle": 0}}}
    assert merge_cache([one, two]) == {
        "open": 3,
        "opened": 4,
        "reused": 5,
        "destinations": {"a": {"open": 1, "idle": 1}, "b": {"open": 2, "idle": 0}},
    }
    assert sum_counts([{"released": 2, "x": "a"}, {"released": 3, "x": "b"}]) == {
        "released": 5,
        "x": "a",
    }


def test_worker_socket_is_next_to_the_public_one() -> None:
    assert worker_socket(Path("/run/smtpx/control.sock"), 3) == Path(
        "/run/smtpx/control.sock.worker-3"
    )


def test_split_state_is_warned_about_without_redis() -> None:
    plain = MtaConfig.from_toml("[server]\nworkers = 2\n")
    assert split_state_warnings(plain) == []
    warnings = split_state_warnings(MtaConfig.from_dict(guarded_dict()))
    assert len(warnings) == 2 and "greylisted again" in warnings[0]
    shared = MtaConfig.from_dict({**guarded_dict(), "redis": {"url": "redis://127.0.0.1/0"}})
    assert split_state_warnings(shared) == []


def guarded_dict() -> dict[str, object]:
    return {
        "greylist": {"enabled": True},
        "rate_limits": {"rules": [{"by": "client", "messages": 2, "window": "1h"}]},
    }


def test_smtpx_config_show_prints_workers(tmp_path: Path) -> None:
    config = tmp_path / "smtpx.toml"
    config.write_text('[server]\nworkers = "auto"\n', encoding="utf-8")
    result = invoke("config", "show", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert f"workers = {os.cpu_count() or 1}\n" in result.stdout


def test_worker_metrics_carry_counters_over_restarts() -> None:
    def text(count: float, bucket: float, created: float, gauge: float, label: str) -> str:
        return (
            "# HELP m_total M\n# TYPE m_total counter\n"
            f'm_total{{k="{label}"}} {count}\n'
            "# HELP lat L\n# TYPE lat histogram\n"
            f'lat_bucket{{le="1.0"}} {bucket}\nlat_count {bucket}\nlat_sum 0.5\n'
            f"# HELP lat_created L\n# TYPE lat_created gauge\nlat_created {created}\n"
            f"# HELP up U\n# TYPE up gauge\nup {gauge}\n"
        )

    metrics = WorkerMetrics()
    assert metrics.last(0) is None
    first = metrics.seen(0, 100, text(5, 2, 1000, 7, "a"))
    assert first == text(5.0, 2.0, 1000.0, 7.0, "a")  # the first life: as it says
    # Same process: as it says.
    assert 'm_total{k="a"} 6.0' in metrics.seen(0, 100, text(6, 2, 1000, 7, "a"))
    # A new process: counters from zero; its series "b" is new, "a" not made again yet.
    second = metrics.seen(0, 200, text(1, 1, 2000, 3, "b")).splitlines()
    assert 'm_total{k="b"} 1.0' in second and 'm_total{k="a"} 6.0' in second
    assert second.index('m_total{k="a"} 6.0') < second.index("# HELP lat L")  # its family
    assert 'lat_bucket{le="1.0"} 3.0' in second and "lat_count 3.0" in second
    assert "lat_sum 1.0" in second and "lat_created 1000.0" in second  # the earliest
    assert "up 3.0" in second  # a gauge is as said now
    # Another restart: the carried values are the last ones shown.
    third = metrics.seen(0, 300, text(2, 0, 3000, 1, "a")).splitlines()
    assert 'm_total{k="a"} 8.0' in third and 'm_total{k="b"} 1.0' in third
    assert 'lat_bucket{le="1.0"} 3.0' in third and "lat_created 1000.0" in third
    assert metrics.last(0) == "\n".join(third) + "\n"
    # Another worker is its own.
    assert metrics.seen(1, 100, text(1, 0, 5, 1, "a")) == metrics.last(1)
    assert 'm_total{k="a"} 1.0' in metrics.last(1)  # type: ignore[operator]


async def test_a_worker_accepts_once_told_or_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker binds its listeners but listens only when the supervisor says that every
    worker is ready (POST /v1/server/serve): the first one up would take every
    connection made meanwhile. Its /healthz says so. Without a word, it listens anyway
    after WORKER_GATE seconds."""
    base = mta_config(tmp_path, server={"workers": 2})
    async with Mta(worker_config(base, 1, 2, [0])) as mta:
        port = mta.server.ports[0]
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # bound, not listening
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(mta.config.control.socket))
        ) as http:
            async with http.get("http://worker/healthz") as reply:
                assert reply.status == 200 and (await reply.json())["serving"] is False
            async with http.post("http://worker/v1/server/serve", json={}) as reply:
                assert reply.status == 200
            async with http.get("http://worker/healthz") as reply:
                assert (await reply.json())["serving"] is True
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220 ")
        writer.close()

    monkeypatch.setattr("smtpx.mta.app.WORKER_GATE", 0.05)
    async with Mta(worker_config(base, 1, 2, [0])) as mta:
        assert not mta.server.serving
        for _ in range(200):
            if mta.server.serving:
                break
            await asyncio.sleep(0.01)
        assert mta.server.serving
    async with Mta(base) as single:  # one process: at once
        assert single.server.serving


@pytest.mark.parametrize(
    ("policy", "expected"), [("batch", "SCHED_BATCH"), ("normal", "SCHED_OTHER")]
)
def test_a_worker_takes_its_scheduling_policy(policy: str, expected: str) -> None:
    script = (
        "import os\n"
        "from smtpx.cli.workers import schedule\n"
        f"schedule({policy!r})\n"
        "print(os.sched_getscheduler(0))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(result.stdout) == getattr(os, expected)


def test_worker_scheduling_is_checked() -> None:
    with pytest.raises(ConfigError, match="worker_scheduling"):
        MtaConfig.from_toml('[server]\nworker_scheduling = "fast"\n')
    assert MtaConfig.default().server.worker_scheduling == "batch"


def test_an_orphaned_worker_stops_then_exits_if_its_drain_hangs() -> None:
    """The supervisor gone (this process's parent is not the pid given): stop at once;
    still running after the grace (a drain that hangs): the process ends, status 1.
    Cancelled first (the worker closed): nothing more."""
    stopped: list[float] = []
    ended: list[tuple[int, float]] = []

    async def scenario(close_after: float | None) -> None:
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(
            watch_parent(
                os.getpid(),  # never this process's parent: the supervisor is "gone"
                lambda: stopped.append(loop.time()),
                grace=60.0,
                end_process=lambda status: ended.append((status, loop.time())),
            )
        )
        if close_after is None:
            await watcher
        else:
            await asyncio.sleep(close_after)
            watcher.cancel()

    run_virtual(scenario(close_after=None))
    assert stopped == [0.0] and ended == [(1, 60.0)]
    stopped.clear()
    ended.clear()
    run_virtual(scenario(close_after=5.0))  # the drain finished in time
    assert stopped == [0.0] and ended == []


def test_a_worker_whose_supervisor_lives_is_left_alone() -> None:
    calls: list[str] = []

    async def scenario() -> None:
        watcher = asyncio.get_running_loop().create_task(
            watch_parent(
                os.getppid(),
                lambda: calls.append("stop"),
                end_process=lambda status: calls.append("exit"),
            )
        )
        await asyncio.sleep(3600)
        watcher.cancel()

    run_virtual(scenario())
    assert calls == []


HANGS_ON_TERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


async def started_worker(supervisor: Supervisor, index: int, script: str) -> None:
    """Worker ``index`` of ``supervisor`` as a process running ``script`` (ready once
    it printed so: its signal handling is in place)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE
    )
    supervisor.workers[index].process = process
    assert process.stdout is not None
    assert await process.stdout.readline() == b"ready\n"


def test_a_worker_that_does_not_drain_is_killed_at_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The supervisor's SIGTERM is ignored (a drain that hangs): at the deadline (on
    the virtual clock) the worker is killed, and the error says which."""
    config = MtaConfig.from_toml("[server]\nworkers = 2\n")

    async def scenario() -> tuple[int | None, float]:
        supervisor = Supervisor(config, ["unused"])
        await started_worker(supervisor, 0, HANGS_ON_TERM)  # worker 1 never started
        loop = asyncio.get_running_loop()
        started = loop.time()
        await supervisor.close()
        process = supervisor.workers[0].process
        assert process is not None
        return process.returncode, loop.time() - started

    with caplog.at_level(logging.ERROR, logger="smtpx"):
        status, took = run_virtual(scenario())
    assert status == -signal.SIGKILL
    assert took == pytest.approx(DRAIN_DEADLINE, abs=1.0)
    assert "worker 0 (pid" in caplog.text and "still running 120 s after SIGTERM" in caplog.text
    assert "worker 1" not in caplog.text


def test_a_worker_whose_loop_stands_still_is_killed_by_the_watchdog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Worker 0 serves (it beat once) and its loop then stands still; worker 1's turns.
    WATCHDOG seconds on (the virtual clock), the supervisor kills worker 0 (its restart
    is _watch's, as for any worker that dies) and leaves worker 1 alone."""
    config = MtaConfig.from_toml("[server]\nworkers = 2\n")
    sleeper = "import time\nprint('ready', flush=True)\ntime.sleep(3600)\n"

    async def scenario() -> tuple[bool, int | None, int | None]:
        loop = asyncio.get_running_loop()
        stuck = asyncio.new_event_loop()  # worker 0's loop: never turns after its beat
        supervisor = Supervisor(config, ["unused"])
        fd = make_balance(2)
        assert fd is not None
        views = [SessionBalance(fd, i, 2, clock=loop.time) for i in range(2)]
        try:
            for index in range(2):
                await started_worker(supervisor, index, sleeper)
            views[0].start_beating(stuck)
            views[1].start_beating(loop)
            beats = Beats(fd, 2, clock=loop.time)
            watchdog = loop.create_task(supervisor._watchdog(beats))
            first = supervisor.workers[0].process
            assert first is not None
            await asyncio.sleep(WATCHDOG - WATCHDOG_EVERY)  # (checked meanwhile: too early)
            early = "has not turned" in caplog.text
            await first.wait()
            supervisor.stop()
            await watchdog
            beats.close()
            other = supervisor.workers[1].process
            assert other is not None
            alive = other.returncode
            other.kill()
            await other.wait()
            return early, first.returncode, alive
        finally:
            for view in views:
                view.close()
            os.close(fd)
            stuck.close()

    with caplog.at_level(logging.ERROR, logger="smtpx"):
        early, killed, alive = run_virtual(scenario())
    assert not early and killed == -signal.SIGKILL and alive is None
    assert "worker 0 (pid" in caplog.text and "has not turned its event loop" in caplog.text
    assert "worker 1" not in caplog.text


async def test_a_worker_that_drains_in_time_is_not_killed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(MtaConfig.from_toml("[server]\nworkers = 2\n"), ["unused"])
    for index in range(2):
        await started_worker(
            supervisor, index, "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
        )
    with caplog.at_level(logging.ERROR, logger="smtpx"):
        await supervisor.close()
    assert [w.process.returncode for w in supervisor.workers if w.process] == [-signal.SIGTERM] * 2
    assert "killed" not in caplog.text


async def test_tls_report_events_left_in_shards_join_the_shared_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers once recorded TLS-RPT events in their shard (spool/shard-1/tlsrpt): worker
    0 moves them into the shared log when it starts (not when it is built), so the
    day's report counts them."""
    policy = PolicyRef("sts", "example.org", ("version: STSv1",), ("mx.example.org",))
    event = TlsEvent(policy, SUCCESS, 1_700_000_000.0, mx_host="mx.example.org")
    shard_log = tmp_path / "spool" / "shard-1" / "tlsrpt"
    shard_log.mkdir(parents=True)
    day = "2023-11-14"
    (shard_log / f"{day}.jsonl").write_text(
        event.to_json() + "\n" + event.to_json() + "\n" + event.to_json()[:20]  # cut short
    )
    base = mta_config(tmp_path, server={"workers": 2}, routing={"tlsrpt": {"enabled": True}})
    second = Mta(worker_config(base, 1, 2, [0]))  # worker 1 leaves the shards alone
    assert second.tls_reports is not None
    second.tls_reports.record(event)
    assert (shard_log / f"{day}.jsonl").exists()
    first = Mta(worker_config(base, 0, 2, [0]))
    assert (shard_log / f"{day}.jsonl").exists()  # built (serve --check does): not yet
    with caplog.at_level(logging.INFO, logger="smtpx.mta"):
        await first.start()
        await first.close()
    assert first.tls_reports is not None
    assert not (shard_log / f"{day}.jsonl").exists()
    assert first.tls_reports.finished_days() == [day]
    assert len(first.tls_reports.events(day)) == 3  # two moved, one recorded; the cut one dropped
    assert "TLS-RPT: 1 days of events moved from" in caplog.text

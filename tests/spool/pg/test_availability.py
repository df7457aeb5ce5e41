"""The shared queue's database out of reach: ``smtpx serve`` starts anyway, answers 421
until the database answers, then takes mail; ``smtpx db`` and ``serve --check`` say so."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from click.testing import CliRunner

from smtpx.cli import main
from smtpx.client import connect
from smtpx.errors import SessionError
from smtpx.mta.app import Mta
from smtpx.mta.config import MtaConfig
from smtpx.mta.routing import FakeDns
from smtpx.spool.pg import store as pg_store
from smtpx.spool.pg.store import PgStore
from smtpx.spool.types import PostgresSettings, SpoolConfig
from tests.mta.helpers import PLAIN, message
from tests.spool.pg.helpers import entry, meta


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def through(dsn: str, port: int) -> str:
    """``dsn`` with the server's address replaced by 127.0.0.1:``port``."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}"))


@contextlib.asynccontextmanager
async def tcp_relay(listen: int, target: tuple[str, int]) -> AsyncIterator[None]:
    """A byte relay from 127.0.0.1:``listen`` to ``target`` (the database coming back)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    try:
        yield
    finally:
        server.close()


def config(tmp_path: Path, dsn: str) -> MtaConfig:
    return MtaConfig.from_dict(
        {
            "hostname": "mx.test",
            "server": {"listen": ["127.0.0.1:0"]},
            "spool": {
                "dir": str(tmp_path / "spool"),
                "backend": "postgresql",
                "postgresql": {"dsn": dsn, "node": "n1", "lease": "30s"},
            },
            "local": {"maildir": str(tmp_path / "mail")},
            "relay": {"local_domains": ["example.org"]},
            "control": {"socket": str(tmp_path / "control.sock")},
        }
    )


async def test_serve_answers_421_until_the_database_answers(tmp_path: Path, pg_dsn: str) -> None:
    port = free_port()
    parts = urlsplit(pg_dsn)
    target = (parts.hostname or "127.0.0.1", parts.port or 5432)
    async with Mta(config(tmp_path, through(pg_dsn, port)), dns=FakeDns()) as mta:
        store = mta.spool.store
        assert isinstance(store, PgStore) and not store.ready
        with pytest.raises(SessionError) as refused:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN):
                pass
        assert refused.value.reply is not None
        assert (refused.value.reply.code, str(refused.value.reply.enhanced)) == (421, "4.3.0")
        async with tcp_relay(port, target):  # the database comes back
            # The store tries again after 1 s, then 2, 4 ...: which try finds the relay
            # depends on how long the 421 above took (5 s was short for a loaded run).
            for _ in range(600):
                if store.ready:
                    break
                await asyncio.sleep(0.05)
            assert store.ready
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert (await client.send(message(2))).ok


def test_db_check_migrate_and_serve_check(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "smtpx.toml"
    runner = CliRunner()

    def write(dsn: str) -> None:
        path.write_text(
            f'[spool]\nbackend = "postgresql"\n[spool.postgresql]\ndsn = "{dsn}"\nnode = "n1"\n',
            encoding="utf-8",
        )

    write(pg_dsn)
    fresh = runner.invoke(main, ["db", "check", "--config", str(path)])
    assert fresh.exit_code == 0 and "no schema yet" in fresh.output, fresh.output
    first = runner.invoke(main, ["db", "migrate", "--config", str(path)])
    assert first.exit_code == 0 and "applied migrations 1" in first.output, first.output
    again = runner.invoke(main, ["db", "migrate", "--config", str(path)])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert "schema version 1" in runner.invoke(main, ["db", "check", "--config", str(path)]).output
    assert runner.invoke(main, ["serve", "--check", "--config", str(path)]).exit_code == 0
    write(through(pg_dsn, free_port()))  # nothing listens there
    down = runner.invoke(main, ["db", "check", "--config", str(path)])
    assert down.exit_code == 1 and "does not answer" in down.output
    assert runner.invoke(main, ["serve", "--check", "--config", str(path)]).exit_code == 2


async def test_closing_does_not_wait_for_a_connection_that_never_comes_back(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection still out at close (a cancelled query waiting for PostgreSQL to
    confirm its cancel, say) used to hold close() for good (asyncpg only warns after
    60 s; the loaded full run's hang); the pool is terminated after CLOSE_TIMEOUT."""
    monkeypatch.setattr(pg_store, "CLOSE_TIMEOUT", 0.2)
    settings = PostgresSettings(dsn=pg_dsn, node="n1")
    pg = PgStore(SpoolConfig(directory=tmp_path / "spool", postgresql=settings), {}, lambda: 0.0)
    await pg.open()
    pool = pg._pool
    await pool.acquire()  # never released
    await asyncio.wait_for(pg.close(), 5)
    assert "the pool was terminated" in caplog.text
    with pytest.raises(asyncpg.InterfaceError, match="closed"):
        await pool.acquire()


async def test_closing_gives_up_the_writes_a_database_does_not_answer(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Giving back what the node holds waits on a lock someone else keeps (a database
    that stopped answering looks the same): close gives up after CLOSE_TIMEOUT and
    says so; the message keeps its lease, so it returns to the queue once that lapses."""
    monkeypatch.setattr(pg_store, "CLOSE_TIMEOUT", 0.3)
    settings = PostgresSettings(dsn=pg_dsn, node="n1")
    pg = PgStore(SpoolConfig(directory=tmp_path / "spool", postgresql=settings), {}, time.time)
    await pg.open()
    await pg.queue.add(meta(1), b"Subject: 1\r\n\r\nbody\r\n")
    assert [m.id for m in await pg.claim_due(time.time())] == [entry(1).id]
    locker = await asyncpg.connect(pg_dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            await asyncio.wait_for(pg.close(), 5)
        assert "writes still under way 0.3s after closing began: given up" in caplog.text
        assert "1 messages held by node n1" in caplog.text
        owner = await locker.fetchval("SELECT lease_owner FROM messages")
        assert owner == "n1"  # not given back: it waits for its lease to lapse
    finally:
        await locker.close()


async def test_a_connection_attempt_cancelled_midway_does_not_hang(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing while the store (re)connects cancels the attempt; its new pool, with a
    connection still out (the database gone mid-migration, say), is terminated, not
    closed: a close waits for that connection for good (a loaded CI run hung so)."""
    started = asyncio.Event()

    async def stuck(pool: asyncpg.Pool) -> list[int]:
        await pool.acquire()  # never released
        started.set()
        await asyncio.Event().wait()
        return []

    monkeypatch.setattr(pg_store, "migrate", stuck)
    settings = PostgresSettings(dsn=pg_dsn, node="n1")
    pg = PgStore(SpoolConfig(directory=tmp_path / "spool", postgresql=settings), {}, lambda: 0.0)
    attempt = asyncio.ensure_future(pg._connect())
    await asyncio.wait_for(started.wait(), 10)
    attempt.cancel()
    done, _ = await asyncio.wait([attempt], timeout=5)
    assert done and attempt.cancelled()

"""``smtpx spool migrate``: a queue moves from the journal to PostgreSQL and back, states,
DSN parameters and bodies intact; interrupted and run again, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpx.cli import main
from smtpx.envelope import Envelope, HostPort
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.journal_store import JournalStore
from smtpx.spool.message import Status
from smtpx.spool.migrate import migrate_queue
from smtpx.spool.spool import Delivery, Spool, SpoolConfig
from smtpx.spool.types import PostgresSettings
from smtpx.testing import MemoryNetwork


def mail(n: int) -> Delivery:
    envelope = Envelope.create(
        sender="a@example.com",
        recipients=[f"u{n}@example.net"],
        recipient_params={f"u{n}@example.net": "NOTIFY=SUCCESS"},
        message=f"Subject: {n}\r\n\r\n.line {n}\r\n".encode(),
    )
    return Delivery(envelope, next_hops=(HostPort("mx.test", 25),))


async def fill(directory: Path) -> dict[str, bytes]:
    """A journal with frozen and waiting messages; their bodies, by id."""
    config = SpoolConfig(directory=directory, fsync=FsyncPolicy.NEVER, ping_interval=1e9)
    network = MemoryNetwork(down={"mx.test"})
    async with Spool(config, opener=network) as spool:
        frozen = await spool.add([mail(1), mail(2)], frozen=True)
        waiting = await spool.add([mail(3)])
        for _ in range(200):  # one attempt, refused: it waits for its retry
            if (await spool.find(waiting[0])).status is Status.SEND_AT:
                break
            await asyncio.sleep(0.01)
        assert (await spool.find(waiting[0])).status is Status.SEND_AT
        return {i: await spool.read_message(i) for i in [*frozen, *waiting]}


def write_config(tmp_path: Path, spool_dir: Path, dsn: str) -> Path:
    path = tmp_path / "smtpx.toml"
    path.write_text(
        f'[spool]\ndir = "{spool_dir}"\nfsync = "never"\n'
        f'[spool.postgresql]\ndsn = "{dsn}"\nnode = "n1"\n',
        encoding="utf-8",
    )
    return path


def test_a_queue_moves_to_postgresql_and_back(tmp_path: Path, pg_dsn: str) -> None:
    spool_dir = tmp_path / "spool"
    bodies = asyncio.run(fill(spool_dir))
    before = {m.id: (m.status, m.rcpt_params) for m in Spool.status_from_disk(spool_dir)}
    config = write_config(tmp_path, spool_dir, pg_dsn)
    runner = CliRunner()
    there = runner.invoke(main, ["spool", "migrate", "--to", "postgresql", "--config", str(config)])
    assert there.exit_code == 0, there.output
    assert "moved 3 messages" in there.output and "3 left the source" in there.output
    assert Spool.status_from_disk(spool_dir) == []
    again = runner.invoke(main, ["spool", "migrate", "--to", "postgresql", "--config", str(config)])
    assert "moved 0 messages" in again.output  # nothing left to move, nothing doubled

    async def in_postgresql() -> dict[str, tuple[Status, object, bytes]]:
        settings = PostgresSettings(dsn=pg_dsn, node="n1")
        cfg = SpoolConfig(directory=spool_dir, postgresql=settings, ping_interval=1e9)
        async with Spool(cfg, opener=MemoryNetwork(down={"mx.test"})) as spool:
            found: dict[str, tuple[Status, object, bytes]] = {}
            for entry in await spool.list_all():
                body = await spool.read_message(entry.id)
                found[entry.id] = (entry.status, entry.rcpt_params, body)
            return found

    moved = asyncio.run(in_postgresql())
    assert {i: (s, p) for i, (s, p, _) in moved.items()} == before
    assert {i: b for i, (_, _, b) in moved.items()} == bodies
    back = runner.invoke(main, ["spool", "migrate", "--to", "journal", "--config", str(config)])
    assert back.exit_code == 0 and "moved 3 messages" in back.output, back.output
    returned = {m.id: (m.status, m.rcpt_params) for m in Spool.status_from_disk(spool_dir)}
    assert returned == before


async def test_an_interrupted_migration_is_finished_by_a_second_run(
    tmp_path: Path, pg_dsn: str
) -> None:
    from smtpx.spool.pg.store import PgStore

    spool_dir = tmp_path / "spool"
    await fill(spool_dir)
    stats: dict[str, int] = {}
    journal = JournalStore(SpoolConfig(directory=spool_dir, fsync=FsyncPolicy.NEVER), stats)
    pg = PgStore(
        SpoolConfig(directory=spool_dir, postgresql=PostgresSettings(dsn=pg_dsn, node="n1")),
        stats,
        lambda: 0.0,
    )
    await journal.open()
    await pg.open()
    try:
        # Interrupted after the copy of one message, before any purge.
        (first, *_) = await journal.all()
        await pg.write([first], [await journal.read(first)])
        report = await migrate_queue(journal, pg)
        assert report.already_there == [first.id] and len(report.copied) == 2
        assert report.purged == 3 and await journal.all() == []
        assert len(await pg.all()) == 3
    finally:
        await pg.close()
        await journal.close()


@pytest.mark.parametrize("target", ["postgresql", "journal"])
def test_migrate_refuses_while_serve_holds_the_journal(
    tmp_path: Path, pg_dsn: str, target: str
) -> None:
    spool_dir = tmp_path / "spool"
    config = write_config(tmp_path, spool_dir, pg_dsn)

    async def holding() -> str:
        async with Spool(SpoolConfig(directory=spool_dir, fsync=FsyncPolicy.NEVER)):
            result = await asyncio.to_thread(
                CliRunner().invoke,
                main,
                ["spool", "migrate", "--to", target, "--config", str(config)],
            )
            return result.output

    assert "in use by another process" in asyncio.run(holding())

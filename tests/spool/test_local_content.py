"""Local delivery reads a stored message a chunk at a time: the same octets as a whole
read, damage found before the last chunk (nothing delivered), and memory that stays flat
whatever the message's size."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from pathlib import Path

import pytest

from smtpx.content import chunks_of
from smtpx.envelope import Envelope, HostPort
from smtpx.errors import ConnectionLost, ReplyTimeout
from smtpx.mta.lmtp import LmtpAgent
from smtpx.mta.local import MaildirAgent
from smtpx.spool.journal import BodyDamaged, Journal
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.records import StoredBody
from smtpx.spool.spool import Delivery, Local
from smtpx.testing import MemoryNetwork
from tests.spool.helpers import make_spool, settle, traced, virtual
from tests.spool.test_faults import rot

AWKWARD = b"Subject: dots\r\n\r\n.one\r\n..two\r\n\r\n.\r\nlast line\r\n"


def local_delivery(message: bytes, recipients: list[str]) -> Delivery:
    envelope = Envelope.create(sender="s@example.com", recipients=recipients, message=message)
    return Delivery(envelope, next_hops=())


def stored(directory: Path, entry: SpooledMessage) -> StoredBody:
    return StoredBody(Journal(directory).segment_path(entry.location.segment), entry.location)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 1 << 20])
def test_a_stored_body_reads_as_the_message_however_it_is_cut(tmp_path: Path, size: int) -> None:
    async def scenario() -> tuple[bytes, SpooledMessage]:
        async with make_spool(tmp_path, MemoryNetwork()) as spool:
            (mid,) = await spool.add([local_delivery(AWKWARD, ["a@example.org"])], frozen=True)
            return await spool.read_message(mid), spool.get(mid)

    whole, entry = virtual(scenario)
    assert whole.endswith(b"\r\n.one\r\n..two\r\n\r\n.\r\nlast line\r\n")
    chunks = list(stored(tmp_path, entry).chunks(size))
    assert b"".join(chunks) == whole
    assert max(map(len, chunks)) <= size + 1  # (+1: a CR held back at a cut)


def test_a_rotten_body_fails_before_its_last_chunk(tmp_path: Path) -> None:
    async def scenario() -> SpooledMessage:
        async with make_spool(tmp_path, MemoryNetwork()) as spool:
            (mid,) = await spool.add([local_delivery(AWKWARD, ["a@example.org"])], frozen=True)
            rot(tmp_path, spool.get(mid), at=len(AWKWARD) - 3)  # near the end
            return spool.get(mid)

    entry = virtual(scenario)
    got: list[bytes] = []
    with pytest.raises(BodyDamaged, match="checksum mismatch"):
        got.extend(stored(tmp_path, entry).chunks(8))
    read = b"".join(got)
    assert read.startswith(b"Subject: dots\r\n")  # it was read on...
    assert len(read) < len(AWKWARD)  # ...but the last chunk never came


def test_a_rotten_body_leaves_nothing_in_the_maildir(tmp_path: Path) -> None:
    agent = MaildirAgent(tmp_path / "mail", hostname="h")

    async def router(message: SpooledMessage) -> Local:
        return Local(agent)

    async def scenario() -> None:
        async with make_spool(tmp_path / "spool", MemoryNetwork(), router=router) as spool:
            message = local_delivery(AWKWARD * 3, ["a@example.org", "b@example.org"])
            (bad,) = await spool.add([message], frozen=True)
            rot(tmp_path / "spool", spool.get(bad), at=100)
            await spool.send([bad])
            await settle()
            assert spool.get(bad).status is Status.QUARANTINED

    virtual(scenario)
    left = [p for p in (tmp_path / "mail").rglob("*") if p.is_file()]
    assert left == []  # not in new/, and no half-written file in tmp/


def test_a_large_message_is_delivered_without_being_held_whole(tmp_path: Path) -> None:
    """16 MB to two maildirs: what Python allocates meanwhile stays at a few slices."""
    line = b"a line of the message that goes on for a while, then ends\r\n"
    content = b"Subject: large\r\n\r\n" + line * (16_000_000 // len(line))
    agent = MaildirAgent(tmp_path / "mail", hostname="h")

    async def router(message: SpooledMessage) -> Local:
        return Local(agent)

    async def scenario() -> int:
        async with make_spool(tmp_path / "spool", MemoryNetwork(), router=router) as spool:
            recipients = ["a@example.org", "b@example.org"]
            (mid,) = await spool.add([local_delivery(content, recipients)], frozen=True)
            with traced() as peak_now:
                await spool.send([mid])
                await settle()
                peak = peak_now()
            assert mid not in spool.messages  # delivered to both
            return peak

    peak = virtual(scenario)
    for user in ("a", "b"):
        (path,) = (tmp_path / "mail" / "example.org" / user / "new").iterdir()
        delivered = path.read_bytes()
        assert delivered.endswith(content.replace(b"\r\n", b"\n"))
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB allocated at the peak"  # whole: 30+


async def test_chunks_of_bytes_are_slices() -> None:
    assert list(chunks_of(b"abcdefg", 3)) == [b"abc", b"def", b"g"]
    assert list(chunks_of(b"", 3)) == []


def test_the_head_is_read_without_the_body(tmp_path: Path) -> None:
    """What selections and quarantine reasons read: the header section as received (a
    rotten body still has it), not the 3 MB after it."""
    head = b"From: a@example.com\r\nSubject: heads\r\n.X-Dot: stuffed\r\n\r\n"
    message = head + b".body line\r\n" * 300_000

    async def scenario() -> tuple[bytes, bytes, bytes, int]:
        async with make_spool(tmp_path, MemoryNetwork()) as spool:
            mid, rotten = await spool.add(
                [local_delivery(message, ["a@example.org"]), local_delivery(AWKWARD, ["b@x.org"])],
                frozen=True,
            )
            rot(tmp_path, spool.get(rotten), at=30)  # in the body
            with traced() as peak_now:
                read = await spool.store.head(spool.get(mid))
                peak = peak_now()
            return read, await spool.store.head(spool.get(rotten)), head, peak

    got, rotten_head, expected, peak = virtual(scenario)
    assert got == expected
    assert rotten_head == b"Subject: dots\r\n\r\n"
    assert peak < 1 << 20, f"{peak / 2**20:.1f} MiB allocated for the head"  # the body: 3


def test_a_large_body_is_checked_without_being_held(tmp_path: Path) -> None:
    """What the control plane shows of a message (its head, whether its body is sound)
    takes a chunk or two of memory, not the message."""
    content = b"Subject: big\r\n\r\n" + b"a line of the message\r\n" * (16_000_000 // 23)

    async def scenario() -> tuple[int, list[BodyDamaged | None]]:
        async with make_spool(tmp_path, MemoryNetwork()) as spool:
            sound, rotten = await spool.add(
                [local_delivery(content, ["a@example.org"]), local_delivery(AWKWARD, ["b@x.org"])],
                frozen=True,
            )
            rot(tmp_path, spool.get(rotten), at=30)
            with traced() as peak_now:
                head = await spool.store.head(spool.get(sound))
                found = [await spool.store.damage(spool.get(m)) for m in (sound, rotten)]
                peak = peak_now()
            assert head == b"Subject: big\r\n\r\n"
            return peak, found

    peak, (sound_damage, rotten_damage) = virtual(scenario)
    assert sound_damage is None
    assert isinstance(rotten_damage, BodyDamaged) and "checksum" in str(rotten_damage)
    assert peak < 4 << 20, f"{peak / 2**20:.1f} MiB allocated at the peak"


async def test_a_session_cut_off_mid_data_leaves_no_file_open(tmp_path: Path) -> None:
    """The LMTP server goes away while the content is sent: the agent raises, and the
    stored body's segment file (opened by its reader in a worker thread) is closed."""
    spool_dir = tmp_path / "spool"
    async with make_spool(spool_dir, MemoryNetwork()) as spool:
        big = local_delivery(b"Subject: big\r\n\r\n" + b"line\r\n" * 1_000_000, ["a@y.test"])
        (mid,) = await spool.add([big], frozen=True)
        entry = spool.get(mid)

        async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 lmtp.test\r\n")
            await reader.readline()  # LHLO
            writer.write(b"250-lmtp.test\r\n250 PIPELINING\r\n")
            for _ in range(3):  # MAIL, RCPT, DATA
                await reader.readline()
            writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
            await writer.drain()
            await reader.readexactly(100_000)  # some of the content, then gone
            writer.transport.abort()

        server = await asyncio.start_server(cut_off, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        agent = LmtpAgent(HostPort("127.0.0.1", port), "client.test", timeout=10)
        before = open_files(spool_dir)
        with pytest.raises((ConnectionError, ConnectionLost, ReplyTimeout, OSError)):
            async with spool.store.content(entry) as content:
                await agent.deliver(entry, content)
        server.close()
        await server.wait_closed()
        for _ in range(3):  # the abandoned reader's finalizer runs on the loop
            gc.collect()
            await asyncio.sleep(0)
        assert open_files(spool_dir) == before


def open_files(under: Path) -> list[str]:
    """This process's open files under ``under``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(under)):
                found.append(target)
    return sorted(found)

"""The spool under faults: a body that rotted on disk is never sent (remote, local, bounce,
compaction) but quarantined and reported; a disk that fills up on a real (small)
filesystem refuses intake with an error, then takes mail again, and every acknowledged
message is delivered once with its own bytes while no refused one ever is."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from smtpx.envelope import Envelope
from smtpx.protocol.replies import Reply
from smtpx.spool.fsck import check
from smtpx.spool.journal import RETRY_AFTER, FsyncPolicy, Journal, JournalWriteError
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.spool import Delivery, Hops, Local, Spool
from smtpx.testing import MemoryNetwork
from tests.conftest import grow, small_filesystem
from tests.spool.helpers import MX, delivery, make_spool, settle, virtual
from tests.spool.test_spool import refusing


def rot(directory: Path, message: SpooledMessage, at: int = 3) -> None:
    """Flip one bit inside the message's stored body."""
    path = Journal(directory).segment_path(message.location.segment)
    with open(path, "r+b") as file:
        file.seek(message.location.offset + at)
        octet = file.read(1)
        file.seek(message.location.offset + at)
        file.write(bytes([octet[0] ^ 0x01]))


def test_a_rotten_body_is_quarantined_not_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    network = MemoryNetwork()

    async def scenario() -> tuple[str, str]:
        async with make_spool(tmp_path, network) as spool:
            bad, good = await spool.add([delivery(1), delivery(2)], frozen=True)
            rot(tmp_path, spool.get(bad))
            with caplog.at_level(logging.ERROR, logger="smtpx.spool"):
                await spool.send([bad, good])
                await settle()
            entry = spool.get(bad)
            assert entry.status is Status.QUARANTINED
            assert entry.quarantine_reason is not None
            assert "checksum mismatch" in entry.quarantine_reason
            assert spool.stats["damaged_bodies"] == 1
            assert good not in spool.messages
            return bad, good

    bad, _ = virtual(scenario)
    (sent,) = network.received("mx.test")
    assert b"Subject: 2" in sent.data  # the sound one went; the rotten one never did
    assert bad in caplog.text and "quarantined" in caplog.text
    problems = check(tmp_path)
    assert [(p.kind, p.where) for p in problems] == [("bad-body", bad)]


class Maildrop:
    def __init__(self) -> None:
        self.delivered: list[bytes] = []

    async def deliver(self, message: SpooledMessage, content: bytes) -> list[tuple[str, Reply]]:
        self.delivered.append(content)
        return [(r, Reply.of(250, "ok")) for r in message.recipients]


def test_a_rotten_body_is_not_delivered_locally(tmp_path: Path) -> None:
    drop = Maildrop()

    async def router(message: SpooledMessage) -> Local:
        return Local(drop)

    async def scenario() -> None:
        async with make_spool(tmp_path, MemoryNetwork(), router=router) as spool:
            (bad,) = await spool.add([delivery(1, next_hops=())], frozen=True)
            rot(tmp_path, spool.get(bad))
            await spool.send([bad])
            await settle()
            assert spool.get(bad).status is Status.QUARANTINED

    virtual(scenario)
    assert drop.delivered == []


def test_a_rotten_body_is_not_bounced(tmp_path: Path) -> None:
    network = MemoryNetwork(default=refusing({"r1@example.org": 550}))

    async def router(message: SpooledMessage) -> Hops:
        return Hops((MX,), "mx")

    async def scenario() -> None:
        async with make_spool(tmp_path, network, router=router) as spool:
            (bad,) = await spool.add([delivery(1, next_hops=())], frozen=True)
            # Sent (the body is sound), refused; then the bounce finds it rotten.
            real_bounce = spool.notices.bounce

            async def rot_first(
                entry: SpooledMessage,
                failures: list[tuple[str, Reply]],
                remote: str | None,
                refused: dict[str, Reply],
            ) -> None:
                rot(tmp_path, entry)
                await real_bounce(entry, failures, remote, refused)

            spool.notices.bounce = rot_first  # type: ignore[method-assign]
            await spool.send([bad])
            await settle()
            assert spool.get(bad).status is Status.QUARANTINED
            assert len(spool.messages) == 1  # no bounce was spooled

    virtual(scenario)


def test_compaction_keeps_damage_detectable(tmp_path: Path) -> None:
    async def scenario() -> str:
        async with make_spool(tmp_path, MemoryNetwork(), segment_size=400) as spool:
            (bad,) = await spool.add([delivery(1)], frozen=True)
            await spool.add([delivery(n) for n in range(2, 6)], frozen=True)
            rot(tmp_path, spool.get(bad))
            old_segment = spool.get(bad).location.segment
            while spool.get(bad).location.segment == old_segment:
                await spool.compact()
            entry = spool.get(bad)
            assert entry.status is Status.QUARANTINED
            assert "checksum mismatch" in (entry.quarantine_reason or "")
            return bad

    bad = virtual(scenario)
    # The copy carries the original checksum: still found damaged, never laundered.
    assert ("bad-body", bad) in [(p.kind, p.where) for p in check(tmp_path)]


# -- a real full disk ----------------------------------------------------------------------


def numbered(n: int) -> Delivery:
    line = f"{n:06d} " * 10 + "\r\n"
    body = f"Message-ID: <{n}@full.test>\r\nSubject: {n}\r\n\r\n" + line * 70
    return Delivery(
        Envelope.create(sender="a@example.com", recipients=["b@example.org"], message=body),
        next_hops=(MX,),
    )


def test_a_full_disk_refuses_then_recovers_and_mixes_nothing(tmp_path: Path) -> None:
    network = MemoryNetwork(down={"mx.test"})
    acknowledged: dict[int, bytes] = {}
    refused: set[int] = set()

    async def offer(spool: Spool, numbers: range) -> None:
        results = await asyncio.gather(
            *(spool.add([numbered(n)]) for n in numbers), return_exceptions=True
        )
        for n, result in zip(numbers, results, strict=True):
            if isinstance(result, JournalWriteError):
                refused.add(n)
            elif isinstance(result, BaseException):
                raise result
            else:
                acknowledged[n] = numbered(n).envelope.message

    async def scenario(root: Path) -> None:
        async with make_spool(root, network, fsync=FsyncPolicy.BATCH, segment_size=20_000) as spool:
            for start in range(0, 120, 6):  # 4.9 KB each: the 96 KB filesystem fills
                await offer(spool, range(start, start + 6))
                await settle(RETRY_AFTER)
            assert refused and acknowledged, (len(refused), len(acknowledged))
            assert spool.journal.failing
            grow(root, "4m")  # space comes back
            await settle(RETRY_AFTER)
            await offer(spool, range(1000, 1012))
            assert set(range(1000, 1012)) <= set(acknowledged)
            network.down.clear()
            await spool.send()
            await settle(1)
            assert spool.messages == {}

    with small_filesystem(tmp_path / "small", "96k") as root:
        virtual(lambda: scenario(root))
        received: dict[int, list[bytes]] = {}
        for message in network.received("mx.test"):
            subject = message.data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
            received.setdefault(int(subject), []).append(message.data)
        # Every acknowledged message once, with its own bytes; nothing refused, ever.
        assert set(received) == set(acknowledged)
        for n, copies in received.items():
            assert copies == [acknowledged[n]], n
        # And after a restart nothing comes back.
        virtual(lambda: restart_is_empty(root))


async def restart_is_empty(root: Path) -> None:
    async with make_spool(root, MemoryNetwork()) as spool:
        assert spool.messages == {}
        assert [p for p in spool.problems if p.is_error] == []

"""fsck: a read-only check of a spool directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smtpx.spool.fsck import check
from smtpx.spool.journal import FsyncPolicy, Journal
from smtpx.spool.spool import Spool, SpoolConfig
from tests.spool.helpers import delivery


def spool_with(directory: Path, count: int, *, frozen: bool = False) -> list[str]:
    async def run() -> list[str]:
        async with Spool(SpoolConfig(directory=directory, fsync=FsyncPolicy.NEVER)) as spool:
            return await spool.add([delivery(n) for n in range(count)], frozen=frozen)

    return asyncio.run(run())


def test_a_sound_spool_has_no_problems(tmp_path: Path) -> None:
    spool_with(tmp_path, 3, frozen=True)
    assert check(tmp_path, verify_bodies=True) == []


def test_not_a_spool(tmp_path: Path) -> None:
    (problem,) = check(tmp_path / "nothing")
    assert problem.kind == "not-a-spool"


def test_damage_and_corrupt_files_and_strays(tmp_path: Path) -> None:
    spool_with(tmp_path, 2, frozen=True)
    segment = Journal(tmp_path).segment_path(1)
    segment.write_bytes(segment.read_bytes()[:-5])  # a torn tail
    (tmp_path / "journal" / "notes.txt").write_text("hello")
    found = check(tmp_path)
    assert sorted(p.kind for p in found) == ["damaged", "stray-file"]
    (damaged,) = [p for p in found if p.kind == "damaged"]
    assert damaged.where.startswith(f"{segment} offset ")
    assert "segment 1" not in damaged.description  # said once, in where
    spool_with(tmp_path, 0)  # a start moves the torn tail to corrupt/
    kinds = sorted(p.kind for p in check(tmp_path))
    assert kinds == ["corrupt-file", "stray-file"]


def test_a_body_that_rotted_is_found(tmp_path: Path) -> None:
    spool_with(tmp_path, 1, frozen=True)
    segment = Journal(tmp_path).segment_path(1)
    data = bytearray(segment.read_bytes())
    data[-4] ^= 0x20  # inside the body (the last record's last octets)
    segment.write_bytes(bytes(data))
    assert check(tmp_path, verify_bodies=False) == []  # replay reads metadata only
    (problem,) = check(tmp_path)
    assert problem.kind == "bad-body"


def test_old_frozen_and_overdue_messages(tmp_path: Path) -> None:
    (frozen,) = spool_with(tmp_path, 1, frozen=True)
    later = 10**10
    (problem,) = check(tmp_path, max_frozen_age=3600, now=later)
    assert problem.kind == "too-old" and problem.where == frozen
    assert check(tmp_path, max_frozen_age=3600) == []

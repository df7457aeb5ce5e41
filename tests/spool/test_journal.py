"""The journal: records, replay, torn tails cut at every octet, corruption, the lock."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.spool.journal import (
    HEADER,
    FsyncPolicy,
    Journal,
    Location,
    Record,
    RecordKind,
    SpoolLocked,
)


def message(n: int, body: bytes = b"") -> Record:
    return Record(RecordKind.MESSAGE, {"id": f"m{n}", "n": n}, body or f"body {n}\r\n".encode())


def write(directory: Path, records: list[Record], **kw: object) -> list[Location | None]:
    async def run() -> list[Location | None]:
        journal = Journal(directory, **kw)  # type: ignore[arg-type]
        journal.open()
        try:
            return await journal.append(records)
        finally:
            await journal.aclose()

    return asyncio.run(run())


def test_append_and_replay(tmp_path: Path) -> None:
    locations = write(tmp_path, [message(1), message(2, b"x" * 1000)])
    assert [loc.length for loc in locations if loc] == [8, 1000]
    journal = Journal(tmp_path)
    replay = journal.open()
    assert set(replay.messages) == {"m1", "m2"}
    meta, location = replay.messages["m2"]
    assert meta["n"] == 2 and location == locations[1]
    assert journal.read_body(location) == b"x" * 1000
    assert replay.problems == [] and replay.records == 2
    journal.close()


def test_updates_and_forgets_replay_in_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        [
            message(1),
            message(2),
            Record(RecordKind.UPDATE, {"id": "m1", "status": "frozen"}),
            Record(RecordKind.FORGET, {"id": "m2"}),
            Record(RecordKind.UPDATE, {"id": "m1", "status": "send_at", "at": 5}),
            Record(RecordKind.UPDATE, {"id": "unknown", "status": "x"}),
        ],
    )
    replay = Journal(tmp_path).replay_readonly()
    assert set(replay.messages) == {"m1"}
    meta, _ = replay.messages["m1"]
    assert (meta["status"], meta["at"], meta["n"]) == ("send_at", 5, 1)


def test_every_torn_tail_is_cut_and_kept(tmp_path: Path) -> None:
    """A crash can leave any prefix of the last (unacknowledged) record on disk. Whatever
    the cut, every whole record before it replays, and the cut bytes go to corrupt/."""
    base = tmp_path / "base"
    write(base, [message(1), message(2)])
    segment = Journal(base).segment_path(1)
    whole = segment.read_bytes()
    first_record_end = whole.index(b"body 1\r\n") + len(b"body 1\r\n")
    for cut in range(first_record_end, len(whole)):
        directory = tmp_path / f"cut{cut}"
        (directory / "journal").mkdir(parents=True)
        (directory / "journal" / segment.name).write_bytes(whole[:cut])
        journal = Journal(directory)
        replay = journal.open()
        expected = {"m1"} if cut < len(whole) else {"m1", "m2"}
        assert set(replay.messages) == expected, cut
        if cut > first_record_end:
            (problem,) = replay.problems
            assert problem.saved is not None
            assert Path(problem.saved).read_bytes() == whole[first_record_end:cut]
            assert "unacknowledged tail" in problem.description
        else:
            assert replay.problems == []
        # The segment now ends on a record boundary, and appends go on from there.
        assert (directory / "journal" / segment.name).stat().st_size == first_record_end
        journal.close()


def test_appends_after_a_repaired_tail_replay(tmp_path: Path) -> None:
    write(tmp_path, [message(1), message(2)])
    segment = Journal(tmp_path).segment_path(1)
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])
    write(tmp_path, [message(3)])
    replay = Journal(tmp_path).replay_readonly()
    assert set(replay.messages) == {"m1", "m3"}
    assert replay.problems == []


def test_a_flipped_bit_is_caught_by_the_checksum(tmp_path: Path) -> None:
    write(tmp_path, [message(1), message(2)])
    segment = Journal(tmp_path).segment_path(1)
    data = bytearray(segment.read_bytes())
    second = data.index(b"SXJ1", 4)
    data[second + HEADER.size + 2] ^= 0x01  # inside the second record's metadata
    segment.write_bytes(bytes(data))
    journal = Journal(tmp_path)
    replay = journal.open()
    assert set(replay.messages) == {"m1"}
    assert "checksum" in replay.problems[0].description
    journal.close()


def test_readonly_replay_repairs_nothing(tmp_path: Path) -> None:
    write(tmp_path, [message(1), message(2)])
    segment = Journal(tmp_path).segment_path(1)
    segment.write_bytes(segment.read_bytes()[:-3])
    size = segment.stat().st_size
    replay = Journal(tmp_path).replay_readonly()
    assert set(replay.messages) == {"m1"} and len(replay.problems) == 1
    assert segment.stat().st_size == size
    assert not (tmp_path / "corrupt").exists()


def test_segments_roll_and_replay_across_them(tmp_path: Path) -> None:
    async def run() -> Journal:
        journal = Journal(tmp_path, segment_size=100)
        journal.open()
        for n in range(6):
            await journal.append([message(n, b"y" * 60)])
        await journal.aclose()
        return journal

    journal = asyncio.run(run())
    assert len(journal.segment_numbers()) >= 3
    replay = Journal(tmp_path).replay_readonly()
    assert set(replay.messages) == {f"m{n}" for n in range(6)}


def test_the_lock(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    first.open()
    with pytest.raises(SpoolLocked, match=f"pid {os.getpid()}"):
        Journal(tmp_path).open()
    first.close()
    second = Journal(tmp_path)
    second.open()
    second.close()


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    async def run() -> tuple[int, int]:
        journal = Journal(tmp_path, fsync=FsyncPolicy.BATCH)
        journal.open()
        await asyncio.gather(*(journal.append([message(n)]) for n in range(50)))
        fsyncs = journal.fsyncs
        await journal.aclose()
        return fsyncs, journal.appended

    fsyncs, appended = asyncio.run(run())
    assert appended == 50
    assert fsyncs < 50  # waiting appends shared their fsync


def test_fsync_always_pays_per_append(tmp_path: Path) -> None:
    async def run() -> int:
        journal = Journal(tmp_path, fsync=FsyncPolicy.ALWAYS)
        journal.open()
        await asyncio.gather(*(journal.append([message(n)]) for n in range(10)))
        await journal.aclose()
        return journal.fsyncs

    assert asyncio.run(run()) == 10


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8))
@settings(max_examples=30, deadline=None)
def test_bodies_round_trip(bodies: list[bytes]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        records = [Record(RecordKind.MESSAGE, {"id": str(i)}, b) for i, b in enumerate(bodies)]
        locations = write(Path(directory), records, fsync=FsyncPolicy.NEVER)
        journal = Journal(directory)
        replay = journal.open()
        for i, body in enumerate(bodies):
            assert journal.read_body(replay.messages[str(i)][1]) == body
            assert replay.messages[str(i)][1] == locations[i]
        journal.close()

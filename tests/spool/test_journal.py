"""The journal: records, replay, torn tails cut at every octet, corruption and resync past
damage in the middle of the log, the lock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.envelope import Envelope
from smtpx.spool.journal import (
    GATHER_TURNS,
    HEADER,
    FsyncPolicy,
    Journal,
    Location,
    Record,
    RecordKind,
    SpoolLocked,
)
from smtpx.spool.records import NotCached
from smtpx.spool.spool import Delivery, Spool
from smtpx.spool.types import SpoolConfig
from smtpx.testing import LoopTurns


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


def test_segment_paths_and_pins(tmp_path: Path) -> None:
    """Each segment's own path, whichever was asked before (the last one is kept); a
    segment pinned twice stays pinned until unpinned twice."""
    journal = Journal(tmp_path)
    for number in (1, 2, 2, 1, 300):
        assert journal.segment_path(number) == tmp_path / "journal" / f"{number:08d}.sxj"
    journal.pin(7)
    with journal.pinned(7) as path:
        assert path == journal.segment_path(7) and journal.pins_sealed()
    assert journal.pins_sealed()
    journal.unpin(7)
    assert not journal.pins_sealed()


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


def test_appends_a_few_loop_turns_apart_share_one_group(tmp_path: Path) -> None:
    async def run(turns: int) -> int:
        journal = Journal(tmp_path / str(turns), fsync=FsyncPolicy.BATCH)
        journal.gather_turns = turns
        journal.gather_for = 60.0  # (turns only: a slow machine must not cut it short)
        journal.open()
        await journal.append([message(0)])  # (the segment is open: the fsync helper's path)
        before = journal.fsyncs

        async def late(n: int) -> None:
            for _ in range(n):
                await asyncio.sleep(0)
            await journal.append([message(n + 1)])

        await asyncio.gather(*(late(n) for n in range(6)))
        fsyncs = journal.fsyncs - before
        await journal.aclose()
        return fsyncs

    assert asyncio.run(run(GATHER_TURNS)) == 1  # the last came five turns after the first
    assert asyncio.run(run(0)) > 1


def test_a_group_is_gathered_for_its_turns_or_its_time_whichever_ends_first(
    tmp_path: Path,
) -> None:
    async def turns_taken(gather_for: float) -> int:
        journal = Journal(tmp_path, fsync=FsyncPolicy.BATCH)
        journal.gather_for = gather_for
        async with LoopTurns() as turns:
            await journal._gather()
        return turns.count

    assert asyncio.run(turns_taken(60.0)) == GATHER_TURNS
    assert asyncio.run(turns_taken(0.0)) == 1  # the time was up after the first turn
    assert Journal(tmp_path, fsync=FsyncPolicy.ALWAYS).gather_turns == 0


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


# -- damage in the middle of the log: replay resynchronises on the next whole record ----


def record_offsets(data: bytes) -> list[int]:
    """Where each record of a sound segment starts."""
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        _, _, _, _, meta_len, body_len, _, _ = HEADER.unpack_from(data, offset)
        offset += HEADER.size + meta_len + body_len
    return offsets


def two_segments(directory: Path, first: list[Record], second: list[Record]) -> None:
    """``first`` in segment 1 (sealed), ``second`` in segment 2 (the last)."""

    async def run() -> None:
        journal = Journal(directory, fsync=FsyncPolicy.NEVER, segment_size=1)
        journal.open()
        await journal.append(first)
        await journal.append(second)  # segment 1 is over its size: this rolls
        await journal.aclose()

    asyncio.run(run())
    assert Journal(directory).segment_numbers() == [1, 2]


def ids(*numbers: int) -> set[str]:
    return {f"m{n}" for n in numbers}


def damaged_files(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "corrupt").glob("*.damaged"))


def test_damaged_metadata_in_a_sealed_segment_costs_one_record(tmp_path: Path) -> None:
    two_segments(tmp_path, [message(n) for n in range(1, 6)], [message(6)])
    segment = Journal(tmp_path).segment_path(1)
    data = bytearray(segment.read_bytes())
    offsets = record_offsets(bytes(data))
    data[offsets[1] + HEADER.size + 3] ^= 0x40  # inside record 2's metadata
    segment.write_bytes(bytes(data))

    journal = Journal(tmp_path)
    replay = journal.open()
    assert set(replay.messages) == ids(1, 3, 4, 5, 6)
    assert replay.records == 5
    (problem,) = replay.problems
    assert (problem.segment, problem.offset) == (1, offsets[1])
    assert "metadata checksum mismatch" in problem.description
    assert f"segment 1 offset {offsets[1]}" in problem.description
    assert f"resumed at offset {offsets[2]}" in problem.description
    saved = tmp_path / "corrupt" / f"00000001.sxj-{offsets[1]}.damaged"
    assert problem.saved == str(saved)
    assert saved.read_bytes() == data[offsets[1] : offsets[2]]
    assert segment.read_bytes() == data  # a sealed segment is never cut
    # The records after the damage are read where they are.
    for n in (3, 4, 5):
        assert journal.read_body(replay.messages[f"m{n}"][1]) == f"body {n}\r\n".encode()

    async def append_more() -> None:
        await journal.append([message(7)])
        await journal.aclose()

    asyncio.run(append_more())
    journal = Journal(tmp_path)
    replay = journal.open()
    assert set(replay.messages) == ids(1, 3, 4, 5, 6, 7)
    assert journal.read_body(replay.messages["m7"][1]) == b"body 7\r\n"
    assert len(replay.problems) == 1
    journal.close()


def corrupt_magic(data: bytearray, at: int) -> None:
    data[at] ^= 0xFF


def corrupt_kind(data: bytearray, at: int) -> None:
    data[at + 4] = 9


def corrupt_meta_length(data: bytearray, at: int) -> None:
    data[at + 11] = 0x7F  # about 2 GiB of metadata: longer than the segment


def corrupt_body_length(data: bytearray, at: int) -> None:
    data[at + 15] = 0x7F


def corrupt_meta_crc(data: bytearray, at: int) -> None:
    data[at + 16] ^= 0x01


def shorten_body_length(data: bytearray, at: int) -> None:
    # Still inside the segment, so only the header check can tell (version 1 records
    # would have their end misplaced and swallow the next ones).
    data[at + 12] ^= 0x01


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (corrupt_magic, "not a record header"),
        (corrupt_kind, "not a record header"),
        (corrupt_meta_length, "header checksum mismatch"),
        (corrupt_body_length, "header checksum mismatch"),
        (corrupt_meta_crc, "header checksum mismatch"),
        (shorten_body_length, "header checksum mismatch"),
    ],
)
def test_damage_in_the_middle_of_the_last_segment_is_not_a_torn_tail(
    tmp_path: Path, corrupt: Callable[[bytearray, int], None], reason: str
) -> None:
    write(tmp_path, [message(n) for n in range(1, 6)])
    segment = Journal(tmp_path).segment_path(1)
    data = bytearray(segment.read_bytes())
    offsets = record_offsets(bytes(data))
    corrupt(data, offsets[2])  # record 3 of 5
    segment.write_bytes(bytes(data))

    journal = Journal(tmp_path)
    replay = journal.open()
    assert set(replay.messages) == ids(1, 2, 4, 5)
    (problem,) = replay.problems
    assert problem.offset == offsets[2] and reason in problem.description
    assert "unacknowledged tail" not in problem.description
    assert segment.read_bytes() == data  # records 4 and 5 were not cut off
    assert damaged_files(tmp_path) == [f"00000001.sxj-{offsets[2]}.damaged"]
    journal.close()

    write(tmp_path, [message(6)])
    replay = Journal(tmp_path).replay_readonly()
    assert set(replay.messages) == ids(1, 2, 4, 5, 6)


def test_a_damaged_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    write(tmp_path, [message(n) for n in range(1, 6)])
    segment = Journal(tmp_path).segment_path(1)
    data = bytearray(segment.read_bytes())
    offsets = record_offsets(bytes(data))
    data[offsets[4] + HEADER.size + 1] ^= 0x02  # record 5's metadata
    segment.write_bytes(bytes(data))

    journal = Journal(tmp_path)
    replay = journal.open()
    assert set(replay.messages) == ids(1, 2, 3, 4)
    (problem,) = replay.problems
    assert problem.offset == offsets[4]
    assert "unacknowledged tail" in problem.description
    assert problem.saved is not None
    assert Path(problem.saved).read_bytes() == data[offsets[4] :]
    assert segment.stat().st_size == offsets[4]  # cut at the damage
    assert damaged_files(tmp_path) == []
    journal.close()

    write(tmp_path, [message(6)])
    journal = Journal(tmp_path)
    replay = journal.open()  # a restart
    assert set(replay.messages) == ids(1, 2, 3, 4, 6)
    assert replay.problems == []
    assert journal.read_body(replay.messages["m6"][1]) == b"body 6\r\n"
    journal.close()


GARBAGE = (
    b"\x00" * 17
    + b"SXJ1"  # a stray magic with nothing sound after it
    + HEADER.pack(b"SXJ1", 1, 1, 0, 4, 0, 0xDEAD, 0)  # a header whose metadata fails
    + b'{"id":"fake"}'
    + b"SXJ"  # a magic cut short, right before the next record
)


def test_garbage_between_records_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, [message(n) for n in range(1, 6)])
    segment = Journal(tmp_path).segment_path(1)
    data = segment.read_bytes()
    offsets = record_offsets(data)
    segment.write_bytes(data[: offsets[2]] + GARBAGE + data[offsets[2] :])

    journal = Journal(tmp_path)
    replay = journal.open()
    assert set(replay.messages) == ids(1, 2, 3, 4, 5)
    assert replay.records == 5
    (problem,) = replay.problems
    assert problem.offset == offsets[2]
    assert "not a record header" in problem.description
    assert problem.saved is not None and Path(problem.saved).read_bytes() == GARBAGE
    location = replay.messages["m3"][1]
    assert location.offset == offsets[2] + len(GARBAGE) + HEADER.size + 17
    assert journal.read_body(location) == b"body 3\r\n"
    journal.close()


def test_replay_after_replay_keeps_one_copy_of_the_damage(tmp_path: Path) -> None:
    two_segments(tmp_path, [message(n) for n in range(1, 6)], [message(6)])
    segment = Journal(tmp_path).segment_path(1)
    data = bytearray(segment.read_bytes())
    offsets = record_offsets(bytes(data))
    data[offsets[1] + HEADER.size] ^= 0x01
    segment.write_bytes(bytes(data))
    name = f"00000001.sxj-{offsets[1]}.damaged"

    descriptions = []
    for _ in range(3):
        journal = Journal(tmp_path)
        replay = journal.open()
        assert set(replay.messages) == ids(1, 3, 4, 5, 6)
        (problem,) = replay.problems
        descriptions.append(problem.description)
        assert problem.saved == str(tmp_path / "corrupt" / name)
        journal.close()
    assert sorted(p.name for p in (tmp_path / "corrupt").iterdir()) == [name]
    assert (tmp_path / "corrupt" / name).read_bytes() == data[offsets[1] : offsets[2]]
    assert "; kept in" in descriptions[0]
    assert all("already kept in" in d for d in descriptions[1:])


def test_damage_to_the_end_of_a_sealed_segment_is_kept_once_and_not_cut(tmp_path: Path) -> None:
    two_segments(tmp_path, [message(n) for n in range(1, 4)], [message(4)])
    segment = Journal(tmp_path).segment_path(1)
    data = bytearray(segment.read_bytes())
    offsets = record_offsets(bytes(data))
    data[offsets[2] + HEADER.size] ^= 0x01  # the sealed segment's last record
    segment.write_bytes(bytes(data))
    for _ in range(2):
        journal = Journal(tmp_path)
        replay = journal.open()
        assert set(replay.messages) == ids(1, 2, 4)
        (problem,) = replay.problems
        assert "nothing readable follows" in problem.description
        assert "unacknowledged tail" not in problem.description
        journal.close()
    assert segment.read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "corrupt").iterdir()) == [
        f"00000001.sxj-{offsets[2]}.damaged"
    ]


def test_a_false_magic_in_a_damaged_records_body_does_not_fool_resync(tmp_path: Path) -> None:
    """Resync stops only where a metadata checksum holds, so a body that looks like the
    start of a record (here: record 2's, whose own header is damaged) is passed over."""
    fake = HEADER.pack(b"SXJ1", 1, 1, 0, 13, 0, 12345, 0) + b'{"id":"fake"}'
    body = b"SXJ1SXJ1" + fake + b"\r\nSXJ1 again\r\n"
    two_segments(tmp_path, [message(1), message(2, body), message(3)], [message(4)])
    segment = Journal(tmp_path).segment_path(1)
    data = bytearray(segment.read_bytes())
    offsets = record_offsets(bytes(data))
    assert data.count(b"SXJ1") == 3 + 4
    data[offsets[1]] ^= 0xFF  # record 2's magic
    segment.write_bytes(bytes(data))

    replay = Journal(tmp_path).replay_readonly()
    assert set(replay.messages) == ids(1, 3, 4)
    assert replay.records == 3
    (problem,) = replay.problems
    assert problem.offset == offsets[1] and f"resumed at offset {offsets[2]}" in problem.description
    assert not (tmp_path / "corrupt").exists()  # read-only: nothing copied

    journal = Journal(tmp_path)
    replay = journal.open()
    assert set(replay.messages) == ids(1, 3, 4)
    assert replay.problems[0].saved is not None
    assert Path(replay.problems[0].saved).read_bytes() == data[offsets[1] : offsets[2]]
    journal.close()


def test_every_damaged_octet_of_a_records_magic_and_metadata(tmp_path: Path) -> None:
    """Whichever octet of record 2's magic, lengths, metadata checksum or metadata is
    damaged, exactly record 2 is lost and everything after it replays."""
    base = tmp_path / "base"
    two_segments(base, [message(n) for n in range(1, 6)], [message(6)])
    whole = Journal(base).segment_path(1).read_bytes()
    last = Journal(base).segment_path(2).read_bytes()
    offsets = record_offsets(whole)
    meta_end = whole.index(b"body 2\r\n", offsets[1]) - offsets[1]
    covered = [*range(4), *range(8, 12), *range(16, 20), *range(HEADER.size, meta_end)]
    assert len(covered) == 12 + len(b'{"id":"m2","n":2}')
    for relative in covered:
        at = offsets[1] + relative
        data = bytearray(whole)
        data[at] ^= 0xFF
        directory = tmp_path / f"at{at}"
        (directory / "journal").mkdir(parents=True)
        (directory / "journal" / "00000001.sxj").write_bytes(bytes(data))
        (directory / "journal" / "00000002.sxj").write_bytes(last)
        journal = Journal(directory)
        replay = journal.open()
        assert set(replay.messages) == ids(1, 3, 4, 5, 6), at
        (problem,) = replay.problems
        assert (problem.segment, problem.offset) == (1, offsets[1]), at
        assert problem.saved is not None
        assert Path(problem.saved).read_bytes() == data[offsets[1] : offsets[2]], at
        journal.close()


@given(
    st.lists(
        st.one_of(st.binary(max_size=40), st.just(b"SXJ1"), st.just(b"SXJ1\x01\x01")),
        min_size=1,
        max_size=10,
    ).map(b"".join),
    st.sampled_from([5, 8, 64, 4096]),
)
@settings(max_examples=60, deadline=None)
def test_any_garbage_between_records_with_any_scan_chunk(garbage: bytes, chunk: int) -> None:
    """The scan for the next record reads in chunks; a magic that straddles two chunks
    (here: chunks as small as 5 octets) is still found."""
    import tempfile

    from smtpx.spool import records as records_module

    with tempfile.TemporaryDirectory() as name, patch.object(records_module, "CHUNK", chunk):
        directory = Path(name)
        write(directory, [message(n) for n in range(1, 6)], fsync=FsyncPolicy.NEVER)
        segment = Journal(directory).segment_path(1)
        data = segment.read_bytes()
        offsets = record_offsets(data)
        segment.write_bytes(data[: offsets[3]] + garbage + data[offsets[3] :])
        replay = Journal(directory).replay_readonly()
        assert set(replay.messages) == ids(1, 2, 3, 4, 5)
        if garbage:
            (problem,) = replay.problems
            assert problem.offset == offsets[3]
            assert f"resumed at offset {offsets[3] + len(garbage)}" in problem.description


def test_version_1_records_without_a_header_check_still_load(tmp_path: Path) -> None:
    from smtpx.spool.journal import encode_record

    write(tmp_path, [message(1)])
    segment = Journal(tmp_path).segment_path(1)
    data, _ = encode_record(message(2))
    old = bytearray(data)
    old[5] = 1  # version 1
    old[6:8] = b"\0\0"  # which had no header check
    with open(segment, "ab") as file:
        file.write(bytes(old))
    replay = Journal(tmp_path).replay_readonly()
    assert set(replay.messages) == ids(1, 2) and not replay.problems


def test_metadata_with_a_remote_replys_undecodable_octets_reads_back(tmp_path: Path) -> None:
    # A reply with non-UTF-8 octets is kept as text with lone surrogates (surrogateescape);
    # such metadata must be written, and read back exactly.
    from smtpx.protocol.replies import Reply

    text = str(Reply.parse(b"550 bad \xff reply\r\n"))
    write(tmp_path, [message(1), Record(RecordKind.UPDATE, {"id": "m1", "failed": [text]})])
    replay = Journal(tmp_path).replay_readonly()
    assert replay.messages["m1"][0]["failed"] == [text] and replay.problems == []


def evict(path: Path) -> None:
    """Drop the file's clean pages from the page cache (as memory pressure would)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no RWF_NOWAIT here")
def test_a_cached_only_check_reads_the_page_cache_and_never_waits_for_the_disk(
    tmp_path: Path,
) -> None:
    bodies = [bytes([65 + n]) * 5000 for n in range(3)]
    found = write(tmp_path, [message(n, body) for n, body in enumerate(bodies)])
    locations = [location for location in found if location is not None]
    journal = Journal(tmp_path)
    segment = journal.segment_path(locations[0].segment)
    assert journal.check_bodies(locations, cached_only=True) == [None] * 3  # just written
    with open(segment, "r+b") as file:  # a flipped bit, through the cache
        file.seek(locations[1].offset + 10)
        file.write(b"!")
    damage = journal.check_bodies(locations, cached_only=True)
    assert damage[0] is None and damage[2] is None
    assert damage[1] is not None and "checksum mismatch" in str(damage[1])
    evict(segment)
    with pytest.raises(NotCached):
        journal.check_bodies(locations, cached_only=True)
    # The ordinary check reads the disk and finds the same.
    assert [d is None for d in journal.check_bodies(locations)] == [True, False, True]


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no RWF_NOWAIT here")
def test_the_spool_checks_cached_bodies_on_the_loop_and_others_in_a_thread(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[int, int, list[bool]]:
        config = SpoolConfig(directory=tmp_path, fsync=FsyncPolicy.BATCH)
        async with Spool(config) as spool:
            text = "Subject: t\r\n\r\n" + "x" * 4000 + "\r\n"
            to = ["b@example.org"]
            envelopes = [
                Envelope.create(sender="a@example.com", recipients=to, message=text)
                for _ in range(4)
            ]
            ids = await spool.add([Delivery(e) for e in envelopes], frozen=True)
            entries = [spool.get(i) for i in ids]
            loop = asyncio.get_running_loop()
            submitted = []
            original = loop.run_in_executor

            def counting(executor: Any, func: Any, *args: Any) -> Any:
                submitted.append(func)
                return original(executor, func, *args)

            loop.run_in_executor = counting  # type: ignore[method-assign,assignment]
            assert await spool.store.check(entries) == [None] * 4
            cached = len(submitted)
            evict(spool.journal.segment_path(entries[0].location.segment))
            sound = [d is None for d in await spool.store.check(entries)]
            return cached, len(submitted), sound

    cached, after_eviction, sound = asyncio.run(scenario())
    assert (cached, after_eviction, sound) == (0, 1, [True] * 4)

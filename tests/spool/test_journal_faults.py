"""The journal under disk faults (injected at the system-call layer, so on every platform):
a failed write or fsync leaves no trace, a failed fsync is never retried on the same file,
and missing, truncated or void parts of the journal are told apart from compaction."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpx.spool.journal import (
    RETRY_AFTER,
    DiskOps,
    FsyncPolicy,
    Journal,
    JournalUnavailable,
    JournalWriteError,
    Location,
    Record,
    RecordKind,
    Replay,
)
from smtpx.spool.manifest import Manifest
from smtpx.testing import run_virtual


def message(n: int, size: int = 40) -> Record:
    body = (f"body {n} " * size).encode()[:size] + b"\r\n"
    return Record(RecordKind.MESSAGE, {"id": f"m{n}"}, body)


def update(n: int, state: str) -> Record:
    return Record(RecordKind.UPDATE, {"id": f"m{n}", "state": state})


class Faulty(DiskOps):
    """Fails the next call of the named operation(s), once each."""

    def __init__(self) -> None:
        self.fail: dict[str, OSError] = {}
        self.partial = False  # a failing write writes half of its data first
        self.synced: list[int] = []  # the inodes of the files fdatasync was called on

    def write(self, fd: int, data: memoryview) -> int:
        if (error := self.fail.pop("write", None)) is not None:
            if self.partial:
                super().write(fd, data[: len(data) // 2])
            raise error
        return super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        self.synced.append(os.fstat(fd).st_ino)
        if (error := self.fail.pop("fdatasync", None)) is not None:
            raise error
        super().fdatasync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        if (error := self.fail.pop("ftruncate", None)) is not None:
            raise error
        super().ftruncate(fd, length)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        if (error := self.fail.pop("pwrite", None)) is not None:
            raise error
        return super().pwrite(fd, data, offset)

    def store_manifest(self, directory: Path, manifest: Manifest, *, sync: bool) -> None:
        if (error := self.fail.pop("store_manifest", None)) is not None:
            raise error
        super().store_manifest(directory, manifest, sync=sync)


ENOSPC = OSError(errno.ENOSPC, "No space left on device")
EIO = OSError(errno.EIO, "Input/output error")


def reopen(directory: Path) -> Replay:
    journal = Journal(directory)
    try:
        return journal.open()
    finally:
        journal.close()


async def wait_out_the_refusal() -> None:
    await asyncio.sleep(RETRY_AFTER)


def test_a_partial_write_that_fails_leaves_no_trace(tmp_path: Path) -> None:
    ops = Faulty()

    async def scenario() -> list[Location | None]:
        journal = Journal(tmp_path, ops=ops)
        journal.open()
        await journal.append([message(1)])
        ops.fail["write"], ops.partial = ENOSPC, True
        with pytest.raises(JournalWriteError, match="No space left"):
            await journal.append([message(2), message(3)])
        assert journal.failing and journal.write_errors == 1
        # At once after a failure: refused without touching the disk.
        with pytest.raises(JournalUnavailable):
            await journal.append([message(4)])
        await wait_out_the_refusal()
        (location,) = await journal.append([message(5)])
        assert not journal.failing
        assert location is not None
        assert journal.read_body(location) == message(5).body  # its own bytes, its offset
        await journal.aclose()
        return [location]

    (location,) = run_virtual(scenario())
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m1", "m5"}
    assert replay.messages["m5"][1] == location
    assert replay.problems == []


@pytest.mark.parametrize("truncate_fails", [False, True], ids=["cut", "void"])
def test_a_failed_fsync_seals_the_segment_and_is_never_retried_there(
    tmp_path: Path, truncate_fails: bool
) -> None:
    ops = Faulty()

    async def scenario() -> Location | None:
        journal = Journal(tmp_path, ops=ops)
        journal.open()
        await journal.append([message(1)])
        first_file = ops.synced[-1]
        ops.fail["fdatasync"] = EIO
        if truncate_fails:
            ops.fail["ftruncate"] = EIO
        with pytest.raises(JournalWriteError, match="fsync failed on segment 1"):
            await journal.append([message(2)])
        assert journal.fsync_errors == 1
        await wait_out_the_refusal()
        (location,) = await journal.append([message(3)])
        await journal.aclose()
        # The failed fsync's file was never synced again.
        assert ops.synced.count(first_file) == 2
        return location

    location = run_virtual(scenario())
    assert location is not None and location.segment == 2
    manifest = json.loads((tmp_path / "journal" / "manifest.json").read_bytes())
    assert manifest["current"] == 2 and "1" in manifest["sealed"]
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m1", "m3"}  # the group that failed never comes back
    kinds = [p.kind for p in replay.problems]
    assert kinds == (["void"] if truncate_fails else [])
    if truncate_fails:
        (void,) = replay.problems
        assert void.saved is not None and Path(void.saved).exists()
        assert not void.is_error
        assert reopen(tmp_path).problems == []  # cut off, once


def test_a_manifest_that_cannot_be_written_refuses_the_roll_then_recovers(
    tmp_path: Path,
) -> None:
    ops = Faulty()

    async def scenario() -> None:
        journal = Journal(tmp_path, ops=ops, segment_size=50)
        journal.open()
        await journal.append([message(1)])  # fills segment 1 past its size
        ops.fail["store_manifest"] = ENOSPC
        with pytest.raises(JournalWriteError, match="opening a new segment"):
            await journal.append([message(2)])
        await wait_out_the_refusal()
        await journal.append([message(3)])
        await journal.aclose()

    run_virtual(scenario())
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m1", "m3"}
    assert replay.problems == []


def small_segments(directory: Path, records: list[list[Record]]) -> list[int]:
    """Append each group (one segment each: they are bigger than the segment size);
    the segment numbers used."""

    async def run() -> list[int]:
        journal = Journal(directory, fsync=FsyncPolicy.NEVER, segment_size=64)
        journal.open()
        for group in records:
            await journal.append(group)
        numbers = journal.segment_numbers()
        await journal.aclose()
        return numbers

    return asyncio.run(run())


def test_a_missing_segment_is_reported_with_the_messages_it_can_tell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    numbers = small_segments(
        tmp_path, [[message(1)], [message(2)], [message(3)], [update(2, "frozen")]]
    )
    assert numbers == [1, 2, 3, 4]
    Journal(tmp_path).segment_path(2).unlink()
    with caplog.at_level(logging.ERROR, logger="smtpx.spool"):
        replay = reopen(tmp_path)
    missing, lost = replay.problems
    assert (missing.kind, missing.segment) == ("missing-segment", 2)
    assert lost.kind == "lost-records" and lost.ids == ("m2",)
    assert missing.is_error and lost.is_error
    assert "segment 2 is missing" in caplog.text and "m2" in caplog.text
    # Reported again at every start (and by a read-only replay), never forgotten.
    assert [p.kind for p in reopen(tmp_path).problems] == ["missing-segment", "lost-records"]
    readonly = Journal(tmp_path).replay_readonly()
    assert [p.kind for p in readonly.problems] == ["missing-segment", "lost-records"]


def test_a_missing_newest_segment_is_reported_and_appends_go_on_elsewhere(
    tmp_path: Path,
) -> None:
    small_segments(tmp_path, [[message(1)], [message(2)]])
    Journal(tmp_path).segment_path(2).unlink()
    replay = reopen(tmp_path)
    assert [p.kind for p in replay.problems] == ["missing-segment"]
    assert set(replay.messages) == {"m1"}
    small_segments(tmp_path, [[message(3)]])
    assert 2 not in Journal(tmp_path).segment_numbers()  # never re-created to hide the loss
    again = reopen(tmp_path)
    assert set(again.messages) == {"m1", "m3"}
    assert [p.segment for p in again.problems] == [2]


def test_a_truncated_sealed_segment_is_reported(tmp_path: Path) -> None:
    small_segments(tmp_path, [[message(1), message(2)], [message(3)]])
    segment = Journal(tmp_path).segment_path(1)
    segment.write_bytes(segment.read_bytes()[:-30])
    replay = reopen(tmp_path)
    kinds = [p.kind for p in replay.problems]
    assert kinds[0] == "truncated-segment" and replay.problems[0].is_error
    assert "damaged" in kinds  # the record cut short, kept in corrupt/
    assert set(replay.messages) == {"m1", "m3"}


def test_compaction_is_not_loss(tmp_path: Path) -> None:
    async def run() -> None:
        journal = Journal(tmp_path, fsync=FsyncPolicy.NEVER, segment_size=64)
        journal.open()
        for n in range(1, 4):
            await journal.append([message(n)])
        await journal.append([Record(RecordKind.FORGET, {"id": f"m{n}"}) for n in (1, 2)])
        journal.delete_segments(journal.removable_segments({3}))
        await journal.aclose()

    asyncio.run(run())
    assert Journal(tmp_path).segment_numbers()[0] == 3
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m3"} and replay.problems == []


def test_a_spool_from_before_manifests_gets_one_and_gaps_are_loss(tmp_path: Path) -> None:
    small_segments(tmp_path, [[message(1)], [message(2)], [message(3)]])
    (tmp_path / "journal" / "manifest.json").unlink()
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m1", "m2", "m3"} and replay.problems == []
    assert (tmp_path / "journal" / "manifest.json").exists()
    (tmp_path / "journal" / "manifest.json").unlink()
    Journal(tmp_path).segment_path(2).unlink()
    assert [p.kind for p in reopen(tmp_path).problems] == ["missing-segment"]


def test_an_unreadable_manifest_is_reported_and_rebuilt(tmp_path: Path) -> None:
    small_segments(tmp_path, [[message(1)], [message(2)]])
    (tmp_path / "journal" / "manifest.json").write_bytes(b"{not json")
    replay = reopen(tmp_path)
    assert [p.kind for p in replay.problems] == ["manifest"]
    assert set(replay.messages) == {"m1", "m2"}
    assert reopen(tmp_path).problems == []


def test_a_segment_created_just_before_a_crash_is_adopted(tmp_path: Path) -> None:
    small_segments(tmp_path, [[message(1)], [message(2)]])
    manifest = tmp_path / "journal" / "manifest.json"
    before = manifest.read_bytes()
    small_segments(tmp_path, [[message(3)]])  # opens segment 3 and records it
    manifest.write_bytes(before)  # as if the crash came before the manifest said so
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m1", "m2", "m3"} and replay.problems == []


def test_segments_below_first_are_dead_and_removed(tmp_path: Path) -> None:
    small_segments(tmp_path, [[message(1)], [message(2)]])
    manifest = tmp_path / "journal" / "manifest.json"
    data = json.loads(manifest.read_bytes())
    data["first"] = 2
    data["sealed"].pop("1", None)
    manifest.write_text(json.dumps(data))  # recorded gone, crash before the unlink
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m2"} and replay.problems == []
    assert 1 not in Journal(tmp_path).segment_numbers()


class Chunks:
    """A streamed body (as a spilled message gives the journal)."""

    def __init__(self, *parts: bytes) -> None:
        self.parts = parts

    def wire_chunks(self) -> Iterator[bytes]:
        yield from self.parts


def streamed(n: int, *parts: bytes) -> Record:
    return Record(RecordKind.MESSAGE, {"id": f"m{n}"}, stream=Chunks(*parts))


def test_a_streamed_body_is_written_in_one_pass_and_reads_back(tmp_path: Path) -> None:
    async def scenario() -> list[Location | None]:
        journal = Journal(tmp_path)
        journal.open()
        locations = await journal.append(
            [message(1), streamed(2, b"a" * 5000, b"b\r\n"), message(3)]
        )
        await journal.aclose()
        return locations

    first, big, third = asyncio.run(scenario())
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m1", "m2", "m3"} and replay.problems == []
    assert replay.messages["m2"][1] == big and big is not None
    assert Journal(tmp_path).read_body(big) == b"a" * 5000 + b"b\r\n"
    assert replay.messages["m3"][1] == third and first is not None


def test_a_streamed_body_that_fails_leaves_no_trace(tmp_path: Path) -> None:
    ops = Faulty()

    async def scenario() -> None:
        journal = Journal(tmp_path, ops=ops)
        journal.open()
        await journal.append([message(1)])
        ops.fail["pwrite"] = EIO
        with pytest.raises(JournalWriteError):
            await journal.append([streamed(2, b"x" * 3000)])
        await wait_out_the_refusal()
        await journal.append([message(3)])
        await journal.aclose()

    run_virtual(scenario())
    replay = reopen(tmp_path)
    assert set(replay.messages) == {"m1", "m3"} and replay.problems == []

"""The journal's fsync helper process (smtpx.spool.syncer): group commits written on the
loop and synced by a real helper; its real errors, its death and the cases that keep to
the worker thread."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time
from pathlib import Path

import pytest

from smtpx.spool.journal import (
    DiskOps,
    FsyncPolicy,
    Journal,
    JournalWriteError,
    Record,
    RecordKind,
)
from smtpx.spool.syncer import FsyncHelper, HelperGone, helper_supported
from smtpx.testing import run_virtual
from tests.conftest import grow, proc_stat, small_filesystem

pytestmark = pytest.mark.skipif(not helper_supported(), reason="no SCM_RIGHTS here")


def message(n: int, size: int = 200) -> Record:
    return Record(RecordKind.MESSAGE, {"id": f"m{n}"}, (f"{n:05d} " * size).encode()[:size])


def replayed(directory: Path) -> set[str]:
    journal = Journal(directory)
    try:
        return set(journal.open().messages)
    finally:
        journal.close()


async def helped_journal(directory: Path) -> tuple[Journal, FsyncHelper]:
    """A journal (group commit) that has appended m1, and the helper that synced it."""
    journal = Journal(directory, fsync=FsyncPolicy.BATCH)
    journal.open()
    await journal.append([message(1)])
    helper = journal._fsync_helper
    assert helper is not None
    return journal, helper


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, f"helper {pid} still alive"
        time.sleep(0.01)


def test_the_helper_syncs_a_file_and_reports_a_real_error(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, OSError | None]:
        helper = FsyncHelper(asyncio.get_running_loop())
        fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
        read, write = os.pipe()
        try:
            os.write(fd, b"data")
            await helper.sync(fd)  # no exception: synced
            try:
                await helper.sync(read)  # fdatasync refuses a pipe: EINVAL, from the helper
            except OSError as exc:
                error: OSError | None = exc
            else:
                error = None
            await helper.sync(fd)  # and it goes on answering
            return helper.pid, error
        finally:
            helper.close()
            for each in (fd, read, write):
                os.close(each)

    pid, error = asyncio.run(scenario())
    assert error is not None and error.errno == errno.EINVAL
    assert not isinstance(error, HelperGone)
    assert not alive(pid)  # closed and reaped


def test_group_commits_are_synced_by_the_helper_not_a_thread(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, bool]:
        journal = Journal(tmp_path, fsync=FsyncPolicy.BATCH)
        journal.open()
        await asyncio.gather(*(journal.append([message(n)]) for n in range(20)))
        await journal.append([message(20)])
        helper = journal._fsync_helper
        assert helper is not None and alive(helper.pid)
        # No worker thread was needed: the loop never made its default executor.
        threadless = getattr(asyncio.get_running_loop(), "_default_executor", None) is None
        fsyncs = journal.fsyncs
        await journal.aclose()
        return helper.pid, fsyncs, threadless

    pid, fsyncs, threadless = asyncio.run(scenario())
    assert threadless
    assert 2 <= fsyncs < 21  # the 20 concurrent appends shared syncs, the last had its own
    assert not alive(pid)  # the journal's close ends its helper
    assert replayed(tmp_path) == {f"m{n}" for n in range(21)}


def test_a_helper_killed_while_syncing_fails_that_group_and_a_new_one_takes_over(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[int, int]:
        journal, helper = await helped_journal(tmp_path)
        journal.retry_after = 0.0
        first = helper.pid
        os.kill(first, signal.SIGSTOP)  # it will not answer the next group...
        pending = asyncio.ensure_future(journal.append([message(2)]))
        await asyncio.sleep(0.05)
        assert not pending.done()
        os.kill(first, signal.SIGKILL)  # ...and dies without answering
        with pytest.raises(JournalWriteError, match="fsync"):
            await pending
        await journal.append([message(3)])  # a new segment (the thread opens it)...
        await journal.append([message(4)])  # ...and a new helper
        second = journal._fsync_helper
        assert second is not None and second.pid != first
        await journal.aclose()
        return first, second.pid

    first, second = asyncio.run(scenario())
    assert not alive(first) and not alive(second)
    # The refused group is not in the journal; what was acknowledged is.
    assert replayed(tmp_path) == {"m1", "m3", "m4"}


def test_a_helper_that_died_between_groups_costs_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal, helper = await helped_journal(tmp_path)
        os.kill(helper.pid, signal.SIGKILL)
        await asyncio.to_thread(wait_dead, helper.pid)
        await asyncio.sleep(0.01)  # the loop sees its socket close
        await journal.append([message(2)])  # a new helper, no refusal
        assert journal.fsync_errors == 0
        await journal.aclose()

    asyncio.run(scenario())
    assert replayed(tmp_path) == {"m1", "m2"}


def test_a_request_the_dead_helper_never_got_goes_to_a_new_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal, helper = await helped_journal(tmp_path)
        os.kill(helper.pid, signal.SIGKILL)
        wait_dead(helper.pid)  # blocking: the loop has not seen its socket close
        await journal.append([message(2)])  # the send fails; a new helper syncs it
        assert journal._fsync_helper is not helper and journal.fsync_errors == 0
        await journal.aclose()

    asyncio.run(scenario())
    assert replayed(tmp_path) == {"m1", "m2"}


def test_a_group_cancelled_while_syncing_is_cut_off(tmp_path: Path) -> None:
    """Cancelled between its write and the helper's answer, a group is not known to be
    on disk: it is cut off, and the next group lands where the journal says it does."""

    async def scenario() -> bytes:
        journal, helper = await helped_journal(tmp_path)
        assert journal._writer is not None
        os.kill(helper.pid, signal.SIGSTOP)
        pending = asyncio.ensure_future(journal.append([message(2)]))
        await asyncio.sleep(0.05)
        journal._writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        os.kill(helper.pid, signal.SIGCONT)
        (location,) = await journal.append([message(3)])
        assert location is not None
        body = journal.read_body(location)  # checked against its checksum
        await journal.aclose()
        return body

    assert asyncio.run(scenario()) == message(3).body
    assert replayed(tmp_path) == {"m1", "m3"}


def test_sigterm_and_sigint_leave_the_helper_to_its_journal(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal, helper = await helped_journal(tmp_path)
        os.kill(helper.pid, signal.SIGTERM)
        os.kill(helper.pid, signal.SIGINT)
        await asyncio.sleep(0.1)
        await journal.append([message(2)])
        assert journal._fsync_helper is helper and alive(helper.pid)
        await journal.aclose()

    asyncio.run(scenario())


def test_a_full_disk_fails_the_helped_write_cleanly_then_recovers(tmp_path: Path) -> None:
    """A real ENOSPC on the loop's write: the group is refused and leaves no trace; once
    there is space again, appends go on (the same helper)."""

    async def scenario(root: Path) -> tuple[set[str], set[str]]:
        journal = Journal(root, fsync=FsyncPolicy.BATCH)
        journal.retry_after = 0.0
        journal.open()
        acknowledged: set[str] = set()
        refused: set[str] = set()
        for n in range(200):  # 8 KB each into 256 KB
            try:
                await journal.append([message(n, 8000)])
            except JournalWriteError:
                refused.add(f"m{n}")
                if len(refused) == 3:
                    break
            else:
                acknowledged.add(f"m{n}")
        assert refused and journal.write_errors >= 3 and journal.fsync_errors == 0
        grow(root, "4m")
        for n in range(1000, 1005):
            await journal.append([message(n, 8000)])
            acknowledged.add(f"m{n}")
        await journal.aclose()
        return acknowledged, refused

    with small_filesystem(tmp_path / "small", "256k") as root:
        acknowledged, refused = asyncio.run(scenario(root))
        assert replayed(root) == acknowledged
        assert not refused & acknowledged


def test_the_thread_syncs_where_the_helper_would_not_do(tmp_path: Path) -> None:
    """A virtual clock (a wait on another process would look idle to it), an injected
    DiskOps fdatasync, a large group, fsync="never": no helper is started."""

    class Counting(DiskOps):
        calls = 0

        def fdatasync(self, fd: int) -> None:
            Counting.calls += 1
            super().fdatasync(fd)

    async def append(journal: Journal, *records: Record) -> FsyncHelper | None:
        journal.open()
        await journal.append(list(records))
        helper = journal._fsync_helper
        await journal.aclose()
        return helper

    assert run_virtual(append(Journal(tmp_path / "virtual"), message(1))) is None
    injected = Journal(tmp_path / "injected", ops=Counting())
    assert asyncio.run(append(injected, message(1))) is None
    assert Counting.calls >= 1
    big = Journal(tmp_path / "big")
    records = [message(n, 300_000) for n in range(4)]  # 1.2 MB: more than HELPED_GROUP_MAX
    assert asyncio.run(append(big, *records)) is None
    never = Journal(tmp_path / "never", fsync=FsyncPolicy.NEVER)
    assert asyncio.run(append(never, message(1))) is None
    for name, count in (("virtual", 1), ("injected", 1), ("big", 4), ("never", 1)):
        assert len(replayed(tmp_path / name)) == count

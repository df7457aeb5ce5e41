"""The spool's storage: an append-only journal with group commit.

Why a journal and not a file per message: on this kind of machine one ``fsync`` costs
0.3-1 ms and parallel fsyncs do not help, so a spool that syncs a file (and its directory)
per message tops out near 1,000-2,000 messages/s (``reference/mta_practice.md`` 2.10,
5.1). Here every message is one record appended to the current segment file, and the
records of all the sessions that are waiting are made durable by one ``fdatasync``
together (group commit); under ``"batch"`` the writer lets the loop run a few more turns
before it takes a group, so that what the sessions append meanwhile joins it
(``GATHER_TURNS``). A caller's :meth:`Journal.append` returns only once its records
are on disk (``fsync="always"`` or ``"batch"``), so a server that awaits it before saying
250 never acknowledges mail it could lose.

On disk (``<spool>/``)::

    lock                     held with flock while a process uses the spool
    journal/manifest.json    which segments must exist, where each sealed one ends
    journal/00000001.sxj     segments, appended to in order, rolled at ``segment_size``
    corrupt/                 torn tails, void octets and damage, kept for inspection

The record format is in :mod:`smtpx.spool.records`, the manifest in
:mod:`smtpx.spool.manifest`, reading a journal back in :mod:`smtpx.spool.replay`.

Faults: an append whose write or fsync fails leaves the journal as if it had never been
made, and all its waiters get :class:`JournalWriteError` (the server answers 4xx). A failed
write is cut off again; a failed fsync is never retried on the same file (after an fsync
error the kernel may have dropped the dirty pages and cleared the error): the segment is
sealed in the manifest before the failed group, and appends go on in a new segment. For
``RETRY_AFTER`` seconds after a failure appends are refused at once
(:class:`JournalUnavailable`); then the next one tries the disk again, so the spool
recovers by itself when space comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from smtpx.compiled import mypyc_attr
from smtpx.errors import SMTPXError
from smtpx.spool import records
from smtpx.spool.manifest import MANIFEST_NAME, Manifest, fsync_directory, store_manifest
from smtpx.spool.records import (
    HEADER,
    BodyDamaged,
    Location,
    Record,
    RecordKind,
    StoreWriteError,
    encode_head,
    encode_record,
)
from smtpx.spool.replay import (
    SEGMENT_SUFFIX,
    JournalProblem,
    Replay,
    Replayer,
    segment_numbers,
    segment_path,
)
from smtpx.spool.syncer import FsyncHelper, HelperUnreachable, helper_supported

__all__ = [
    "HEADER",
    "RETRY_AFTER",
    "SEGMENT_SUFFIX",
    "BodyDamaged",
    "DiskOps",
    "FsyncPolicy",
    "Journal",
    "JournalProblem",
    "JournalUnavailable",
    "JournalWriteError",
    "Location",
    "Record",
    "RecordKind",
    "Replay",
    "SpoolLocked",
    "encode_record",
]

log = logging.getLogger("smtpx.spool")
_NEVER = float("-inf")  # Journal._failing_until before any failure


class SpoolLocked(SMTPXError):
    """Another process holds the spool's lock."""


class JournalWriteError(StoreWriteError):
    """Records could not be made durable; none of them is in the journal."""


class JournalUnavailable(JournalWriteError):
    """Refused without trying: a write failed moments ago (see ``RETRY_AFTER``)."""


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"  # each append call pays its own fsync
    BATCH = "batch"  # appends waiting at the same time share one fsync (group commit)
    NEVER = "never"  # no fsync at all: tests and benchmarks only


# The fault tests subclass it in Python (allowed in the compiled build too).
@mypyc_attr(allow_interpreted_subclasses=True)
class DiskOps:
    """The system calls the journal writes through. Tests replace them to inject the
    faults a real disk has (ENOSPC, EIO on fsync) on every platform."""

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def store_manifest(self, directory: Path, manifest: Manifest, *, sync: bool) -> None:
        store_manifest(directory, manifest, sync=sync)


_Locations = list[list[Location | None]]  # each pending append's body locations


@dataclass(slots=True, init=False)
class _Encoded:
    """A record ready to write; ``body`` is (offset within data, length, crc)."""

    data: bytes
    body: tuple[int, int, int] | None

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (ten times the cost; docs/performance.md, "Writing code that compiles").
    def __init__(self, data: bytes, body: tuple[int, int, int] | None) -> None:
        self.data = data
        self.body = body


@dataclass(slots=True, init=False)
class _Pending:
    records: list[_Encoded | Record]  # a Record: a streamed body, encoded as it is written
    future: asyncio.Future[list[Location | None]]

    def __init__(
        self, records: list[_Encoded | Record], future: asyncio.Future[list[Location | None]]
    ) -> None:  # (written out, as _Encoded's)
        self.records = records
        self.future = future


# After a failed write, appends are refused at once for this long (seconds; a journal's
# ``retry_after``): no disk work, and at most a few new segments a second while a disk is
# full or failing.
RETRY_AFTER = 0.5
# A group of more octets than this is written by the worker thread, not on the loop.
HELPED_GROUP_MAX = 1024 * 1024
# Under ``fsync = "batch"``, before a group is taken the loop runs up to this many more
# turns, for at most GATHER_FOR seconds (a journal's ``gather_turns``, 0: none, and
# ``gather_for``), so that the sessions whose content is already in their sockets'
# buffers append meanwhile and share the group's write and fsync. Idle, a turn costs a
# few microseconds; busy, the time bounds what it adds to a message's wait
# (docs/performance.md, "Gathering a group").
GATHER_TURNS = 12
GATHER_FOR = 0.002


class _OneTurn:
    """Awaited, gives the loop one turn: ``asyncio.sleep(0)`` (a bare ``yield``, which a
    task takes as "run me again at the next pass") without its two interpreted frames."""

    def __await__(self) -> Generator[None, None, None]:
        yield


_ONE_TURN = _OneTurn()


class Journal:
    """The segment files of one spool directory (one process at a time)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        segment_size: int = 64 * 1024 * 1024,
        ops: DiskOps | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_size = segment_size
        self.ops = ops or DiskOps()
        self.retry_after = RETRY_AFTER  # (tests shorten it)
        self.gather_turns = GATHER_TURNS if fsync is FsyncPolicy.BATCH else 0
        self.gather_for = GATHER_FOR
        self._path_of: tuple[int, Path] = (-1, Path())  # the last segment_path()
        # Called (on the event loop) after an append opened a new segment: the old one is
        # sealed and may now be deleted.
        self.on_new_segment: Callable[[], None] | None = None
        self.journal_dir = self.directory / "journal"
        self.corrupt_dir = self.directory / "corrupt"
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment = 0
        self._size = 0
        self._suspect: int | None = None  # the current segment is sealed at this length
        self._manifest = Manifest()
        self._manifest_lock = threading.Lock()  # the writer thread and the loop share it
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._pins: dict[int, int] = {}  # segment -> open readers
        self._failing_until = _NEVER  # loop time
        self._fsync_helper: FsyncHelper | None = None
        self._no_helper = not helper_supported()
        self.failure: str | None = None  # the last write failure, until a write succeeds
        self.fsyncs = 0  # counters, for status, metrics and benchmarks
        self.appended = 0
        self.write_errors = 0
        self.fsync_errors = 0
        self.refused = 0

    # -- opening ----------------------------------------------------------------------

    def open(self, replay: Replay | None = None) -> Replay:
        """Take the lock, replay every segment into ``replay`` (a new :class:`Replay` by
        default), open the last one for appending."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.journal_dir.mkdir(exist_ok=True)
        self._take_lock()
        replay = Replay() if replay is None else replay
        sync = self.fsync is not FsyncPolicy.NEVER
        manifest = Replayer(self.journal_dir, self.corrupt_dir, replay, True, sync).run()
        self._manifest = manifest
        current = self.segment_path(manifest.current)
        fresh = replay.segments == 0 and not (self.journal_dir / MANIFEST_NAME).exists()
        if fresh or (current.exists() and manifest.current not in manifest.sealed):
            self._fd, self._segment, self._size = self._open_segment(manifest.current)
            self._store_manifest()
        else:
            # The current segment is lost (reported) or sealed: never append to it.
            self._segment = manifest.current
            self._roll()
        return replay

    def replay_readonly(self, replay: Replay | None = None) -> Replay:
        """Replay without the lock and without repairing anything (for inspecting a spool
        that a running process owns: its newest records may be missed, never misread)."""
        replay = Replay() if replay is None else replay
        if self.journal_dir.is_dir():
            Replayer(self.journal_dir, self.corrupt_dir, replay, False).run()
        return replay

    def _take_lock(self) -> None:
        path = self.directory / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SpoolLocked(
                f"the spool {self.directory} is in use by another process (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def segment_numbers(self) -> list[int]:
        return segment_numbers(self.journal_dir)

    def segment_path(self, number: int) -> Path:
        # The last one asked for is kept: a delivery asks for the same few segments for
        # every message, and a Path costs microseconds to make. Read once and replaced
        # whole: the worker thread asks too (a new segment), and neither may get the
        # other's path.
        cached = self._path_of
        if cached[0] == number:
            return cached[1]
        path = segment_path(self.journal_dir, number)
        self._path_of = (number, path)
        return path

    def _open_segment(self, number: int) -> tuple[int, int, int]:
        """Open (creating it, durably) segment ``number`` for appending: fd, number, size."""
        path = self.segment_path(number)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            if created and self.fsync is not FsyncPolicy.NEVER:
                fsync_directory(self.journal_dir)  # the new name must survive a crash too
            return fd, number, os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise

    def _store_manifest(self) -> None:
        sync = self.fsync is not FsyncPolicy.NEVER
        self.ops.store_manifest(self.journal_dir, self._manifest, sync=sync)

    # -- appending ----------------------------------------------------------------------

    async def append(self, records: list[Record]) -> list[Location | None]:
        """Append ``records`` in order; return once durable (per the fsync policy). The
        result gives each MESSAGE record's body location (None for the others).

        Raises :class:`JournalWriteError` when the records could not be made durable:
        then none of them is in the journal (and none comes back at a restart)."""
        return await self.append_nowait(records)

    def append_nowait(self, records: list[Record]) -> asyncio.Future[list[Location | None]]:
        """Queue ``records`` now, in the order of the calls (a later :meth:`append` lands
        after them); the future is done once they are durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Location | None]] = loop.create_future()
        if self.refusing():
            self.refused += 1
            future.set_exception(JournalUnavailable(f"the spool cannot write: {self.failure}"))
            return future
        encoded: list[_Encoded | Record] = []
        for record in records:
            if record.stream is not None:
                encoded.append(record)
                continue
            data, body_offset = encode_record(record)
            if record.kind == RecordKind.MESSAGE:
                encoded.append(_Encoded(data, (body_offset, len(record.body), _body_crc(data))))
            else:
                encoded.append(_Encoded(data, None))
        self._queue.append(_Pending(encoded, future))
        self._start_writer()
        return future

    @property
    def failing(self) -> bool:
        """The last write failed (and none succeeded since)."""
        return self.failure is not None

    def refusing(self) -> bool:
        """Appends are refused right now without trying (just after a failure)."""
        until = self._failing_until
        # (No failure yet, the usual case: no loop lookup, a getpid system call on 3.11.)
        return until != _NEVER and asyncio.get_running_loop().time() < until

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        """Take everything queued, write it with one write and sync it with one fsync,
        then wake every waiter; repeat while more arrived meanwhile."""
        loop = asyncio.get_running_loop()
        while self._queue:
            await self._gather()
            batch, self._queue = self._queue, []
            if self.fsync is FsyncPolicy.ALWAYS:
                groups = [[pending] for pending in batch]
            else:
                groups = [batch]
            for group in groups:
                segment = self._segment
                try:
                    if self._helped(group, loop):
                        results = await self._write_group_helped(group, loop)
                    else:
                        results = await loop.run_in_executor(None, self._write_group, group)
                except BaseException as exc:
                    if isinstance(exc, JournalWriteError):
                        self._failing_until = loop.time() + self.retry_after
                    _fail_all(group, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                if self.failure is not None:
                    log.warning("spool journal: writing again (after: %s)", self.failure)
                    self.failure = None
                for pending, locations in zip(group, results, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(locations)
                if self._segment != segment and self.on_new_segment is not None:
                    self.on_new_segment()

    async def _gather(self) -> None:
        """Let the loop run up to ``gather_turns`` turns (``gather_for`` seconds at most)
        before a group is taken: what the sessions append meanwhile joins it."""
        turns = self.gather_turns
        if turns <= 0:
            return
        until = time.monotonic() + self.gather_for
        for _ in range(turns):
            await _ONE_TURN
            if time.monotonic() >= until:
                return

    def _write_group(self, group: list[_Pending]) -> _Locations:
        """In a worker thread: append the group to the current segment and sync it.

        A failure leaves the journal as if the group had never been written (see the
        module's docstring) and raises :class:`JournalWriteError`."""
        if self._fd is None or self._size >= self.segment_size:
            try:
                self._roll()
            except OSError as exc:
                self.write_errors += 1
                self._fail("opening a new segment", exc)
        base, results, end = self._write_unsynced(group)
        if self.fsync is not FsyncPolicy.NEVER:
            try:
                self.ops.fdatasync(self._written_fd())
            except OSError as exc:
                self._sync_failed(base, exc)
        return self._committed(group, results, end)

    def _helped(self, group: list[_Pending], loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``group`` is written on the loop and synced by the helper process
        (:mod:`smtpx.spool.syncer`): small encoded records into a segment that has
        room. A new segment (its creation and the manifest are synced too), a streamed
        body (read from its file a chunk at a time), a large group, fsync by an
        injected :class:`DiskOps` or a virtual clock (a wait on another process would
        look idle to it) go to a worker thread as before."""
        if self._fd is None or self._size >= self.segment_size or self._no_helper:
            return False
        if self.fsync is FsyncPolicy.NEVER or getattr(loop, "virtual_clock", False):
            return False
        if type(self.ops).fdatasync is not DiskOps.fdatasync:
            return False
        size = 0
        for pending in group:
            for record in pending.records:
                if not isinstance(record, _Encoded):
                    return False
                size += len(record.data)
        return size <= HELPED_GROUP_MAX

    async def _write_group_helped(
        self, group: list[_Pending], loop: asyncio.AbstractEventLoop
    ) -> _Locations:
        """Write the group here (into the page cache) and have the helper sync it; on
        failure, as :meth:`_write_group`."""
        helper = self._helper(loop)
        if helper is None:
            return await loop.run_in_executor(None, self._write_group, group)
        base, results, end = self._write_unsynced(group)
        fd = self._written_fd()
        try:
            await self._sync_helped(helper, fd, loop)
        except OSError as exc:
            self._sync_failed(base, exc)
        except BaseException:
            # Cancelled (the journal is being closed): the group is not known to be on
            # disk and nobody is told that it is; cut it off as after a failed sync, so
            # that the next group's locations are where it really lands.
            self._seal_suspect(base)
            raise
        return self._committed(group, results, end)

    async def _sync_helped(
        self, helper: FsyncHelper, fd: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Have ``helper`` sync ``fd``; once more through a new helper when it ended
        before it got the request (nothing of this file went through it unanswered)."""
        unreachable: HelperUnreachable | None = None
        try:
            await helper.sync(fd)
        except HelperUnreachable as exc:
            unreachable = exc
        if unreachable is None:
            return
        again = self._helper(loop)
        if again is None:
            raise unreachable
        await again.sync(fd)  # (awaited out of the handler: docs/performance.md)

    def _helper(self, loop: asyncio.AbstractEventLoop) -> FsyncHelper | None:
        """The helper process, started when first needed and again after one ended;
        None when none can be started (the worker thread syncs from then on)."""
        helper = self._fsync_helper
        if helper is not None and not helper.gone:
            return helper
        if helper is not None:
            helper.close()
            self._fsync_helper = None
        try:
            self._fsync_helper = FsyncHelper(loop)
        except OSError as exc:
            self._no_helper = True
            log.warning("spool journal: no fsync helper (%s); syncing in a thread", exc)
        return self._fsync_helper

    def _written_fd(self) -> int:
        assert self._fd is not None
        return self._fd

    def _write_unsynced(self, group: list[_Pending]) -> tuple[int, _Locations, int]:
        """Write the group at the end of the current segment: where it starts, its
        records' locations, where it ends. A failed write is cut off again (or the
        segment sealed) and raises :class:`JournalWriteError`."""
        fd = self._written_fd()
        base = self._size
        try:
            results, end = self._write_records(fd, group, base)
        except OSError as exc:
            self.write_errors += 1
            try:
                self.ops.ftruncate(fd, base)
            except OSError:
                self._seal_suspect(base)
            self._fail("write", exc)
        return base, results, end

    def _sync_failed(self, base: int, exc: OSError) -> NoReturn:
        self.fsync_errors += 1
        self._seal_suspect(base)
        self._fail("fsync", exc)

    def _committed(self, group: list[_Pending], results: _Locations, end: int) -> _Locations:
        if self.fsync is not FsyncPolicy.NEVER:
            self.fsyncs += 1
        self._size = end
        self.appended += len(group)
        return results

    def _write_records(
        self, fd: int, group: list[_Pending], base: int
    ) -> tuple[list[list[Location | None]], int]:
        """Write the group's records from ``base`` on: encoded ones together in one write,
        streamed ones a chunk at a time. Their locations, and where the group ends."""
        results: list[list[Location | None]] = []
        position = base
        ready: list[bytes] = []
        for pending in group:
            locations: list[Location | None] = []
            for record in pending.records:
                if isinstance(record, _Encoded):
                    ready.append(record.data)
                    body = record.body
                    at = (
                        None
                        if body is None
                        else Location(self._segment, position + body[0], *body[1:])
                    )
                    locations.append(at)
                    position += len(record.data)
                    continue
                self._write_all(fd, b"".join(ready))
                ready = []
                location, written = self._write_streamed(fd, record, position)
                locations.append(location)
                position += written
            results.append(locations)
        self._write_all(fd, b"".join(ready))
        return results, position

    def _write_streamed(self, fd: int, record: Record, position: int) -> tuple[Location, int]:
        """Write a record whose body is read a chunk at a time, in one pass: its header
        (which carries the body's length and checksum) is written with zeros first and
        filled in once the body is written."""
        assert record.stream is not None
        placeholder = encode_head(record, 0, 0)
        self._write_all(fd, placeholder)
        length = crc = 0
        for chunk in record.stream.wire_chunks():
            crc = zlib.crc32(chunk, crc)
            length += len(chunk)
            self._write_all(fd, chunk)
        head = encode_head(record, length, crc)
        # The appending descriptor cannot write at an offset (O_APPEND): another one can.
        patch = os.open(self.segment_path(self._segment), os.O_WRONLY)
        try:
            if self.ops.pwrite(patch, head[: HEADER.size], position) != HEADER.size:
                raise OSError(errno.EIO, "short write of a record header")
        finally:
            os.close(patch)
        return Location(self._segment, position + len(head), length, crc), len(head) + length

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.ops.write(fd, view)
            if written <= 0:
                raise OSError(errno.EIO, "write made no progress")
            view = view[written:]

    def _seal_suspect(self, base: int) -> None:
        """The segment cannot be trusted past ``base``: record that it ends there, and
        stop writing to it (the next group opens a new segment)."""
        fd, self._fd = self._fd, None
        self._suspect = base
        if fd is not None:
            with contextlib.suppress(OSError):
                self.ops.ftruncate(fd, base)  # the void octets need not stay
            os.close(fd)
        with self._manifest_lock:
            self._manifest.sealed[self._segment] = base
            with contextlib.suppress(OSError):  # else the next roll records it
                self._store_manifest()

    def _fail(self, what: str, exc: OSError) -> NoReturn:
        self.failure = f"{what} failed on segment {self._segment}: {exc}"
        log.error("spool journal: %s; the appends of this group are refused", self.failure)
        raise JournalWriteError(self.failure) from exc

    def _roll(self) -> None:
        """Seal the current segment at its length (or where it became suspect) and go on
        in the next one: created first, then recorded in the manifest, then used."""
        old, number = self._segment, self._segment + 1
        length = self._suspect if self._suspect is not None else self._size
        fd, _, size = self._open_segment(number)
        try:
            with self._manifest_lock:
                before = self._manifest.current, self._manifest.sealed.get(old)
                if old >= self._manifest.first and self.segment_path(old).exists():
                    self._manifest.sealed[old] = length
                self._manifest.current = number
                try:
                    self._store_manifest()
                except OSError:
                    self._manifest.current = before[0]
                    if before[1] is None:
                        self._manifest.sealed.pop(old, None)
                    else:
                        self._manifest.sealed[old] = before[1]
                    raise
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._segment, self._size, self._suspect = fd, number, size, None

    async def flush(self) -> None:
        """Wait until everything appended so far is written (and synced, per policy)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    # -- reading ------------------------------------------------------------------------

    def read_body(self, location: Location) -> bytes:
        """The body at ``location``, checked against its checksum (:class:`BodyDamaged`)."""
        return records.read_body(self.segment_path(location.segment), location)

    def check_body(self, location: Location) -> None:
        """Check the body at ``location`` a chunk at a time (:class:`BodyDamaged`)."""
        records.check_body(self.segment_path(location.segment), location)

    def check_bodies(
        self, locations: list[Location], *, cached_only: bool = False
    ) -> list[BodyDamaged | None]:
        """What is wrong with each body (None: it matches its checksum); with
        ``cached_only``, :class:`~smtpx.spool.records.NotCached` unless every octet is in
        the page cache."""
        return records.check_bodies(self.segment_path, locations, cached_only=cached_only)

    def read_body_raw(self, location: Location) -> tuple[bytes, BodyDamaged | None]:
        """The octets at ``location`` unchecked, and what is wrong with them (compaction
        copies them forward either way, with their original checksum)."""
        return records.read_body_raw(self.segment_path(location.segment), location)

    @contextlib.contextmanager
    def pinned(self, segment: int) -> Iterator[Path]:
        """The segment's path, kept from compaction while the block runs."""
        self.pin(segment)
        try:
            yield self.segment_path(segment)
        finally:
            self.unpin(segment)

    def pin(self, segment: int) -> None:
        """Keep the segment from compaction until as many :meth:`unpin` calls."""
        self._pins[segment] = self._pins.get(segment, 0) + 1

    def unpin(self, segment: int) -> None:
        self._pins[segment] -= 1
        if not self._pins[segment]:
            del self._pins[segment]

    def pins_sealed(self) -> bool:
        """Whether a sealed segment is pinned now (kept from deletion while it is read)."""
        return any(number != self._segment for number in self._pins)

    # -- compaction ---------------------------------------------------------------------

    def removable_segments(self, live: set[int]) -> list[int]:
        """The oldest segments, in a row, that are sealed, hold no live message body and
        no open reader.

        Only a prefix may go: a later segment can hold the update or forget records of a
        message whose body lives in an earlier, kept segment, and deleting them would
        bring an old state (or a delivered message) back at the next replay. A segment
        in the prefix can only hold records about messages that started in the prefix,
        and those are all dead. (The spool copies live messages forward so that the
        prefix keeps moving: :meth:`smtpx.spool.spool.Spool.compact`.)"""
        removable = []
        for number in self.segment_numbers():
            if number == self._segment or number in live or number in self._pins:
                break
            removable.append(number)
        return removable

    def delete_segments(self, numbers: list[int]) -> None:
        """Delete a prefix of the segments: the manifest first records them gone (a
        crash in between leaves dead segments that the next start removes)."""
        if not numbers:
            return
        with self._manifest_lock:
            self._manifest.drop_before(max(numbers) + 1)
            try:
                self._store_manifest()
            except OSError as exc:
                log.warning("spool journal: segments %s kept: %s", numbers, exc)
                return
        for number in numbers:
            with contextlib.suppress(FileNotFoundError):
                self.segment_path(number).unlink()
        if self.fsync is not FsyncPolicy.NEVER:
            fsync_directory(self.journal_dir)

    @property
    def current_segment(self) -> int:
        return self._segment

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.flush()
        self.close()

    def close(self) -> None:
        if self._fsync_helper is not None:
            self._fsync_helper.close()
            self._fsync_helper = None
        if self._fd is not None:
            if self.fsync is not FsyncPolicy.NEVER:
                with contextlib.suppress(OSError):
                    os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def _body_crc(data: bytes) -> int:
    """The body CRC an encoded MESSAGE record carries (its header's last field)."""
    return int.from_bytes(data[HEADER.size - 4 : HEADER.size], "little")


def _fail_all(group: list[_Pending], exc: BaseException) -> None:
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(exc)

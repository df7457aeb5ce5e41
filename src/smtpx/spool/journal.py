"""The spool's storage: an append-only journal with group commit.

Why a journal and not a file per message: on this kind of machine one ``fsync`` costs
0.3-1 ms and parallel fsyncs do not help, so a spool that syncs a file (and its directory)
per message tops out near 1,000-2,000 messages/s (``reference/mta_practice.md`` 2.10,
5.1). Here every message is one record appended to the current segment file, and the
records of all the sessions that are waiting are made durable by one ``fdatasync``
together (group commit). A caller's :meth:`Journal.append` returns only once its records
are on disk (``fsync="always"`` or ``"batch"``), so a server that awaits it before saying
250 never acknowledges mail it could lose.

On disk (``<spool>/``)::

    lock                     held with flock while a process uses the spool
    journal/00000001.sxj     segments, appended to in order, rolled at ``segment_size``
    corrupt/                 torn tails and unreadable data, kept for inspection

A record is a 24-octet header, then JSON metadata, then the body::

    magic "SXJ1" | kind u8 | version u8 | header_check u16 | meta_len u32 | body_len u32 |
    meta_crc u32 | body_crc u32

``header_check`` (version 2) is the low 16 bits of the CRC32 of the header with that field
zero: a flipped bit in a length or the kind would otherwise make replay swallow the
records that follow, or read a new message as a forget. Version 1 records (no check)
still load.

``kind`` is 1 (a message, with its body), 2 (an update: the message's new state) or
3 (forget: the message is gone, delivered or purged). Bodies are stored wire-ready (CRLF
line endings, dot-stuffed, no final ``.CRLF``) so delivery can ``sendfile`` them straight
from the segment. Replay reads every segment in order; the last record for an id wins.

A damaged record (not a header, an impossible length, a metadata checksum that fails)
does not end the replay of its segment: replay resynchronises on the next offset that
holds a whole record (the magic, a sound header and metadata whose checksum matches) and
goes on from there, so one bad sector costs the records it hit and no more. The damaged
octets are copied to ``corrupt/<segment file>-<offset>.damaged`` (once: a later replay
finds the copy and leaves it) and reported. Only when nothing readable follows the damage
in the last segment is it a torn tail, the end of a batch that was never acknowledged (a
crash before its fsync): it is moved to ``corrupt/`` and cut off so appends go on from a
record boundary; reported, never silently dropped. Bodies are not read at replay: only
``fsck --verify-bodies`` checks them against their checksums.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from smtpx.errors import SMTPXError

__all__ = [
    "FsyncPolicy",
    "Journal",
    "JournalProblem",
    "Location",
    "Record",
    "RecordKind",
    "Replay",
    "SpoolLocked",
]

log = logging.getLogger("smtpx.spool")

MAGIC = b"SXJ1"
VERSION = 2  # 1: no header check (still read)
HEADER = struct.Struct("<4sBBHIIII")
SEGMENT_SUFFIX = ".sxj"
_CHUNK = 1 << 20  # octets read at a time when scanning or copying damage


class SpoolLocked(SMTPXError):
    """Another process holds the spool's lock."""


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"  # each append call pays its own fsync
    BATCH = "batch"  # appends waiting at the same time share one fsync (group commit)
    NEVER = "never"  # no fsync at all: tests and benchmarks only


class RecordKind(enum.IntEnum):
    MESSAGE = 1
    UPDATE = 2
    FORGET = 3


@dataclass(frozen=True, slots=True)
class Location:
    """Where a body lies: segment number, offset of its first octet, length; ``crc`` is
    the body's CRC32 from its record header, when replay read it."""

    segment: int
    offset: int
    length: int
    crc: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Record:
    kind: RecordKind
    meta: dict[str, Any]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class JournalProblem:
    """Something replay found wrong; ``saved`` is where the damaged bytes were kept."""

    segment: int
    offset: int
    description: str
    saved: str | None = None


@dataclass
class Replay:
    """What replay found: the latest metadata and body location of every live message.

    Replay calls :meth:`message`, :meth:`update` and :meth:`forget` for the records in
    journal order. A subclass may keep something leaner than the metadata dicts (the
    spool builds its entries as it goes, so that 100,000 dicts never exist at once)."""

    messages: dict[str, tuple[dict[str, Any], Location]] = field(default_factory=dict)
    problems: list[JournalProblem] = field(default_factory=list)
    records: int = 0
    segments: int = 0

    def message(self, meta: dict[str, Any], location: Location) -> None:
        self.messages[meta["id"]] = (meta, location)

    def update(self, meta: dict[str, Any]) -> None:
        known = self.messages.get(meta["id"])
        if known is not None:
            self.messages[meta["id"]] = ({**known[0], **meta}, known[1])

    def forget(self, message_id: str) -> None:
        self.messages.pop(message_id, None)


def encode_record(record: Record) -> tuple[bytes, int]:
    """The record's bytes, and the offset of its body within them."""
    meta = json.dumps(record.meta, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    fields = (len(meta), len(record.body), zlib.crc32(meta), zlib.crc32(record.body))
    unchecked = HEADER.pack(MAGIC, int(record.kind), VERSION, 0, *fields)
    header = HEADER.pack(MAGIC, int(record.kind), VERSION, _header_check(unchecked), *fields)
    return header + meta + record.body, HEADER.size + len(meta)


def _header_check(header: bytes) -> int:
    """The check of a header whose check field is zero."""
    return zlib.crc32(header) & 0xFFFF


@dataclass
class _Pending:
    data: bytes
    bodies: list[tuple[int, int] | None]  # (offset within data, length) per record
    future: asyncio.Future[list[Location | None]]


class Journal:
    """The segment files of one spool directory (one process at a time)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        segment_size: int = 64 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_size = segment_size
        # Called (on the event loop) after an append opened a new segment: the old one is
        # sealed and may now be deleted.
        self.on_new_segment: Callable[[], None] | None = None
        self.journal_dir = self.directory / "journal"
        self.corrupt_dir = self.directory / "corrupt"
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment = 0
        self._size = 0
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._pins: dict[int, int] = {}  # segment -> open readers
        self.fsyncs = 0  # counters, for status and benchmarks
        self.appended = 0

    # -- opening ----------------------------------------------------------------------

    def open(self, replay: Replay | None = None) -> Replay:
        """Take the lock, replay every segment into ``replay`` (a new :class:`Replay` by
        default), open the last one for appending."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.journal_dir.mkdir(exist_ok=True)
        self._take_lock()
        replay = Replay() if replay is None else replay
        segments = self.segment_numbers()
        for i, number in enumerate(segments):
            self._replay_segment(number, replay, last=i == len(segments) - 1)
        replay.segments = len(segments)
        self._segment = segments[-1] if segments else 0
        self._open_segment(self._segment if segments else 1)
        return replay

    def replay_readonly(self, replay: Replay | None = None) -> Replay:
        """Replay without the lock and without repairing anything (for inspecting a spool
        that a running process owns: its newest records may be missed, never misread)."""
        replay = Replay() if replay is None else replay
        if not self.journal_dir.is_dir():
            return replay
        segments = self.segment_numbers()
        for number in segments:
            self._replay_segment(number, replay, last=False, repair=False)
        replay.segments = len(segments)
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
        numbers = []
        for path in self.journal_dir.glob(f"*{SEGMENT_SUFFIX}"):
            with contextlib.suppress(ValueError):
                numbers.append(int(path.stem))
        return sorted(numbers)

    def segment_path(self, number: int) -> Path:
        return self.journal_dir / f"{number:08d}{SEGMENT_SUFFIX}"

    def _open_segment(self, number: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.segment_path(number)
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._segment = number
        self._size = os.fstat(self._fd).st_size
        if created and self.fsync is not FsyncPolicy.NEVER:
            _fsync_dir(self.journal_dir)  # the new name must survive a crash too

    # -- replay -------------------------------------------------------------------------

    def _replay_segment(
        self, number: int, replay: Replay, *, last: bool, repair: bool = True
    ) -> None:
        path = self.segment_path(number)
        size = path.stat().st_size
        with open(path, "rb") as file:
            offset = 0
            while offset < size:
                parsed = _parse_record(file, offset, size)
                if isinstance(parsed, str):
                    resume = _resynchronise(file, offset + 1, size)
                    damage = self._damage(
                        path,
                        number,
                        offset,
                        resume,
                        size=size,
                        problem=parsed,
                        last=last,
                        repair=repair,
                    )
                    replay.problems.append(damage)
                    if resume is None:
                        return
                    offset = resume
                    continue
                meta = parsed.meta
                if parsed.kind == RecordKind.MESSAGE:
                    location = Location(number, parsed.body_at, parsed.body_len, parsed.body_crc)
                    replay.message(meta, location)
                elif parsed.kind == RecordKind.UPDATE:
                    replay.update(meta)
                else:
                    replay.forget(meta["id"])
                replay.records += 1
                offset = parsed.end

    def _damage(
        self,
        path: Path,
        number: int,
        offset: int,
        resume: int | None,
        *,
        size: int,
        problem: str,
        last: bool,
        repair: bool,
    ) -> JournalProblem:
        """Report the damage from ``offset`` to ``resume`` (None: to the end of the
        segment); when repairing, keep its octets in corrupt/ and cut a torn tail."""
        end = size if resume is None else resume
        where = f"segment {number} offset {offset}: {problem}; {end - offset} octets"
        if resume is None:
            where += " to the end of the segment (nothing readable follows)"
        else:
            where += f" skipped, replay resumed at offset {resume}"
        if not repair:
            return JournalProblem(number, offset, where)
        if resume is None and last:
            return self._save_tail(path, number, offset, size, where)
        saved, copied = self._keep_damaged(path, offset, end)
        description = f"{where}; {'kept' if copied else 'already kept'} in {saved}"
        log.warning("spool replay: %s", description)
        return JournalProblem(number, offset, description, str(saved))

    def _keep_damaged(self, path: Path, start: int, end: int) -> tuple[Path, bool]:
        """Copy the damaged octets to corrupt/ under a name fixed by the segment and the
        offset, unless an earlier replay already did (a sealed segment's damage is met
        again at every start). True when copied now."""
        self.corrupt_dir.mkdir(exist_ok=True)
        saved = self.corrupt_dir / f"{path.name}-{start}.damaged"
        if saved.exists():
            return saved, False
        partial = saved.with_name(saved.name + ".partial")
        _copy_range(path, start, end, partial, sync=self.fsync is not FsyncPolicy.NEVER)
        os.replace(partial, saved)  # a crash mid-copy leaves no short .damaged behind
        return saved, True

    def _save_tail(
        self, path: Path, number: int, offset: int, size: int, where: str
    ) -> JournalProblem:
        """Keep a torn tail in corrupt/ and cut it from the last segment so appends go on
        from a sound record boundary. The name carries the time: after the cut, the next
        torn tail may well start at the same offset, and must not be lost."""
        self.corrupt_dir.mkdir(exist_ok=True)
        saved = self.corrupt_dir / f"{path.stem}-{offset}-{int(time.time())}.tail"
        _copy_range(path, offset, size, saved, sync=True)  # kept before it is cut
        with open(path, "r+b") as target:
            target.truncate(offset)
            os.fsync(target.fileno())
        description = f"{where} (an unacknowledged tail) moved to {saved}"
        log.warning("spool replay: %s", description)
        return JournalProblem(number, offset, description, str(saved))

    # -- appending ----------------------------------------------------------------------

    async def append(self, records: list[Record]) -> list[Location | None]:
        """Append ``records`` in order; return once durable (per the fsync policy). The
        result gives each MESSAGE record's body location (None for the others)."""
        return await self.append_nowait(records)

    def append_nowait(self, records: list[Record]) -> asyncio.Future[list[Location | None]]:
        """Queue ``records`` now, in the order of the calls (a later :meth:`append` lands
        after them); the future is done once they are durable."""
        chunks = []
        bodies: list[tuple[int, int] | None] = []
        position = 0
        for record in records:
            data, body_offset = encode_record(record)
            chunks.append(data)
            is_message = record.kind == RecordKind.MESSAGE
            bodies.append((position + body_offset, len(record.body)) if is_message else None)
            position += len(data)
        loop = asyncio.get_running_loop()
        pending = _Pending(b"".join(chunks), bodies, loop.create_future())
        self._queue.append(pending)
        self._start_writer()
        return pending.future

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        """Take everything queued, write it with one write and sync it with one fsync,
        then wake every waiter; repeat while more arrived meanwhile."""
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            if self.fsync is FsyncPolicy.ALWAYS:
                groups = [[pending] for pending in batch]
            else:
                groups = [batch]
            for group in groups:
                segment = self._segment
                try:
                    results = await loop.run_in_executor(None, self._write_group, group)
                except BaseException as exc:
                    for pending in group:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for pending, locations in zip(group, results, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(locations)
                if self._segment != segment and self.on_new_segment is not None:
                    self.on_new_segment()

    def _write_group(self, group: list[_Pending]) -> list[list[Location | None]]:
        """In a worker thread: append the group to the current segment and sync it."""
        assert self._fd is not None
        if self._size >= self.segment_size:
            self._open_segment(self._segment + 1)
        base = self._size
        data = b"".join(p.data for p in group)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)
        if self.fsync is not FsyncPolicy.NEVER:
            os.fdatasync(self._fd)
            self.fsyncs += 1
        self.appended += len(group)
        results = []
        position = base
        for pending in group:
            results.append(
                [
                    None if body is None else Location(self._segment, position + body[0], body[1])
                    for body in pending.bodies
                ]
            )
            position += len(pending.data)
        return results

    async def flush(self) -> None:
        """Wait until everything appended so far is written (and synced, per policy)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    # -- reading ------------------------------------------------------------------------

    def read_body(self, location: Location) -> bytes:
        """The body at ``location`` (checked against nothing: use :meth:`verify_body`)."""
        with open(self.segment_path(location.segment), "rb") as file:
            file.seek(location.offset)
            return file.read(location.length)

    @contextlib.contextmanager
    def pinned(self, segment: int) -> Iterator[Path]:
        """The segment's path, kept from compaction while the block runs."""
        self._pins[segment] = self._pins.get(segment, 0) + 1
        try:
            yield self.segment_path(segment)
        finally:
            self._pins[segment] -= 1
            if not self._pins[segment]:
                del self._pins[segment]

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
        for number in numbers:
            with contextlib.suppress(FileNotFoundError):
                self.segment_path(number).unlink()
        if numbers and self.fsync is not FsyncPolicy.NEVER:
            _fsync_dir(self.journal_dir)

    @property
    def current_segment(self) -> int:
        return self._segment

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.flush()
        self.close()

    def close(self) -> None:
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


@dataclass(frozen=True, slots=True)
class _Parsed:
    kind: RecordKind
    meta: dict[str, Any]
    body_at: int
    body_len: int
    body_crc: int
    end: int


def _parse_record(file: BinaryIO, offset: int, size: int) -> _Parsed | str:
    """The record at ``offset`` of a segment of ``size`` octets, or what is wrong there.
    The body is not read (nor its checksum checked)."""
    file.seek(offset)
    header = file.read(HEADER.size)
    if len(header) < HEADER.size:
        return "record header cut short"
    magic, kind, version, check, meta_len, body_len, meta_crc, body_crc = HEADER.unpack(header)
    if magic != MAGIC or kind not in (1, 2, 3) or version not in (1, 2):
        return "not a record header"
    if version == 2 and check != _header_check(header[:6] + b"\0\0" + header[8:]):
        return "header checksum mismatch"
    body_at = offset + HEADER.size + meta_len
    end = body_at + body_len
    if end > size:
        return "record cut short"
    meta_bytes = file.read(meta_len)
    if len(meta_bytes) < meta_len:  # the file shrank under a read-only replay
        return "record cut short"
    if zlib.crc32(meta_bytes) != meta_crc:
        return "metadata checksum mismatch"
    try:
        meta = json.loads(meta_bytes)
    except ValueError:
        return "metadata is not JSON"
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), str):
        return "metadata without an id"
    return _Parsed(RecordKind(kind), meta, body_at, body_len, body_crc, end)


def _resynchronise(file: BinaryIO, start: int, size: int) -> int | None:
    """The first offset from ``start`` on that holds a whole record, or None. Only
    offsets where the magic occurs are tried, so a stray magic (in a body, or in the
    damage itself) is passed over unless a sound header and metadata checksum follow."""
    position = start
    while position < size:
        file.seek(position)
        chunk = file.read(_CHUNK)
        if not chunk:
            return None
        at = chunk.find(MAGIC)
        while at != -1:
            if not isinstance(_parse_record(file, position + at, size), str):
                return position + at
            at = chunk.find(MAGIC, at + 1)
        # A magic split across chunks starts in the last len(MAGIC) - 1 octets: read
        # those again with the next chunk.
        position += max(len(chunk) - (len(MAGIC) - 1), 1)
    return None


def _copy_range(source_path: Path, start: int, end: int, target_path: Path, *, sync: bool) -> None:
    with open(source_path, "rb") as source, open(target_path, "wb") as target:
        source.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = source.read(min(remaining, _CHUNK))
            if not chunk:
                break
            target.write(chunk)
            remaining -= len(chunk)
        if sync:
            target.flush()
            os.fsync(target.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

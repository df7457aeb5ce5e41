"""The spool's store on the local journal: every message's state in memory, every change a
journal record, bodies in the journal's segments (:mod:`smtpx.spool.journal`).

It keeps the index (``messages``, rebuilt at start by replaying the journal record by
record), counts the live bodies of each segment so that segments nothing needs are
deleted (a prefix at a time), and compacts: when most of the sealed segments' space is
dead, the live messages of the oldest one are copied forward. It knows nothing of
scheduling, delivery or notices: the spool's other parts call it.

Writes: :meth:`write` (new messages) returns once they are durable; :meth:`update` and
:meth:`forget` queue a record at once, in call order (:meth:`update_durably` waits).

What is due: every write and update of a message to try now (SEND_NOW) or later
(SEND_AT) is noted; :meth:`claim_due` hands the due ones to the scheduler (SENDING),
:meth:`next_due` says when the next one falls due, and ``wakeup`` is set when one may be
due sooner than the scheduler thinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpx.client import WireFile
from smtpx.content import SpilledMessage
from smtpx.io.tasks import cancel_and_wait
from smtpx.protocol.data import dot_unstuff, stored_form
from smtpx.spool.journal import (
    BodyDamaged,
    Journal,
    JournalProblem,
    Location,
    Record,
    RecordKind,
    Replay,
)
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.records import NotCached, StoredBody, stored_head
from smtpx.spool.store import HEAD_LIMIT
from smtpx.spool.types import SpoolConfig

__all__ = ["NOWHERE", "JournalStore"]

log = logging.getLogger("smtpx.spool")

COMPACTION_BATCH = 256  # messages copied forward per journal append
NOWHERE = Location(0, 0, 0)  # an entry's location until its record is written
CHECK_HERE_MAX = 256 * 1024  # octets of bodies checked on the loop when all are cached

OnDamaged = Callable[[SpooledMessage, BodyDamaged], Awaitable[None]]


class JournalStore:
    """Messages and their bodies in one spool directory (one process at a time)."""

    def __init__(self, config: SpoolConfig, stats: MutableMapping[str, int]) -> None:
        self.config = config
        self.stats = stats  # "compacted" is counted here
        self.journal = Journal(
            config.directory, fsync=config.fsync, segment_size=config.segment_size
        )
        self.journal.on_new_segment = self._on_new_segment
        self.messages: dict[str, SpooledMessage] = {}
        self.problems: list[JournalProblem] = []
        # Called when compaction finds a body damaged (the spool quarantines it).
        self.on_damaged: OnDamaged | None = None
        # Live message bodies per journal segment (count, octets): what keeps it on disk.
        self._live: dict[int, list[int]] = {}
        # Whether collect_segments may find something: a sealed segment lost a body, or
        # the journal rolled, since it last looked (or a pin held a segment back then).
        # The segment being written is never deleted or compacted: a relay that keeps
        # up empties it at nearly every delivery, and need not list the directory.
        self._to_collect = True
        self._compaction: asyncio.Task[int] | None = None
        self._closing = False
        # What is due: ids to try now, and (due time, sequence, id) of those to try later.
        self._now: deque[str] = deque()
        self._later: list[tuple[float, int, str]] = []
        self._seq = 0
        self.wakeup = asyncio.Event()

    # -- life ---------------------------------------------------------------------------

    async def open(self) -> str:
        """Replay the journal into the index; what replay found is in ``problems``. A
        line for the log: what was loaded."""
        replay = _EntryReplay()
        await asyncio.get_running_loop().run_in_executor(None, self.journal.open, replay)
        self.problems = replay.problems
        # The same dict, filled: the scheduler and admin hold it.
        self.messages.clear()
        self.messages.update(replay.entries)
        replay.entries = {}
        for location in replay.unreadable.values():
            self._hold(location)  # never deleted: a newer smtpx may read it
        for message in self.messages.values():
            self._hold(message.location)
            if message.status is Status.SENDING:  # cut off by a crash: try again
                message.status = Status.SEND_NOW
            self._track(message)
        self.collect_segments()
        found = f"{replay.records} records in {replay.segments} segments"
        return f"{len(self.messages)} messages ({found})"

    async def close(self) -> None:
        self._closing = True
        if self._compaction is not None:
            await cancel_and_wait([self._compaction])
        await self.journal.aclose()

    # -- writing ------------------------------------------------------------------------

    async def write(
        self, entries: list[SpooledMessage], contents: list[bytes | SpilledMessage]
    ) -> None:
        """Store new messages with their content (raw, not dot-stuffed); returns once
        they are durable, with each entry's ``location`` set and the entry indexed."""
        records = []
        for entry, content in zip(entries, contents, strict=True):
            # Stored wire-ready: dot-stuffed with CRLF, without the final ".CRLF"; a
            # spilled message is copied from its file a chunk at a time.
            if isinstance(content, bytes):
                body = stored_form(content)
                records.append(Record(RecordKind.MESSAGE, entry.to_meta(), body))
            else:
                records.append(Record(RecordKind.MESSAGE, entry.to_meta(), stream=content))
        locations = await self.journal.append(records)
        for entry, location in zip(entries, locations, strict=True):
            assert location is not None
            entry.location = location
            self.messages[entry.id] = entry
            self._hold(location)
            self._track(entry)

    def update(self, entry: SpooledMessage) -> None:
        """Record ``entry``'s new state (queued now, durable soon)."""
        self._append_nowait([Record(RecordKind.UPDATE, entry.state_meta())])
        self._track(entry)

    async def update_durably(self, entry: SpooledMessage) -> None:
        """Record ``entry``'s new state; return once it is on disk."""
        await self.journal.append([Record(RecordKind.UPDATE, entry.state_meta())])
        self._track(entry)

    # -- what is due --------------------------------------------------------------------

    def _track(self, entry: SpooledMessage) -> None:
        """Note when ``entry`` is due, if it is to be tried at all."""
        if entry.status is Status.SEND_NOW:
            self._now.append(entry.id)
        elif entry.status is Status.SEND_AT and entry.next_attempt is not None:
            self._seq += 1
            heapq.heappush(self._later, (entry.next_attempt, self._seq, entry.id))
            if self._later[0][1] != self._seq:
                # Not the earliest: the scheduler waits for an earlier one already (or
                # has yet to ask next_due()), and looks again then. Mail spooled
                # deferred to a suspended destination wakes it no more per message.
                return
        else:
            return
        self.wakeup.set()

    async def claim_due(self, now: float) -> list[SpooledMessage]:
        """The messages due at ``now``, oldest notes first, now SENDING (this process is
        the only one working on them)."""
        claimed = []
        while self._now:
            entry = self.messages.get(self._now.popleft())
            if entry is not None and entry.status is Status.SEND_NOW:
                entry.status = Status.SENDING
                claimed.append(entry)
        while self._later and self._later[0][0] <= now:
            due, _, message_id = heapq.heappop(self._later)
            entry = self.messages.get(message_id)
            # A stale note (rescheduled, frozen, delivered since) is skipped.
            if entry is not None and entry.status is Status.SEND_AT and entry.next_attempt == due:
                entry.status = Status.SENDING
                claimed.append(entry)
        return claimed

    async def next_due(self) -> float | None:
        """When the next noted message falls due (None: nothing is waiting)."""
        if self._now:
            return float("-inf")
        return self._later[0][0] if self._later else None

    def forget(self, entry: SpooledMessage) -> None:
        """``entry`` is done (delivered): out of the index, its body's space released."""
        del self.messages[entry.id]
        self._append_nowait([Record(RecordKind.FORGET, {"v": 1, "id": entry.id})])
        if self._release(entry.location):
            self.collect_segments()

    async def purge(self, entry: SpooledMessage) -> bool:
        """Forget ``entry`` for good, durably; False when it was gone already."""
        if self.messages.pop(entry.id, None) is None:
            return False
        self._release(entry.location)
        await self.journal.append([Record(RecordKind.FORGET, {"v": 1, "id": entry.id})])
        return True

    def _append_nowait(self, records: list[Record]) -> None:
        # Queued now, not in a task of its own: a record written later (an admin freeze
        # in the same loop turn) must land after it, or a restart would undo it.
        self.journal.append_nowait(records).add_done_callback(_log_failure)

    # -- bodies -------------------------------------------------------------------------

    ready = True  # (open: the journal is on the local disk)

    def refusing(self) -> bool:
        """Writes are refused right now (just after a disk failure)."""
        return self.journal.refusing()

    async def find(self, message_id: str) -> SpooledMessage | None:
        return self.messages.get(message_id)

    async def all(self) -> list[SpooledMessage]:
        return list(self.messages.values())

    async def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for message in self.messages.values():
            counts[message.status.value] = counts.get(message.status.value, 0) + 1
        return counts

    async def check(self, entries: list[SpooledMessage]) -> list[BodyDamaged | None]:
        """What is wrong with each entry's body (None: sound): read here when every
        octet is in the page cache (bodies just written, the relay's usual case: a
        worker thread's round trip costs more than the reads), else in a thread."""
        locations = [entry.location for entry in entries]
        if sum(location.length for location in locations) <= CHECK_HERE_MAX:
            with contextlib.suppress(NotCached):
                return self.journal.check_bodies(locations, cached_only=True)
        return await asyncio.to_thread(self.journal.check_bodies, locations)

    async def read(self, entry: SpooledMessage) -> bytes:
        """The message as received, checked (:class:`BodyDamaged`)."""
        body = await asyncio.to_thread(self.journal.read_body, entry.location)
        return dot_unstuff(body)

    async def inspect(self, entry: SpooledMessage) -> tuple[bytes, BodyDamaged | None]:
        """The message as stored, damaged or not, and what is wrong with it."""
        body, damage = await asyncio.to_thread(self.journal.read_body_raw, entry.location)
        return dot_unstuff(body), damage

    async def damage(self, entry: SpooledMessage) -> BodyDamaged | None:
        (found,) = await self.check([entry])
        return found

    async def head(self, entry: SpooledMessage) -> bytes:
        with self.journal.pinned(entry.location.segment) as path:
            return await asyncio.to_thread(stored_head, path, entry.location, HEAD_LIMIT)

    def content(self, entry: SpooledMessage) -> AbstractAsyncContextManager[StoredBody]:
        """The message read from its segment a chunk at a time (nothing is read here),
        the segment kept from compaction meanwhile."""
        return _PinnedContent(self.journal, entry.location)

    def body(self, entry: SpooledMessage) -> WireFile:
        """The stored body, ready for ``sendfile`` (keep it :meth:`pinned` meanwhile)."""
        path = self.journal.segment_path(entry.location.segment)
        return WireFile(path, entry.location.length, entry.location.offset)

    @contextlib.contextmanager
    def pinned(self, entries: list[SpooledMessage]) -> Iterator[None]:
        """Keep the entries' segments from compaction while the block runs."""
        journal = self.journal
        segments = [entry.location.segment for entry in entries]
        for segment in segments:
            journal.pin(segment)
        try:
            yield
        finally:
            for segment in segments:
                journal.unpin(segment)

    # -- disk space ---------------------------------------------------------------------

    def _hold(self, location: Location) -> None:
        held = self._live.setdefault(location.segment, [0, 0])
        held[0] += 1
        held[1] += location.length

    def _release(self, location: Location) -> bool:
        """Forget one live body; True when its segment holds no live body any more."""
        held = self._live.get(location.segment)
        if held is None:
            return False
        held[0] -= 1
        held[1] -= location.length
        if location.segment != self.journal.current_segment:
            self._to_collect = True
        if held[0] > 0:
            return False
        del self._live[location.segment]
        return True

    def _on_new_segment(self) -> None:
        self._to_collect = True  # the segment written until now is sealed
        if not self._closing:
            self.collect_segments()

    def collect_segments(self) -> None:
        """Delete the segments nothing needs any more; start a compaction when most of
        what the kept ones hold is dead. Nothing to do unless a sealed segment lost a
        body or the journal rolled since the last time."""
        if not self._to_collect:
            return
        # A pinned sealed segment (being read) is kept now and looked at again next time.
        self._to_collect = self.journal.pins_sealed()
        dead = self.journal.removable_segments(set(self._live))
        if dead:
            self.journal.delete_segments(dead)
        if self._closing or (self._compaction is not None and not self._compaction.done()):
            self._to_collect = True  # the compaction check is still owed
            return
        if self._worth_compacting():
            self._compaction = asyncio.get_running_loop().create_task(self.compact())
            self._compaction.add_done_callback(_log_failure)

    def _worth_compacting(self) -> bool:
        """At least two sealed segments, more than half of them dead: one old message
        (frozen, say) must not keep gigabytes of delivered mail on disk."""
        sealed = [n for n in self.journal.segment_numbers() if n != self.journal.current_segment]
        if len(sealed) < 2:
            return False
        size = 0
        for number in sealed:
            with contextlib.suppress(FileNotFoundError):
                size += self.journal.segment_path(number).stat().st_size
        live = sum(self._live.get(number, (0, 0))[1] for number in sealed)
        return live * 2 < size

    def _read_raw(self, entries: list[SpooledMessage]) -> list[tuple[bytes, BodyDamaged | None]]:
        return [self.journal.read_body_raw(entry.location) for entry in entries]

    async def compact(self) -> int:
        """Copy the live messages of the oldest sealed segment to the end of the journal
        (a new message record with their current state), so that it, and the dead
        segments behind it, can be deleted. Returns how many messages were copied.

        Safe against everything running meanwhile: a message delivered before its copy is
        appended is not copied; one delivered after has its forget record after the copy.
        """
        sealed = [n for n in self.journal.segment_numbers() if n != self.journal.current_segment]
        if not sealed:
            return 0
        oldest = sealed[0]
        entries = [e for e in self.messages.values() if e.location.segment == oldest]
        copied = 0
        for start in range(0, len(entries), COMPACTION_BATCH):
            chunk = entries[start : start + COMPACTION_BATCH]
            with self.journal.pinned(oldest):
                bodies = await asyncio.to_thread(self._read_raw, chunk)
            copied += await self._copy_forward(oldest, chunk, bodies)
            await self._report_damage(chunk, bodies)
        self.stats["compacted"] += copied
        log.info("spool: compaction copied %d messages out of segment %d", copied, oldest)
        if copied:  # (else what holds it cannot move: messages a newer smtpx wrote)
            self.collect_segments()
        return copied

    async def _copy_forward(
        self,
        oldest: int,
        chunk: list[SpooledMessage],
        bodies: list[tuple[bytes, BodyDamaged | None]],
    ) -> int:
        # No await between this check and the append call: the journal's order is the
        # order of these lines.
        kept = [
            (entry, body)
            for entry, (body, _) in zip(chunk, bodies, strict=True)
            if self.messages.get(entry.id) is entry and entry.location.segment == oldest
        ]
        if not kept:
            return 0
        # The copy keeps the original checksum: a damaged body stays detectably so.
        locations = await self.journal.append(
            [
                Record(RecordKind.MESSAGE, entry.to_meta(), body, entry.location.crc)
                for entry, body in kept
            ]
        )
        for (entry, _), location in zip(kept, locations, strict=True):
            assert location is not None
            if self.messages.get(entry.id) is entry:
                self._release(entry.location)
                entry.location = location
                self._hold(location)
        return len(kept)

    async def _report_damage(
        self, chunk: list[SpooledMessage], bodies: list[tuple[bytes, BodyDamaged | None]]
    ) -> None:
        if self.on_damaged is None:
            return
        for entry, (_, damage) in zip(chunk, bodies, strict=True):
            # (a message being sent is checked, and quarantined, by its delivery)
            idle = entry.status not in (Status.QUARANTINED, Status.SENDING)
            if damage is not None and idle and self.messages.get(entry.id) is entry:
                await self.on_damaged(entry, damage)

    # -- offline -------------------------------------------------------------------------

    @staticmethod
    def status_from_disk(directory: str | Path) -> list[SpooledMessage]:
        """Read the spool's journal without taking its lock (a live spool may be
        appending: its newest records may be missed, never misread)."""
        replay = _EntryReplay()
        Journal(directory).replay_readonly(replay)
        return sorted(replay.entries.values(), key=lambda m: (m.spool_date, m.id))


class _PinnedContent:
    """The stored body of the message at ``location``, its segment kept from compaction
    from entering the block to leaving it (a class: the compiled build has no async
    generators, so no ``asynccontextmanager``)."""

    def __init__(self, journal: Journal, location: Location) -> None:
        self._journal = journal
        self._location = location

    async def __aenter__(self) -> StoredBody:
        segment = self._location.segment
        self._journal.pin(segment)
        return StoredBody(self._journal.segment_path(segment), self._location)

    async def __aexit__(self, *exc_info: object) -> None:
        self._journal.unpin(self._location.segment)


@dataclass
class _EntryReplay(Replay):
    """Builds the spool's entries record by record (no metadata dict outlives its
    record: the peak memory of a restart is the entries themselves)."""

    entries: dict[str, SpooledMessage] = field(default_factory=dict)
    # Messages this version cannot read (written by a newer one): not loaded, but their
    # bodies stay on disk (the spool holds these locations) for a version that can.
    unreadable: dict[str, Location] = field(default_factory=dict)

    def message(self, meta: dict[str, Any], location: Location) -> None:
        message_id = meta["id"]
        self.unreadable.pop(message_id, None)
        try:
            self.entries[message_id] = SpooledMessage.from_meta(meta, location)
        except (KeyError, ValueError, TypeError) as exc:
            self.entries.pop(message_id, None)
            self._unreadable(message_id, location, exc)

    def update(self, meta: dict[str, Any]) -> None:
        entry = self.entries.get(meta["id"])
        if entry is None:
            return
        try:
            entry.apply_state(meta)
        except (KeyError, ValueError, TypeError) as exc:
            del self.entries[entry.id]
            self._unreadable(entry.id, entry.location, exc)

    def forget(self, message_id: str) -> None:
        self.entries.pop(message_id, None)
        self.unreadable.pop(message_id, None)

    def knows(self, message_id: str) -> bool:
        return message_id in self.entries or message_id in self.unreadable

    def _unreadable(self, message_id: str, location: Location, exc: Exception) -> None:
        self.unreadable[message_id] = location
        description = f"unreadable entry {message_id}: {exc} (kept on disk, not delivered)"
        self.problems.append(JournalProblem(location.segment, location.offset, description))


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("journal append failed", exc_info=task.exception())

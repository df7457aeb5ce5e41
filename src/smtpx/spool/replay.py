"""Reading a journal back: every segment in order, checked against the manifest.

Replay reads the segments the manifest says must exist, each up to its sealed length, and
hands the records to a :class:`Replay` (the last record for an id wins). It reports, as
:class:`JournalProblem` values (and in the log):

* ``missing-segment``: a segment the manifest expects is not there (lost, or deleted by hand);
* ``truncated-segment``: a sealed segment is shorter than when it was sealed;
* ``lost-records``: messages whose state records replay met, but whose message record it
  never did (it was in a missing, truncated or damaged part): named by id;
* ``damaged``: a record that cannot be read. Replay resynchronises on the next offset that
  holds a whole record (the magic, a sound header and metadata whose checksum matches) and
  goes on, so one bad sector costs the records it hit and no more. The damaged octets are
  copied to ``corrupt/<segment file>-<offset>.damaged`` once;
* ``torn-tail``: damage at the end of the last segment with nothing readable after it,
  the end of a batch that was never acknowledged (a crash before its fsync): moved to
  ``corrupt/`` and cut off so appends go on from a record boundary;
* ``void``: octets past a segment's sealed length (a group whose write or fsync failed,
  never acknowledged): moved to ``corrupt/`` and cut off;
* ``manifest``: the manifest is unreadable (it is rebuilt from the segments found).

The first four are errors (acknowledged mail may be gone); the others are warnings.
Bodies are not read at replay: every read for use checks them (:mod:`smtpx.spool.records`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpx.spool.manifest import Manifest, ManifestError, load_manifest
from smtpx.spool.records import (
    CHUNK,
    Location,
    Parsed,
    RecordKind,
    parse_record,
    resynchronise,
)

__all__ = ["SEGMENT_SUFFIX", "JournalProblem", "Replay", "segment_numbers"]

log = logging.getLogger("smtpx.spool")

SEGMENT_SUFFIX = ".sxj"
ERRORS = frozenset({"missing-segment", "truncated-segment", "lost-records", "damaged"})


@dataclass(frozen=True, slots=True)
class JournalProblem:
    """Something replay found wrong; ``saved`` is where the damaged bytes were kept,
    ``ids`` the messages it can tell are affected."""

    segment: int
    offset: int
    description: str
    saved: str | None = None
    kind: str = "damaged"
    ids: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        """Acknowledged mail may be lost (not only unacknowledged octets cut off)."""
        return self.kind in ERRORS


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
    # Ids whose latest record is a state change for a message replay never met.
    orphans: set[str] = field(default_factory=set)

    def message(self, meta: dict[str, Any], location: Location) -> None:
        self.messages[meta["id"]] = (meta, location)

    def update(self, meta: dict[str, Any]) -> None:
        known = self.messages.get(meta["id"])
        if known is not None:
            self.messages[meta["id"]] = ({**known[0], **meta}, known[1])

    def forget(self, message_id: str) -> None:
        self.messages.pop(message_id, None)

    def knows(self, message_id: str) -> bool:
        return message_id in self.messages


def segment_numbers(journal_dir: Path) -> list[int]:
    numbers = []
    for path in journal_dir.glob(f"*{SEGMENT_SUFFIX}"):
        with contextlib.suppress(ValueError):
            numbers.append(int(path.stem))
    return sorted(numbers)


def segment_path(journal_dir: Path, number: int) -> Path:
    return journal_dir / f"{number:08d}{SEGMENT_SUFFIX}"


@dataclass
class Replayer:
    """Replays one journal directory into ``replay``; with ``repair`` (the owner of the
    lock, at start) it also moves damage aside and cuts torn tails and void octets."""

    journal_dir: Path
    corrupt_dir: Path
    replay: Replay
    repair: bool
    sync: bool = True

    def run(self) -> Manifest:
        """Replay everything; the manifest to go on with (adjusted to what was found)."""
        manifest = self._manifest()
        if manifest is None:  # a new spool
            return Manifest()
        found = segment_numbers(self.journal_dir)
        self._drop_stale([n for n in found if n < manifest.first])
        self._adopt(manifest, [n for n in found if n > manifest.current])
        present = set(found)
        wanted = list(manifest.expected())
        for number in wanted:
            if number not in present:
                self._problem(number, 0, "missing-segment", f"segment {number} is missing")
        readable = [n for n in wanted if n in present]
        for i, number in enumerate(readable):
            self._segment(number, manifest.sealed.get(number), last=i == len(readable) - 1)
        self.replay.segments = len(readable)
        if self.replay.orphans:
            self._lost_records()
        return manifest

    # -- the manifest ----------------------------------------------------------------------

    def _manifest(self) -> Manifest | None:
        try:
            manifest = load_manifest(self.journal_dir)
        except ManifestError as exc:
            self._problem(0, 0, "manifest", f"{exc}; rebuilt from the segments found")
            manifest = None
        if manifest is not None:
            return manifest
        # A new spool, or one from before manifests: every segment between the oldest and
        # the newest must be there (compaction only ever deleted the oldest ones).
        found = segment_numbers(self.journal_dir)
        if not found:
            return None
        sizes = {n: segment_path(self.journal_dir, n).stat().st_size for n in found[:-1]}
        return Manifest(found[0], found[-1], sizes)

    def _adopt(self, manifest: Manifest, newer: list[int]) -> None:
        """Segments past ``current``: created, then a crash before the manifest said so
        (one at most, in practice). The ones before the newest are sealed as they are."""
        if not newer:
            return
        for number in [manifest.current, *newer[:-1]]:
            path = segment_path(self.journal_dir, number)
            if number not in manifest.sealed and path.exists():
                manifest.sealed[number] = path.stat().st_size
        manifest.current = newer[-1]

    def _drop_stale(self, numbers: list[int]) -> None:
        """Segments below ``first``: compaction recorded them gone, then stopped (a
        crash) before deleting them. Dead by construction."""
        if not self.repair:
            return
        for number in numbers:
            with contextlib.suppress(FileNotFoundError):
                segment_path(self.journal_dir, number).unlink()
            log.info("spool replay: removed segment %d, compacted away before a restart", number)

    # -- one segment -----------------------------------------------------------------------

    def _segment(self, number: int, sealed: int | None, *, last: bool) -> None:
        path = segment_path(self.journal_dir, number)
        size = path.stat().st_size
        if sealed is not None and size < sealed:
            self._problem(
                number,
                size,
                "truncated-segment",
                f"segment {number} is truncated: {size} of its {sealed} octets are there",
            )
        elif sealed is not None and size > sealed:
            self._void(path, number, sealed, size)
            size = sealed
        with open(path, "rb") as file:
            offset = 0
            while offset < size:
                parsed = parse_record(file, offset, size)
                if isinstance(parsed, str):
                    resume = resynchronise(file, offset + 1, size)
                    self._damage(path, number, offset, resume, size=size, problem=parsed, last=last)
                    if resume is None:
                        return
                    offset = resume
                    continue
                self._record(number, parsed)
                offset = parsed.end

    def _record(self, number: int, parsed: Parsed) -> None:
        replay = self.replay
        message_id = parsed.meta["id"]
        if parsed.kind == RecordKind.MESSAGE:
            replay.orphans.discard(message_id)
            location = Location(number, parsed.body_at, parsed.body_len, parsed.body_crc)
            replay.message(parsed.meta, location)
        elif parsed.kind == RecordKind.UPDATE:
            if replay.knows(message_id):
                replay.update(parsed.meta)
            else:
                replay.orphans.add(message_id)
        else:
            replay.orphans.discard(message_id)
            replay.forget(message_id)
        replay.records += 1

    # -- what is wrong ---------------------------------------------------------------------

    def _problem(
        self,
        segment: int,
        offset: int,
        kind: str,
        description: str,
        *,
        saved: str | None = None,
        ids: tuple[str, ...] = (),
    ) -> JournalProblem:
        problem = JournalProblem(segment, offset, description, saved, kind, ids)
        self.replay.problems.append(problem)
        if self.repair:
            level = logging.ERROR if problem.is_error else logging.WARNING
            log.log(level, "spool replay: %s", description)
        return problem

    def _lost_records(self) -> None:
        ids = tuple(sorted(self.replay.orphans))
        shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
        self._problem(
            0,
            0,
            "lost-records",
            f"{len(ids)} messages have state records but no message record (lost with "
            f"missing or damaged journal data): {shown}",
            ids=ids,
        )

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
    ) -> None:
        """Report the damage from ``offset`` to ``resume`` (None: to the end of the
        segment); when repairing, keep its octets in corrupt/ and cut a torn tail."""
        end = size if resume is None else resume
        where = f"segment {number} offset {offset}: {problem}; {end - offset} octets"
        if resume is None:
            where += " to the end of the segment (nothing readable follows)"
        else:
            where += f" skipped, replay resumed at offset {resume}"
        if not self.repair:
            self._problem(number, offset, "damaged", where)
            return
        if resume is None and last:
            saved = self._cut(path, offset, size, "tail")
            self._problem(
                number,
                offset,
                "torn-tail",
                f"{where} (an unacknowledged tail) moved to {saved}",
                saved=str(saved),
            )
            return
        saved_path, copied = self._keep_damaged(path, offset, end)
        description = f"{where}; {'kept' if copied else 'already kept'} in {saved_path}"
        self._problem(number, offset, "damaged", description, saved=str(saved_path))

    def _void(self, path: Path, number: int, sealed: int, size: int) -> None:
        where = (
            f"segment {number}: {size - sealed} octets past its sealed length {sealed} "
            "(a write that failed, never acknowledged)"
        )
        if not self.repair:
            self._problem(number, sealed, "void", where + ": ignored")
            return
        saved = self._cut(path, sealed, size, "void")
        self._problem(number, sealed, "void", f"{where} moved to {saved}", saved=str(saved))

    def _keep_damaged(self, path: Path, start: int, end: int) -> tuple[Path, bool]:
        """Copy the damaged octets to corrupt/ under a name fixed by the segment and the
        offset, unless an earlier replay already did (a sealed segment's damage is met
        again at every start). True when copied now."""
        self.corrupt_dir.mkdir(exist_ok=True)
        saved = self.corrupt_dir / f"{path.name}-{start}.damaged"
        if saved.exists():
            return saved, False
        partial = saved.with_name(saved.name + ".partial")
        copy_range(path, start, end, partial, sync=self.sync)
        os.replace(partial, saved)  # a crash mid-copy leaves no short .damaged behind
        return saved, True

    def _cut(self, path: Path, offset: int, size: int, what: str) -> Path:
        """Keep octets ``offset``..``size`` in corrupt/ and cut them from the segment so
        appends go on from a sound record boundary. The name carries the time: after the
        cut, the next torn tail may well start at the same offset, and must not be lost."""
        self.corrupt_dir.mkdir(exist_ok=True)
        saved = self.corrupt_dir / f"{path.stem}-{offset}-{int(time.time())}.{what}"
        copy_range(path, offset, size, saved, sync=True)  # kept before it is cut
        with open(path, "r+b") as target:
            target.truncate(offset)
            os.fsync(target.fileno())
        return saved


def copy_range(source_path: Path, start: int, end: int, target_path: Path, *, sync: bool) -> None:
    with open(source_path, "rb") as source, open(target_path, "wb") as target:
        source.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = source.read(min(remaining, CHUNK))
            if not chunk:
                break
            target.write(chunk)
            remaining -= len(chunk)
        if sync:
            target.flush()
            os.fsync(target.fileno())

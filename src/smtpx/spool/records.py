"""The journal's record format, and reading records back (no state, no locks).

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
from the segment. ``body_crc`` is the CRC32 of the body: every read of a body for use
checks it (:func:`check_body`; zlib's CRC32 runs near 3 GB/s here, a few microseconds per
message, well under 1% of relaying it).
"""

from __future__ import annotations

import enum
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from smtpx import compactjson
from smtpx.content import header_block
from smtpx.errors import SMTPXError
from smtpx.protocol.data import DotUnstuffer, dot_unstuff

__all__ = [
    "HEADER",
    "MAGIC",
    "BodyDamaged",
    "Location",
    "NotCached",
    "Record",
    "RecordKind",
    "StoreWriteError",
    "StoredBody",
    "WireSource",
    "check_bodies",
    "check_body",
    "encode_head",
    "encode_record",
    "read_body",
    "read_body_raw",
    "stored_head",
]

MAGIC = b"SXJ1"
VERSION = 2  # 1: no header check (still read)
HEADER = struct.Struct("<4sBBHIIII")
CHUNK = 1 << 20  # octets read at a time when scanning, checking or copying
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # reads that refuse to wait for the disk (Linux 4.14+)


class RecordKind(enum.IntEnum):
    MESSAGE = 1
    UPDATE = 2
    FORGET = 3


@dataclass(frozen=True, slots=True, init=False)
class Location:
    """Where a body lies: segment number, offset of its first octet, length, and the
    body's CRC32 (from its record header)."""

    segment: int
    offset: int
    length: int
    crc: int | None = field(default=None, compare=False)

    def __init__(self, segment: int, offset: int, length: int, crc: int | None = None) -> None:
        object.__setattr__(self, "segment", segment)  # (written out, as Record's)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "length", length)
        object.__setattr__(self, "crc", crc)

    def __str__(self) -> str:
        return f"segment {self.segment} offset {self.offset} ({self.length} octets)"


class WireSource(Protocol):
    """A body too big for memory, read a chunk at a time in its stored form (dot-stuffed,
    CRLF, without the final ``.CRLF``): :class:`smtpx.content.SpilledMessage`."""

    def wire_chunks(self) -> Iterator[bytes]: ...


@dataclass(frozen=True, slots=True, init=False)
class Record:
    """One record to append. ``body_crc`` keeps a body's original checksum when it is
    copied forward (compaction), so damage is never laundered into a fresh checksum. A
    MESSAGE record's body is ``body``, or ``stream`` read a chunk at a time when the
    journal writes it (never whole in memory)."""

    kind: RecordKind
    meta: dict[str, Any]
    body: bytes = b""
    body_crc: int | None = None
    stream: WireSource | None = None

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (ten times the cost; docs/performance.md, "Writing code that compiles").
    def __init__(
        self,
        kind: RecordKind,
        meta: dict[str, Any],
        body: bytes = b"",
        body_crc: int | None = None,
        stream: WireSource | None = None,
    ) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "meta", meta)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "body_crc", body_crc)
        object.__setattr__(self, "stream", stream)


class BodyDamaged(SMTPXError):
    """A stored body no longer matches its checksum (or is no longer all there)."""

    def __init__(self, location: Location | str, problem: str) -> None:
        # (a Location in the journal; a message id where bodies are not in files)
        super().__init__(f"body at {location}: {problem}")
        self.location = location
        self.problem = problem


class StoreWriteError(SMTPXError):
    """A spool store could not make new records durable; none of them was kept (the
    journal's disk failed, the database is out of reach): a transaction gets a 4xx."""


def encode_record(record: Record) -> tuple[bytes, int]:
    """The record's bytes, and the offset of its body within them."""
    body_crc = zlib.crc32(record.body) if record.body_crc is None else record.body_crc
    head = encode_head(record, len(record.body), body_crc)
    return head + record.body, len(head)


def encode_head(record: Record, body_len: int, body_crc: int) -> bytes:
    """The record's header and metadata, for a body of ``body_len`` octets."""
    meta = compactjson.dumps(record.meta)
    fields = (len(meta), body_len, zlib.crc32(meta), body_crc)
    unchecked = HEADER.pack(MAGIC, int(record.kind), VERSION, 0, *fields)
    header = HEADER.pack(MAGIC, int(record.kind), VERSION, _header_check(unchecked), *fields)
    return header + meta


def _header_check(header: bytes) -> int:
    """The check of a header whose check field is zero."""
    return zlib.crc32(header) & 0xFFFF


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: RecordKind
    meta: dict[str, Any]
    body_at: int
    body_len: int
    body_crc: int
    end: int


def parse_record(file: BinaryIO, offset: int, size: int) -> Parsed | str:
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
        meta = compactjson.loads(meta_bytes)
    except ValueError:
        return "metadata is not JSON"
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), str):
        return "metadata without an id"
    return Parsed(RecordKind(kind), meta, body_at, body_len, body_crc, end)


def resynchronise(file: BinaryIO, start: int, size: int) -> int | None:
    """The first offset from ``start`` on that holds a whole record, or None. Only
    offsets where the magic occurs are tried, so a stray magic (in a body, or in the
    damage itself) is passed over unless a sound header and metadata checksum follow."""
    position = start
    while position < size:
        file.seek(position)
        chunk = file.read(CHUNK)
        if not chunk:
            return None
        at = chunk.find(MAGIC)
        while at != -1:
            if not isinstance(parse_record(file, position + at, size), str):
                return position + at
            at = chunk.find(MAGIC, at + 1)
        # A magic split across chunks starts in the last len(MAGIC) - 1 octets: read
        # those again with the next chunk.
        position += max(len(chunk) - (len(MAGIC) - 1), 1)
    return None


def read_body(path: Path, location: Location) -> bytes:
    """The body at ``location`` of the segment file ``path``, checked against its CRC."""
    data, damage = read_body_raw(path, location)
    if damage is not None:
        raise damage
    return data


def read_body_raw(path: Path, location: Location) -> tuple[bytes, BodyDamaged | None]:
    """The octets at ``location`` as they are, and what is wrong with them (None: they
    match the CRC)."""
    try:
        with open(path, "rb") as file:
            file.seek(location.offset)
            data = file.read(location.length)
    except FileNotFoundError:
        return b"", BodyDamaged(location, "its segment file is gone")
    try:
        _judge(location, len(data), zlib.crc32(data))
    except BodyDamaged as damage:
        return data, damage
    return data, None


def check_body(path: Path, location: Location) -> None:
    """Check the body at ``location`` against its CRC, reading it a chunk at a time
    (memory stays flat whatever the size). Raises :class:`BodyDamaged`."""
    (damage,) = check_bodies(lambda _: path, [location])
    if damage is not None:
        raise damage


class StoredBody:
    """The message whose body is at ``location`` of the segment file ``path``, read a
    chunk at a time (a :class:`smtpx.content.Chunked`): dot-unstuffed as it goes, and
    checked against its CRC, the last chunk held back until the whole body matched
    (:class:`BodyDamaged` otherwise). Memory stays at a chunk or two whatever the size.
    The segment must stay (``Journal.pinned``) while it is read."""

    __slots__ = ("location", "path")

    def __init__(self, path: Path, location: Location) -> None:
        self.path = path
        self.location = location

    def __repr__(self) -> str:
        return f"StoredBody({self.path.name}, {self.location})"

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        location = self.location
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BodyDamaged(location, "its segment file is gone") from None
        try:
            decoder = DotUnstuffer()
            crc = seen = 0
            held = b""
            for chunk in _stored(fd, location, size):
                crc = zlib.crc32(chunk, crc)
                seen += len(chunk)
                decoded = decoder.decode(bytes(chunk))  # (bytes already: not copied)
                if decoded:  # (a lone CR is held by the decoder: nothing to give yet)
                    if held:
                        yield held
                    held = decoded
            _judge(location, seen, crc)
        finally:
            os.close(fd)
        held += decoder.end()
        if held:
            yield held


def stored_head(path: Path, location: Location, limit: int) -> bytes:
    """The header section of the message at ``location`` (with its blank line), or its
    first ``limit`` octets when that ends later; unchecked (a damaged body has fields
    too), empty when the segment is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        stored = os.pread(fd, min(limit, location.length), location.offset)
    finally:
        os.close(fd)
    return header_block(dot_unstuff(stored))  # (a cut chunk unstuffs as well as a whole)


class NotCached(Exception):
    """Some octets asked for with ``cached_only`` are not in the page cache (or the file
    system cannot tell): read them where a wait on the disk does no harm."""


def check_bodies(
    segment_path: Callable[[int], Path],
    locations: Sequence[Location],
    *,
    cached_only: bool = False,
) -> list[BodyDamaged | None]:
    """What is wrong with each body (None: it matches its CRC). Each segment file is
    opened once (an ``open`` costs several times the read and CRC of a 4 KB body).

    With ``cached_only``, every read is made with ``RWF_NOWAIT`` and :class:`NotCached`
    is raised as soon as one would wait for the disk (or comes back short): so that the
    event loop can check bodies that were just written without a worker thread, and
    leaves the others to one."""
    if cached_only and not _NOWAIT:
        raise NotCached("no RWF_NOWAIT here")
    found: list[BodyDamaged | None] = []
    files: dict[int, int | None] = {}
    try:
        for location in locations:
            if location.segment not in files:
                try:
                    files[location.segment] = os.open(segment_path(location.segment), os.O_RDONLY)
                except FileNotFoundError:
                    files[location.segment] = None
            fd = files[location.segment]
            if fd is None:
                found.append(BodyDamaged(location, "its segment file is gone"))
                continue
            try:
                _judge(location, *_crc_at(fd, location, cached_only))
            except BodyDamaged as damage:
                found.append(damage)
            else:
                found.append(None)
    finally:
        for fd in files.values():
            if fd is not None:
                os.close(fd)
    return found


def _crc_at(fd: int, location: Location, cached_only: bool = False) -> tuple[int, int]:
    """The octets found at ``location`` (up to its length) and their CRC32."""
    crc = 0
    seen = 0
    for chunk in _stored(fd, location, CHUNK, cached_only):
        crc = zlib.crc32(chunk, crc)
        seen += len(chunk)
    return seen, crc


def _stored(
    fd: int, location: Location, size: int, cached_only: bool = False
) -> Iterator[bytes | bytearray]:
    """The octets at ``location`` of the open segment ``fd``, ``size`` at a time, until
    its length or the file's end; with ``cached_only`` from the page cache only
    (:class:`NotCached` otherwise)."""
    seen = 0
    while seen < location.length:
        want = min(size, location.length - seen)
        chunk: bytes | bytearray
        if cached_only:
            chunk = _cached(fd, want, location.offset + seen)
        else:
            chunk = os.pread(fd, want, location.offset + seen)
        if not chunk:
            return
        yield chunk
        seen += len(chunk)


def _cached(fd: int, size: int, offset: int) -> bytearray:
    """``size`` octets at ``offset``, all from the page cache, or :class:`NotCached`
    (a short read too: the rest may be on the disk only, or past the end). The buffer
    itself: the CRC reads it as it is, no copy."""
    buffer = bytearray(size)
    try:
        got = os.preadv(fd, [buffer], offset, _NOWAIT)
    except OSError as exc:  # EAGAIN: not cached; EOPNOTSUPP: cannot tell
        raise NotCached(str(exc)) from exc
    if got != size:
        raise NotCached(f"{got} of {size} octets")
    return buffer


def _judge(location: Location, seen: int, crc: int) -> None:
    if seen < location.length:
        raise BodyDamaged(location, f"only {seen} of {location.length} octets are there")
    if location.crc is not None and crc != location.crc:
        raise BodyDamaged(
            location, f"checksum mismatch (stored {location.crc:08x}, read {crc:08x})"
        )

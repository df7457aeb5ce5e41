"""Message content too big to keep in memory: a file, and octets added in front of it.

The server keeps a message's content in memory up to a threshold, then writes the rest to
an anonymous temporary file (:class:`Spill`): 8 sessions sending 34 MB each must not cost
270 MB of memory. The result is a :class:`SpilledMessage`, the raw message (CRLF line
endings, not dot-stuffed) as ``head`` followed by the file's octets. A Received header
added in front is a new ``head``: the file is shared, never copied. Everything that needs
the content reads it a chunk at a time (:meth:`SpilledMessage.chunks`, or
:meth:`SpilledMessage.wire_chunks` for the dot-stuffed form the spool stores); reading it
whole (:meth:`SpilledMessage.read`) is there for plugins that ask for ``envelope.message``.

The file has no name (``O_TMPFILE`` where the system has it): nothing is left behind by a
crash. Its owner (the server session) closes it once the plugin's ``process`` returns;
reading a :class:`SpilledMessage` after that raises :class:`SpillClosed` (never another
file's octets). A plugin that keeps an envelope for later keeps
``envelope.in_memory()``.

Whatever keeps a message (bytes, a :class:`SpilledMessage`, a body in the spool's
journal) is read the same way: :data:`Content` is bytes or anything :class:`Chunked`,
and :func:`chunks_of` (:func:`chunks_in_thread` on the event loop, :func:`read_chunks`
to tell a read error from the writer's own) gives its chunks. :func:`header_block` cuts
a message's start at the blank line.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol, TypeAlias, TypeVar

from smtpx.errors import SMTPXError
from smtpx.protocol.data import DotStuffer, is_wire_form

__all__ = [
    "CHUNK",
    "Chunked",
    "Content",
    "ContentUnreadable",
    "Spill",
    "SpillClosed",
    "SpillFile",
    "SpilledMessage",
    "chunks_in_thread",
    "chunks_of",
    "header_block",
    "read_chunks",
    "read_with",
    "write_all",
]

CHUNK = 1 << 20  # octets read or written at a time
T = TypeVar("T")


class Chunked(Protocol):
    """Content read a chunk at a time (:class:`SpilledMessage`, a body in the spool)."""

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The raw message (CRLF line endings, not dot-stuffed), from its start, in chunks
        of at most about ``size`` octets; may be called again for another pass. Raises
        (``OSError``, a damaged body's error) before the last chunk when it cannot give
        the whole content: a reader that commits only after the last chunk never
        commits a part."""
        ...


# A message's content, whole in memory or read a chunk at a time.
Content: TypeAlias = bytes | Chunked


def chunks_of(content: Content, size: int = CHUNK) -> Iterator[bytes]:
    """``content`` a chunk at a time, however it is kept."""
    if isinstance(content, bytes):
        for start in range(0, len(content), size):
            yield content[start : start + size]
    else:
        yield from content.chunks(size)


async def read_with(read: Callable[[Content], T], content: Content) -> T:
    """``read(content)`` from the event loop: at once for content in memory, in a worker
    thread for the rest (its reads may wait for the disk)."""
    if isinstance(content, bytes):
        return read(content)
    return await asyncio.to_thread(read, content)


async def chunks_in_thread(content: Content, size: int = CHUNK) -> AsyncIterator[bytes]:
    """:func:`chunks_of` for the event loop: each chunk of content that is not in memory
    is read in a worker thread (a file's, a stored body's reads may wait for the disk)."""
    chunks = chunks_of(content, size)
    if isinstance(content, bytes):
        for chunk in chunks:
            yield chunk
        return
    while (part := await asyncio.to_thread(_next_chunk, chunks)) is not None:
        yield part


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


class ContentUnreadable(SMTPXError):
    """The content could not be read (the spool's disk, a spill file's)."""


def read_chunks(content: Content, size: int = CHUNK) -> Iterator[bytes]:
    """:func:`chunks_of`, an ``OSError`` on the way raised as :class:`ContentUnreadable`:
    a writer tells the source's failure from its own (a mailbox's disk)."""
    chunks = chunks_of(content, size)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except OSError as exc:
            raise ContentUnreadable(f"Cannot read the message: {exc.strerror or exc}") from exc
        yield chunk


def header_block(start: bytes) -> bytes:
    """The header block at the start of a message, with the empty line that ends it (all
    of ``start`` when there is no empty line: a message of header fields only, or one
    whose start is cut short)."""
    if start.startswith(b"\r\n"):
        return b""
    end = start.find(b"\r\n\r\n")
    return start if end < 0 else start[: end + 4]


class SpillClosed(ValueError):
    """The spilled message's file was closed: its content is gone."""


class SpillFile:
    """An open unnamed file, shared by the spilled messages made from it."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pread(self, size: int, offset: int) -> bytes:
        if self.fd < 0:
            raise SpillClosed(
                "the message's file was closed once process() returned: keep "
                "envelope.in_memory() to use it later"
            )
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1  # a later read fails, never reads a reused descriptor


_EMPTY = SpillFile(-1)


class SpilledMessage:
    """``head`` then ``length`` octets of ``file`` from ``start``. ``wire_form``: those
    octets of the file are their own DATA form (the server took them as they came: see
    :class:`smtpx.protocol.data.WireForm`), so :meth:`wire_chunks` need not stuff them
    when the head is one too."""

    __slots__ = ("file", "head", "length", "start", "wire_form")

    def __init__(
        self,
        file: SpillFile,
        length: int,
        *,
        start: int = 0,
        head: bytes = b"",
        wire_form: bool = False,
    ) -> None:
        self.file = file
        self.start = start
        self.length = length
        self.head = head
        self.wire_form = wire_form

    def __len__(self) -> int:
        return len(self.head) + self.length

    # Equal to the same content however it is kept (so an envelope compares equal to its
    # in-memory twin): comparing or hashing reads the file.
    def __eq__(self, other: object) -> bool:
        if isinstance(other, bytes):
            return len(self) == len(other) and self.read() == other
        if not isinstance(other, SpilledMessage):
            return NotImplemented
        return len(self) == len(other) and self.read() == other.read()

    def __hash__(self) -> int:
        return hash(self.read())

    def __repr__(self) -> str:
        return f"SpilledMessage(<{len(self)} octets, {self.length} in a file>)"

    def with_head(self, head: bytes) -> SpilledMessage:
        """The same file content after another ``head``."""
        return SpilledMessage(
            self.file, self.length, start=self.start, head=head, wire_form=self.wire_form
        )

    def as_wire_form(self) -> SpilledMessage:
        """The same content, its file part known to be its own DATA form."""
        return SpilledMessage(
            self.file, self.length, start=self.start, head=self.head, wire_form=True
        )

    def prepend(self, octets: bytes) -> SpilledMessage:
        return self.with_head(octets + self.head)

    def skip(self, count: int) -> SpilledMessage:
        """The content without its first ``count`` octets."""
        if count <= len(self.head):
            return self.with_head(self.head[count:])
        into_file = count - len(self.head)
        return SpilledMessage(self.file, self.length - into_file, start=self.start + into_file)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The raw content, ``head`` first, then the file a chunk at a time."""
        if self.head:
            yield self.head
        done = 0
        while done < self.length:
            chunk = self.file.pread(min(size, self.length - done), self.start + done)
            if not chunk:
                raise OSError(f"spilled message cut short: {done} of {self.length} octets")
            yield chunk
            done += len(chunk)

    def wire_chunks(self) -> Iterator[bytes]:
        """The content as the spool stores it: dot-stuffed, ending with CRLF (no ``.CRLF``)."""
        if self.wire_form and is_wire_form(self.head):
            yield from self.chunks()  # (nothing to stuff: no pass over each chunk)
            return
        stuffer = DotStuffer()
        for chunk in self.chunks():
            encoded = stuffer.encode(chunk)
            if encoded:
                yield encoded
        yield stuffer.end()[:-3]

    def read(self) -> bytes:
        """The whole content in memory (what ``Envelope.message`` returns)."""
        return b"".join(self.chunks())

    def read_until(self, marker: bytes, limit: int) -> bytes:
        """The content up to and including the first ``marker``, or the first ``limit``
        octets when it comes later (or never): enough to find the header block."""
        seen = b""
        for chunk in self.chunks(64 * 1024):
            at = (seen[-len(marker) :] + chunk).find(marker)
            seen += chunk
            if at >= 0 or len(seen) >= limit:
                end = seen.find(marker)
                return seen[: end + len(marker)] if end >= 0 else seen[:limit]
        return seen


class Spill:
    """Content being received: in memory up to ``threshold`` octets, then in a file."""

    __slots__ = ("_file", "_memory", "_size", "directory", "threshold")

    def __init__(self, threshold: int, directory: str | None = None) -> None:
        self.threshold = threshold
        self.directory = directory
        self._memory: list[bytes] = []
        self._size = 0
        self._file: SpillFile | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def in_memory(self) -> int:
        """Octets held in memory now."""
        return 0 if self._file is not None else self._size

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def add(self, data: bytes, *, force_spill: bool = False) -> None:
        """Take more content; past the threshold (or when told to) it goes to the file."""
        if self._file is None and (force_spill or self._size + len(data) > self.threshold):
            self._spill()
        if self._file is None:
            self._memory.append(data)
        else:
            write_all(self._file.fd, data)
        self._size += len(data)

    def _spill(self) -> None:
        spilled = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 - kept as an fd
        self._file = SpillFile(os.dup(spilled.fileno()))
        spilled.close()
        for part in self._memory:
            write_all(self._file.fd, part)
        self._memory = []

    def result(self) -> bytes | SpilledMessage:
        """What was received: bytes, or the file (owned by this spill until :meth:`close`)."""
        if self._file is None:
            return b"".join(self._memory)
        return SpilledMessage(self._file, self._size)

    def close(self) -> None:
        """Drop the content (and close the file)."""
        self._memory = []
        self._size = 0
        if self._file is not None:
            self._file.close()
            self._file = None


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a short write goes on where it stopped)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)  # not in the slice: mypyc evaluates its bound twice
        view = view[written:]

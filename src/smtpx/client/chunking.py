"""What BDAT (RFC 3030 CHUNKING) needs from a message body: its pieces, and for a
wire-ready file the parts that make up its content without the dot-stuffing.

BDAT sends the content itself, not DATA's encoding: no doubled dots, no terminator. A
:class:`~smtpx.client.WireFile` (a spool journal's body) holds the DATA encoding, so its
dot-stuffing is undone window by window: the windows that hold no doubled dot (all of
them, in most mail) go with ``sendfile`` as they are, the others are unstuffed in memory.
Finding the doubled dots costs about a millisecond per megabyte.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import IO, TypeAlias

from smtpx.protocol.data import dot_unstuff

__all__ = ["PIECE", "Piece", "mapped", "pieces", "wire_pieces"]

PIECE = 256 * 1024  # octets read, encoded and written at a time
Piece: TypeAlias = tuple[int, int, bytes | None]


async def pieces(
    body: bytes | IO[bytes] | os.PathLike[str] | AsyncIterable[bytes],
) -> AsyncIterator[bytes]:
    """The body in pieces of at most :data:`PIECE` octets (an async iterable's as given)."""
    if isinstance(body, bytes):
        for start in range(0, len(body), PIECE):
            yield body[start : start + PIECE]
    elif isinstance(body, os.PathLike):
        with open(body, "rb") as file:
            while chunk := file.read(PIECE):
                yield chunk
    elif isinstance(body, AsyncIterable):
        async for chunk in body:
            if chunk:
                yield chunk
    else:
        while chunk := body.read(PIECE):
            yield chunk


@contextlib.contextmanager
def mapped(file: IO[bytes], end: int) -> Iterator[mmap.mmap | bytes]:
    """The first ``end`` octets of ``file``, mapped read-only (``b""`` when there are
    none). A file shorter than ``end`` is an :class:`OSError`."""
    if end == 0:
        yield b""
        return
    size = os.fstat(file.fileno()).st_size
    if size < end:
        raise OSError(f"{file.name}: {size} octets, shorter than the {end} expected")
    with mmap.mmap(file.fileno(), end, access=mmap.ACCESS_READ) as view:
        yield view


def wire_pieces(
    view: mmap.mmap | bytes, start: int, end: int, *, window: int = PIECE
) -> Iterator[Piece]:
    """The content of ``view[start:end]`` (dot-stuffed, CRLF line endings) in pieces, as
    (first, last, data): runs of windows that hold no doubled dot come merged with
    ``data`` None (the file's octets first..last go as they are); a window that holds
    some comes with ``data``, its octets unstuffed. Windows are at most ``window``
    octets and end at a line end when a line ends in them (never between CR and LF)."""
    clean_from: int | None = None
    pos = start
    while pos < end:
        stop = _window_end(view, pos, end, window)
        line_start = pos == start or view[pos - 2 : pos] == b"\r\n"
        if (line_start and view[pos : pos + 1] == b".") or view.find(b"\r\n.", pos, stop) >= 0:
            if clean_from is not None:
                yield clean_from, pos, None
                clean_from = None
            yield pos, stop, dot_unstuff(view[pos:stop], at_line_start=line_start)
        elif clean_from is None:
            clean_from = pos
        pos = stop
    if clean_from is not None:
        yield clean_from, end, None


def _window_end(view: mmap.mmap | bytes, pos: int, end: int, window: int) -> int:
    limit = min(pos + window, end)
    if limit == end:
        return end
    lf = view.rfind(b"\n", pos, limit)
    if lf >= 0:
        return lf + 1
    between_cr_and_lf = limit - 1 > pos and view[limit - 1 : limit] == b"\r"
    return limit - 1 if between_cr_and_lf else limit

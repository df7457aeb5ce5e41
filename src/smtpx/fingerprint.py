"""Mail fingerprints (F115): what a message was, for the mail log, without keeping it.

A fingerprint is the message's header fields and its MIME tree, with an MD5 (hex) of the
raw content of each leaf (a part that is neither multipart nor ``message/rfc822``)::

    {"headers": [["From", "a@b.example"], ...], "md5": null,
     "parts": [{"headers": [["Content-Type", "text/plain"]], "md5": "9e10...", "parts": []},
               {"headers": [...], "md5": null, "parts": [<the attached message>]}]}

Two copies of one message have the same fingerprint, whatever path they took; a changed
body changes the MD5 of the leaf that changed. The content is read as a stream of chunks
(:class:`FingerprintBuilder`): memory holds one line, one header block and the MD5 states,
never a part, so a 35 MB attachment costs no more than a 4 KB one. A Content-Type is
read by the stdlib :mod:`email` package; the MIME structure is followed line by line
(boundaries as in RFC 2046 5.1.1: the line break before a boundary belongs to it). A
message whose structure is broken still gets a fingerprint: a missing closing boundary
ends its parts at the end of the message.
"""

from __future__ import annotations

import email.message
import email.utils
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fingerprint", "FingerprintBuilder", "fingerprint"]

MAX_LINE = 64 * 1024  # past this without a line break, the line is content (no boundary)
MAX_HEADER_BLOCK = 256 * 1024  # octets of one header block kept for parsing
MAX_PARTS = 200  # parts fingerprinted in one message; more are counted, not listed
MAX_DEPTH = 20  # nesting of multiparts and attached messages followed


@dataclass(slots=True)
class Fingerprint:
    """One entity: its header fields, the MD5 of its content if it is a leaf, its parts."""

    headers: list[tuple[str, str]]
    md5: str | None = None
    parts: list[Fingerprint] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "headers": [list(h) for h in self.headers],
            "md5": self.md5,
            "parts": [p.to_json() for p in self.parts],
        }

    def leaves(self) -> list[str]:
        """The MD5 of every leaf, in order."""
        own = [self.md5] if self.md5 is not None else []
        return own + [md5 for part in self.parts for md5 in part.leaves()]


class _Entity:
    """An entity being read: its header block, then its content."""

    __slots__ = ("boundary", "closed", "digest", "fingerprint", "header", "inner", "pending")

    def __init__(self) -> None:
        self.header: list[bytes] | None = []  # None once the header block has ended
        self.fingerprint = Fingerprint(headers=[])
        self.boundary: bytes | None = None  # set for a multipart
        self.inner = False  # message/rfc822: the content is an entity itself
        self.digest: Any = None  # an MD5 for a leaf
        self.pending = b""  # a leaf's last line break: not content if a boundary follows
        self.closed = False  # a multipart past its closing boundary (the epilogue)


class FingerprintBuilder:
    """Feed a message's raw octets in chunks (:meth:`feed`), then take :meth:`result`."""

    def __init__(self) -> None:
        self._partial = b""
        self._mid_line = False  # the octets of _partial's line were partly given as content
        self._stack = [_Entity()]
        self._root = self._stack[0].fingerprint
        self._parts = 0
        self.omitted = 0  # parts beyond MAX_PARTS or MAX_DEPTH, not fingerprinted

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        start = 0
        while start < len(data):
            entity = self._stack[-1]
            if entity.digest is not None and entity.header is None and not self._mid_line:
                start = self._bulk(entity, data, start)  # a leaf's lines, many at a time
                if start >= len(data):
                    break
            end = data.find(b"\n", start)
            if end < 0:
                break
            self._line(data[start : end + 1])
            start = end + 1
        self._partial = data[start:]
        if len(self._partial) > MAX_LINE:
            self._long(self._partial)
            self._partial = b""

    def _bulk(self, leaf: _Entity, data: bytes, start: int) -> int:
        """Take the complete lines from ``start`` that cannot be a boundary; where the
        next line begins."""
        if not any(e.boundary is not None and not e.closed for e in self._stack):
            leaf.digest.update(leaf.pending + data[start:])  # no boundary can end it
            leaf.pending = b""
            return len(data)
        if data.startswith(b"--", start):
            return start
        found = data.find(b"\n--", start)
        stop = found + 1 if found >= 0 else data.rfind(b"\n", start) + 1
        if stop <= start:
            return start
        body, brk = _split_break(data[start:stop])
        leaf.digest.update(leaf.pending + body)
        leaf.pending = brk
        return stop

    def result(self) -> Fingerprint:
        if self._partial:
            self._line(self._partial)
            self._partial = b""
        while self._stack:
            self._finish(self._stack.pop(), at_boundary=False)
        return self._root

    # -- lines -----------------------------------------------------------------------------

    def _long(self, chunk: bytes) -> None:
        """The start of a line too long to be a boundary: taken as it is."""
        self._content(self._stack[-1], chunk, continued=self._mid_line)
        self._mid_line = True

    def _line(self, line: bytes) -> None:
        continued, self._mid_line = self._mid_line, False
        if not continued and line.startswith(b"--") and self._boundary(line):
            return
        self._content(self._stack[-1], line, continued=continued)

    def _content(self, entity: _Entity, line: bytes, *, continued: bool) -> None:
        """A line (or a piece of one) of ``entity``: header, content, or neither."""
        if entity.header is not None:
            if not continued and line in (b"\r\n", b"\n"):
                self._start_content(entity)
            elif sum(map(len, entity.header)) < MAX_HEADER_BLOCK:
                entity.header.append(line)
        elif entity.digest is not None:
            body, brk = _split_break(line)
            entity.digest.update(entity.pending + body)
            entity.pending = brk
        # else: a multipart's preamble or epilogue, content of no part

    def _boundary(self, line: bytes) -> bool:
        """``line`` is a boundary of an open multipart: close what it ends."""
        text = line.rstrip(b" \t\r\n")
        for depth in range(len(self._stack) - 1, -1, -1):
            boundary = self._stack[depth].boundary
            if boundary is None or self._stack[depth].closed:
                continue
            if text == b"--" + boundary:
                self._close_above(depth)
                self._open_part(self._stack[depth])
                return True
            if text == b"--" + boundary + b"--":
                self._close_above(depth)
                self._stack[depth].closed = True
                return True
        return False

    def _close_above(self, depth: int) -> None:
        while len(self._stack) > depth + 1:
            self._finish(self._stack.pop(), at_boundary=True)

    # -- entities --------------------------------------------------------------------------

    def _start_content(self, entity: _Entity) -> None:
        fields = _fields(b"".join(entity.header or []))
        entity.header = None
        entity.fingerprint.headers = fields
        kind, boundary = _content_type(fields)
        too_deep = len(self._stack) > MAX_DEPTH
        if boundary and not too_deep:
            entity.boundary = boundary.encode("utf-8", "surrogateescape")
        elif kind == "message/rfc822" and not too_deep:
            entity.inner = True
            child = _Entity()
            entity.fingerprint.parts.append(child.fingerprint)
            self._stack.append(child)
        else:
            entity.digest = hashlib.md5(usedforsecurity=False)

    def _open_part(self, parent: _Entity) -> None:
        self._parts += 1
        child = _Entity()
        if self._parts <= MAX_PARTS:
            parent.fingerprint.parts.append(child.fingerprint)
        else:
            self.omitted += 1
        self._stack.append(child)

    def _finish(self, entity: _Entity, *, at_boundary: bool) -> None:
        if entity.header is not None:  # content never began: all of it was header
            self._start_content(entity)
            if entity.inner:  # an attached message with nothing in it
                self._finish(self._stack.pop(), at_boundary=at_boundary)
        if entity.digest is not None:
            if not at_boundary:
                entity.digest.update(entity.pending)
            entity.fingerprint.md5 = entity.digest.hexdigest()


_FOLD_RE = re.compile(rb"\r?\n(?=[ \t])")
_FIELD_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[ \t]*(.*?)[ \t\r]*$", re.M)


def _fields(block: bytes) -> list[tuple[str, str]]:
    """The (name, unfolded value) fields of a header block; 8-bit octets read as UTF-8
    (a JSON log line can hold them); lines that are not fields are left out."""
    return [
        (name.decode("ascii"), value.decode("utf-8", "replace"))
        for name, value in _FIELD_RE.findall(_FOLD_RE.sub(b"", block))
    ]


def _content_type(fields: list[tuple[str, str]]) -> tuple[str, str | None]:
    """The content type (RFC 2045 5.2: text/plain when absent or bad) and, for a
    multipart, its boundary."""
    value = next((v for n, v in fields if n.lower() == "content-type"), None)
    if value is None:
        return "text/plain", None
    message = email.message.Message()
    message["Content-Type"] = value
    kind = message.get_content_type()
    if not kind.startswith("multipart/"):
        return kind, None
    boundary = message.get_param("boundary")
    if not isinstance(boundary, (str, tuple)):
        return kind, None
    return kind, email.utils.collapse_rfc2231_value(boundary) or None


def _split_break(line: bytes) -> tuple[bytes, bytes]:
    if line.endswith(b"\r\n"):
        return line[:-2], b"\r\n"
    if line.endswith(b"\n"):
        return line[:-1], b"\n"
    return line, b""


def fingerprint(chunks: Iterable[bytes]) -> Fingerprint:
    """The fingerprint of the message whose raw octets are ``chunks``."""
    builder = FingerprintBuilder()
    for chunk in chunks:
        builder.feed(chunk)
    return builder.result()

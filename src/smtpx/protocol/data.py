"""DATA framing: dot-stuffing both ways and the end-of-data terminator.

RFC 5321 section 4.5.2: the sender doubles a leading ``.`` on every line, and the content
ends with ``CRLF.CRLF``; the receiver removes the doubled dot. Section 2.3.8: lines end
with CRLF, never a bare CR or LF.

SMTP smuggling (CVE-2023-51764 and its family) abuses receivers that also accept
``LF.LF``, ``CR.CR`` or ``LF.CRLF`` as the end of data. :class:`DataReader` recognises
only ``CRLF.CRLF``, and by default refuses any message that holds a bare CR or LF
(``BareNewlines.REJECT``); ``NORMALIZE`` accepts such a message and turns every bare CR
and LF into CRLF instead. Either way, what follows a fake terminator stays inside the
one message.

All the work is done on whole chunks with ``bytes`` methods (find, count, replace), never
by a Python loop per line.
"""

from __future__ import annotations

import enum

from smtpx.compiled import mypyc_attr
from smtpx.protocol import replies
from smtpx.protocol.replies import Reply

__all__ = [
    "BareNewlines",
    "DataReader",
    "DotStuffer",
    "DotUnstuffer",
    "EightBitCheck",
    "LfLines",
    "LineEndings",
    "WireForm",
    "dot_stuff",
    "dot_unstuff",
    "fits_8bit",
    "is_wire_form",
    "normalize_newlines",
    "prepend_head",
    "stored_form",
]

CRLF = b"\r\n"
TERMINATOR = b"\r\n.\r\n"

# RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including the CRLF.
MAX_TEXT_LINE = 1000
# Without a line limit, a line with no LF is still handed on in pieces of this size.
_PIECE = 1 << 16


class BareNewlines(enum.Enum):
    """What to do with a bare CR or LF inside message content."""

    REJECT = "reject"  # refuse the message (after its real end) with 500 5.5.2
    NORMALIZE = "normalize"  # make every bare CR or LF a CRLF, accept the message


_NOT_CR_OR_LF = bytes(i for i in range(256) if i not in (10, 13))


def has_bare_newline(data: bytes | bytearray) -> bool:
    """True if ``data`` has a CR not followed by LF or an LF not preceded by CR."""
    # Clean data has exactly two line-ending octets per CRLF pair (CRLF pairs never
    # overlap). Both counts are single C passes.
    ends = len(data.translate(None, _NOT_CR_OR_LF))
    return ends != 2 * data.count(CRLF)


def normalize_newlines(data: bytes) -> bytes:
    """Make every line ending CRLF: CRLF stays, a bare LF or bare CR becomes CRLF."""
    if not has_bare_newline(data):
        return data
    return data.replace(CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)


def _lines_fit(data: bytes | bytearray, limit: int) -> bool:
    """True if every line of ``data`` (starting at a line start) has at most ``limit``
    octets before its LF. Jumps from the last LF of one window to the next, so the Python
    loop runs once per ``limit`` octets, not once per line."""
    end = len(data)
    pos = 0
    while end - pos > limit:
        lf = data.rfind(b"\n", pos, pos + limit + 1)
        if lf < 0:
            return False
        pos = lf + 1
    return True


def fits_8bit(data: bytes) -> bool:
    """True if ``data`` can travel as 7bit or 8bit content (RFC 6152): no NUL, every CR
    and LF in a CRLF pair, no line over 998 octets before its CRLF. Content that does
    not fit can only go as ``BODY=BINARYMIME`` over BDAT (RFC 3030)."""
    open_line = len(data) - (data.rfind(b"\n") + 1)  # octets after the last LF
    return (
        b"\0" not in data
        and not has_bare_newline(data)
        and _lines_fit(data, MAX_TEXT_LINE - 1)
        and open_line <= MAX_TEXT_LINE - 2
    )


def dot_unstuff(data: bytes, *, at_line_start: bool = True) -> bytes:
    """Remove the leading dot of every line that starts with one (RFC 5321 4.5.2)."""
    if at_line_start and data[:1] == b".":
        data = data[1:]
    return data.replace(b"\r\n.", CRLF) if b"\r\n." in data else data


def _drop(raw: bytes, dots: list[int], *, at_line_start: bool) -> bytes:
    """``raw`` without the octets at the offsets in ``dots`` (those past its end ignored),
    and without a leading dot when it starts a line: dot-unstuffing when the stuffed dots'
    places are already known."""
    start = 1 if at_line_start and raw[:1] == b"." else 0
    end = len(raw)
    cuts = [d for d in dots if d < end] if dots else dots
    if not cuts:
        return raw[start:] if start else raw
    pieces = []
    for dot in cuts:
        pieces.append(raw[start:dot])
        start = dot + 1
    pieces.append(raw[start:])
    return b"".join(pieces)


def dot_stuff(body: bytes) -> bytes:
    """Encode a whole message for DATA: CRLF line endings, dots doubled, terminator added."""
    if type(body) is WireForm:
        return body + b".\r\n"
    stuffer = DotStuffer()
    return stuffer.encode(body) + stuffer.end()


@mypyc_attr(native_class=False)  # (a native class cannot derive from bytes)
class WireForm(bytes):
    """Message content that is its own DATA form: CRLF line endings only, no line that
    starts with a dot, and a final CRLF (or no octet at all). Dot-stuffing changes none
    of it, so :func:`dot_stuff` and :func:`stored_form` skip the two passes over it that
    would find so. Made only where that is known: the server, for content that arrived
    with no dot or line ending to undo (:attr:`DataReader.verbatim`), and
    :func:`prepend_head`, which checks the head it adds. Whatever is done to it gives
    plain ``bytes``, so an edited message is stuffed as any other."""

    __slots__ = ()


def is_wire_form(data: bytes) -> bool:
    """True if ``data`` could be a :class:`WireForm` (it checks every octet)."""
    if not data:
        return True
    return (
        data[-2:] == CRLF
        and data[:1] != b"."
        and b"\r\n." not in data
        and not has_bare_newline(data)
    )


def prepend_head(head: bytes, content: bytes) -> bytes:
    """``head + content``: a :class:`WireForm` when ``content`` is one and ``head`` (header
    fields ending with CRLF) would be one too. No head (the relay's DKIM signature when it
    does not sign) gives ``content`` itself: no copy."""
    if not head:
        return content
    if type(content) is WireForm and is_wire_form(head):
        return WireForm(head + content)
    return head + content


def stored_form(content: bytes) -> bytes:
    """``content`` as the spool stores it: dot-stuffed, CRLF line endings, no ``.CRLF``."""
    if type(content) is WireForm:
        return content
    return dot_stuff(content)[:-3]


class _Cuts:
    """What the streaming stuffer and unstuffer share: chunks may be cut anywhere, so a
    CR that ends one is held until the next says whether its LF follows, and whether the
    content so far ends a line is kept."""

    __slots__ = ("_at_line_start", "_pending_cr")

    def __init__(self) -> None:
        self._at_line_start = True  # the content so far is empty or ends with CRLF
        self._pending_cr = False  # the last chunk ended with CR; its LF may come next

    def _joined(self, chunk: bytes) -> bytes:
        """``chunk`` after the CR held from the last one, without the CR it ends with
        (held in turn)."""
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk[-1:] == b"\r":
            chunk = chunk[:-1]
            self._pending_cr = True
        return chunk

    def _released(self) -> bytes:
        """The CR still held at the end of the content (none left held)."""
        held = b"\r" if self._pending_cr else b""
        self._pending_cr = False
        self._at_line_start = True
        return held


class LfLines(_Cuts):
    """Streaming CRLF to LF (the line endings of a maildir file), the chunks cut
    anywhere, a CRLF included; :meth:`end` gives back a CR held at the last cut."""

    __slots__ = ()

    def convert(self, chunk: bytes) -> bytes:
        chunk = self._joined(chunk)
        return chunk.replace(CRLF, b"\n") if chunk else b""

    def end(self) -> bytes:
        return self._released()


class DotStuffer(_Cuts):
    """Streaming encoder for DATA content (the client side).

    Feed any chunks; the output never holds a bare CR or LF (they become CRLF), every line
    that starts with a dot gets a second one, and :meth:`end` closes the content with a
    final CRLF if needed and the ``.CRLF`` terminator.
    """

    __slots__ = ()

    def encode(self, chunk: bytes) -> bytes:
        chunk = self._joined(chunk)
        if not chunk:
            return b""
        chunk = normalize_newlines(chunk)
        if b"\r\n." in chunk:
            chunk = chunk.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and chunk[:1] == b".":
            chunk = b"." + chunk
        self._at_line_start = chunk[-2:] == CRLF
        return chunk

    def end(self) -> bytes:
        """The bytes that finish the content: a held CR as CRLF, a final CRLF, ``.CRLF``."""
        out = b".\r\n" if self._at_line_start and not self._pending_cr else b"\r\n.\r\n"
        self._at_line_start = True
        self._pending_cr = False
        return out

    def note_external(self, *, ends_with_crlf: bool) -> None:
        """Record that encoded content was written around this encoder (``sendfile``)."""
        self._at_line_start = ends_with_crlf
        self._pending_cr = False

    @property
    def at_line_start(self) -> bool:
        return self._at_line_start and not self._pending_cr


class DotUnstuffer(_Cuts):
    """Streaming decoder of content as the spool stores it (dot-stuffed, CRLF line
    endings, no terminator) back to the message: :func:`dot_unstuff` for content that
    comes a chunk at a time. The chunks may be cut anywhere, a CRLF or the dot after it
    included; :meth:`end` gives back an octet held at the last cut (a final CR)."""

    __slots__ = ()

    def decode(self, chunk: bytes) -> bytes:
        chunk = self._joined(chunk)
        if not chunk:
            return b""
        decoded = dot_unstuff(chunk, at_line_start=self._at_line_start)
        self._at_line_start = chunk[-2:] == CRLF
        return decoded

    def end(self) -> bytes:
        return self._released()


class EightBitCheck:
    """:func:`fits_8bit` of content that comes a chunk at a time (cut anywhere): feed
    every chunk, then ask :meth:`result`. Only the open line is kept between chunks."""

    __slots__ = ("_fits", "_open")

    def __init__(self) -> None:
        self._fits = True
        self._open = b""  # the octets after the last LF so far

    def feed(self, chunk: bytes) -> None:
        if not self._fits:
            return
        data = self._open + chunk if self._open else chunk
        cut = data.rfind(b"\n") + 1
        if cut and not fits_8bit(data[:cut]):
            self._fits = False
            return
        # An open line this long cannot end in time (998 octets, and a CR that waits):
        # nothing more is kept, however long it goes on.
        self._fits = len(data) - cut <= MAX_TEXT_LINE - 1
        self._open = data[cut:] if self._fits else b""

    def result(self) -> bool:
        return self._fits and fits_8bit(self._open)


class LineEndings:
    """Streaming CRLF normalizer for BDAT content (the client side): what
    :class:`DotStuffer` does without the dots and the terminator, so a message sent with
    BDAT arrives exactly as it would with DATA. Feed any chunks; :meth:`end` returns the
    CRLF that closes a last line left open (or nothing)."""

    __slots__ = ("_at_line_start", "_pending_cr")

    def __init__(self) -> None:
        self._at_line_start = True
        self._pending_cr = False

    def encode(self, chunk: bytes) -> bytes:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk[-1:] == b"\r":
            chunk = chunk[:-1]
            self._pending_cr = True
        if not chunk:
            return b""
        chunk = normalize_newlines(chunk)
        self._at_line_start = chunk[-2:] == CRLF
        return chunk

    def end(self) -> bytes:
        out = b"" if self._at_line_start and not self._pending_cr else CRLF
        self._at_line_start = True
        self._pending_cr = False
        return out


class DataReader:
    """Incremental decoder of DATA content (the server side).

    :meth:`read` takes bytes from the front of the connection's buffer and returns the
    decoded content it could take, and whether the terminator was seen. When the content
    breaks a rule (a bare CR or LF under ``REJECT``, a line over ``max_line``, more than
    ``max_size`` octets), the reader keeps consuming until the real terminator but returns
    no more content; ``error`` then holds the reply to send once the data has ended.
    """

    __slots__ = (
        "_line_start",
        "_prev_crlf",
        "bare_newlines",
        "error",
        "max_line",
        "max_size",
        "size",
        "verbatim",
    )

    def __init__(
        self,
        *,
        max_line: int | None = MAX_TEXT_LINE,
        max_size: int | None = None,
        bare_newlines: BareNewlines = BareNewlines.REJECT,
    ) -> None:
        self.max_line = max_line
        self.max_size = max_size
        self.bare_newlines = bare_newlines
        self.size = 0  # decoded octets so far
        self.error: Reply | None = None
        # The DATA command line ended with CRLF: ".CRLF" right away is an empty message.
        self._prev_crlf = True
        self._line_start = True
        # Nothing read so far was changed: no stuffed dot removed, no line ending made
        # CRLF. Still so at the end, the content is its own DATA form (WireForm).
        self.verbatim = True

    def read(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consume from ``buf``; return (decoded content, finished)."""
        if self.error is not None:
            return b"", self._discard(buf)
        if self._prev_crlf and buf[:3] == b".\r\n":
            del buf[:3]
            return b"", True
        # One scan finds both the terminator and the dot-stuffed lines: each "\r\n." is
        # either "\r\n.\r\n" (the end) or the start of a line whose dot must go.
        end = buf.find(b"\r\n.")
        dots: list[int] = []
        while end >= 0 and buf[end + 3 : end + 5] != CRLF:
            dots.append(end + 2)  # the offset of a stuffed dot
            end = buf.find(b"\r\n.", end + 3)
        if end >= 0:
            raw = bytes(buf[: end + 2])
            del buf[: end + 5]
            finished = True
        else:
            cut = buf.rfind(b"\n") + 1
            rest = len(buf) - cut
            if self.max_line is not None and rest >= self.max_line:
                # The unfinished last line is already too long. The buffer still starts
                # where the content so far ended, so the terminator state is unchanged.
                self.error = replies.line_too_long()
                return b"", self._discard(buf)
            if cut == 0:
                if self.max_line is not None or rest < _PIECE:
                    return b"", False
                # No line limit and a very long line: hand on what we have, but never
                # split a CR from the LF that may follow it.
                cut = rest - 1 if buf[-1] == 13 else rest
            raw = bytes(buf[:cut])
            del buf[:cut]
            finished = False
        return self._decode(raw, finished, buf, dots)

    def _decode(
        self, raw: bytes, finished: bool, buf: bytearray, dots: list[int]
    ) -> tuple[bytes, bool]:
        if raw:
            # Whether the buffer now starts after a real CRLF, judged on the bytes as
            # received: a bare LF that NORMALIZE turns into CRLF must never complete a
            # terminator (the "\n.\r\n" smuggling variant).
            self._prev_crlf = raw[-2:] == CRLF
        if self.max_line is not None and not _lines_fit(raw, self.max_line - 1):
            return self._failed(replies.line_too_long(), finished, buf)
        if has_bare_newline(raw):
            if self.bare_newlines is BareNewlines.REJECT:
                return self._failed(replies.bare_line_ending(), finished, buf)
            raw = raw.replace(CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)
            # Lines that began after a bare LF may start with a dot too: unstuff by search.
            content = dot_unstuff(raw, at_line_start=self._line_start)
            self.verbatim = False
        else:
            content = _drop(raw, dots, at_line_start=self._line_start)
            if len(content) != len(raw):  # (a stuffed dot dropped)
                self.verbatim = False
        if raw:
            self._line_start = raw[-1:] == b"\n"
        self.size += len(content)
        if self.max_size is not None and self.size > self.max_size:
            return self._failed(replies.message_too_big(), finished, buf)
        return content, finished

    def _failed(self, reply: Reply, finished: bool, buf: bytearray) -> tuple[bytes, bool]:
        self.error = reply
        return b"", finished or self._discard(buf)

    def _discard(self, buf: bytearray) -> bool:
        """Drop content up to and including the terminator; True once it was seen."""
        if self._prev_crlf and buf[:3] == b".\r\n":
            del buf[:3]
            return True
        end = buf.find(TERMINATOR)
        if end >= 0:
            del buf[: end + 5]
            return True
        if len(buf) > 4:
            # Keep the last four octets: they may begin the terminator.
            self._prev_crlf = buf[-6:-4] == CRLF
            del buf[:-4]
        return False

"""SMTP replies (RFC 5321 section 4.2) with enhanced status codes (RFC 3463, RFC 2034).

A :class:`Reply` is a three-digit code, an optional enhanced status code and one or more
lines of text. It parses and formats both single and multi-line replies::

    250-mail.example.org
    250-PIPELINING
    250 SIZE 10240000

The enhanced status code is kept apart from the text: when a reply is formatted, it is
written at the start of every line, as RFC 2034 section 4 asks. Greetings, EHLO replies and
3xx replies carry none.

The module also holds the named constructors for the replies the server sends
(``ok()``, ``bad_sequence()``, ``message_too_big()`` ...), so that every part of smtpx
speaks with the same words and the same status codes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from smtpx.errors import ParseError

__all__ = [
    "EnhancedStatus",
    "Reply",
    "ReplyParser",
]

CRLF = b"\r\n"

# RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets including CRLF. Real servers
# exceed it (long EHLO lists, banners), so a reader allows more, but stays bounded.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 200


@dataclass(frozen=True, slots=True)
class EnhancedStatus:
    """An RFC 3463 enhanced status code ``class.subject.detail``, e.g. ``5.1.1``."""

    klass: int
    subject: int
    detail: int

    def __post_init__(self) -> None:
        if self.klass not in (2, 4, 5):
            raise ValueError(f"enhanced status class must be 2, 4 or 5, not {self.klass}")
        if not (0 <= self.subject <= 999 and 0 <= self.detail <= 999):
            raise ValueError("enhanced status subject and detail are 0..999 (RFC 3463 section 2)")

    @classmethod
    def parse(cls, text: str) -> EnhancedStatus:
        match = _ENHANCED.fullmatch(text)
        if match is None:
            raise ParseError(f"not an enhanced status code: {text!r}")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"

    def __reduce__(self) -> tuple[type[EnhancedStatus], tuple[int, int, int]]:
        # Rebuilt through __init__ (a frozen dataclass's default unpickling sets each slot,
        # which the compiled build's frozen class refuses), as Address does.
        return (EnhancedStatus, (self.klass, self.subject, self.detail))


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
# At the start of a line's text: the code, then a space or the end of the line.
_ENHANCED_PREFIX = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


@functools.lru_cache(maxsize=512)
def _status(text: str) -> EnhancedStatus:
    # Few distinct codes exist and EnhancedStatus is immutable: share the instances.
    k, s, d = text.split(".")
    return EnhancedStatus(int(k), int(s), int(d))


@dataclass(frozen=True, slots=True, init=False)
class Reply:
    """One SMTP reply.

    ``lines`` holds the text of each line without the code, the separator and the enhanced
    status code. ``enhanced`` is None when the reply carries no enhanced status code.
    """

    code: int
    lines: tuple[str, ...] = ("",)
    enhanced: EnhancedStatus | None = None
    # The wire form, made on first use (replies are immutable, and servers send the same
    # few replies over and over).
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (docs/performance.md, "Writing code that compiles"); several replies a message.
    def __init__(
        self, code: int, lines: tuple[str, ...] = ("",), enhanced: EnhancedStatus | None = None
    ) -> None:
        if not 200 <= code <= 599:
            raise ValueError(f"reply code must be 200..599, not {code}")
        if not lines:
            raise ValueError("a reply has at least one line (it may be empty)")
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError("reply text may not contain CR or LF; use several lines")
        if enhanced is not None and enhanced.klass != code // 100:
            raise ValueError(f"enhanced status {enhanced} does not match the class of {code}")
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "enhanced", enhanced)
        object.__setattr__(self, "_wire", None)

    def __reduce__(
        self,
    ) -> tuple[type[Reply], tuple[int, tuple[str, ...], EnhancedStatus | None]]:
        # Rebuilt through __init__ (see EnhancedStatus); the wire form is made again.
        return (Reply, (self.code, self.lines, self.enhanced))

    # -- construction -----------------------------------------------------------------

    @classmethod
    def of(cls, code: int, text: str = "", enhanced: str | EnhancedStatus | None = None) -> Reply:
        """Build a reply; ``text`` may hold newlines, which become separate lines."""
        status = _status(enhanced) if isinstance(enhanced, str) else enhanced
        return cls(code, tuple(text.split("\n")) if text else ("",), status)

    @classmethod
    def parse(cls, data: bytes | str) -> Reply:
        """Parse one complete reply (every line ends with CRLF or LF; the last may not)."""
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        if not raw.endswith(b"\n"):
            raw += CRLF
        parser = ReplyParser()
        parser.feed(raw)
        reply = parser.next_reply()
        if reply is None or parser.buffered:
            raise ParseError(f"not exactly one complete reply: {data!r}")
        return reply

    # -- properties ------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The lines joined with newlines."""
        return "\n".join(self.lines)

    @property
    def is_positive(self) -> bool:
        """2xx (completion) or 3xx (intermediate)."""
        return self.code < 400

    @property
    def is_completion(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """4xx: the same request may succeed later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5xx: the same request will fail again."""
        return self.code >= 500

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    # -- formatting ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = self._format()
            object.__setattr__(self, "_wire", wire)
        return wire

    def _format(self) -> bytes:
        code = str(self.code)
        prefix = f"{self.enhanced} " if self.enhanced is not None else ""
        last = len(self.lines) - 1
        out = [
            f"{code}{' ' if i == last else '-'}{prefix}{line}\r\n"
            for i, line in enumerate(self.lines)
        ]
        return "".join(out).encode("utf-8", "surrogateescape")

    def __str__(self) -> str:
        """One line per reply line, CRLF-free, e.g. ``550 5.1.1 No such user``."""
        return (
            self.to_bytes().decode("utf-8", "surrogateescape").rstrip("\r\n").replace("\r\n", "\n")
        )

    def with_lines(self, *extra: str) -> Reply:
        """A copy with more lines of text at the end."""
        return Reply(self.code, (*self.lines, *extra), self.enhanced)

    def with_text(self, text: str) -> Reply:
        """A copy with the same code and enhanced status but different text."""
        return Reply(self.code, tuple(text.split("\n")) if text else ("",), self.enhanced)


# Parsed one-line replies by their bytes. Replies are immutable, so parsers share them;
# the table is small and stops growing when full (a server echoing ids never floods it).
_SINGLE_LINE: dict[bytes, Reply] = {}
_SINGLE_LINE_MAX = 1024


class ReplyParser:
    """Incremental reply reader: feed bytes, take whole replies out.

    Lines may end with CRLF or a bare LF (be liberal in what you accept, RFC 5321 4.5.1
    notwithstanding). Every line of a reply must carry the same code, and the character after
    the code must be ``-`` (more lines follow), a space, or nothing (the last line).
    """

    __slots__ = ("_buf", "_code", "_lines", "_raw")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lines: list[str] = []
        self._raw = bytearray()  # the received lines of the reply in progress
        self._code = 0

    @property
    def buffered(self) -> int:
        """Bytes received that are not part of a returned reply."""
        return len(self._buf) + len(self._raw)

    @property
    def in_progress(self) -> bool:
        return bool(self._buf) or bool(self._lines)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def take_buffer(self) -> bytes:
        """Remove and return the bytes not yet part of a returned reply (a reply's first
        lines included); the parser starts afresh."""
        data = bytes(self._raw + self._buf)
        self._buf.clear()
        self._raw.clear()
        self._lines = []
        return data

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None when more bytes are needed."""
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_REPLY_LINE:
                    raise ParseError(f"reply line longer than {MAX_REPLY_LINE} octets")
                return None
            if end + 1 > MAX_REPLY_LINE:
                raise ParseError(f"reply line longer than {MAX_REPLY_LINE} octets")
            line = bytes(buf[: end - 1 if end and buf[end - 1] == 13 else end])
            if not self._lines and (cached := _SINGLE_LINE.get(line)) is not None:
                # A one-line reply seen before (servers repeat "250 2.1.5 Ok" endlessly).
                del buf[: end + 1]
                return cached
            self._raw += buf[: end + 1]
            del buf[: end + 1]
            code, more, text = _split_reply_line(line)
            if self._lines and code != self._code:
                raise ParseError(
                    f"reply line code {code} differs from the first line's {self._code}"
                )
            self._code = code
            self._lines.append(text)
            if len(self._lines) > MAX_REPLY_LINES:
                raise ParseError(f"reply has more than {MAX_REPLY_LINES} lines")
            if not more:
                single = len(self._lines) == 1
                lines, self._lines = self._lines, []
                self._raw.clear()
                reply = _make_reply(code, lines)
                if single and len(_SINGLE_LINE) < _SINGLE_LINE_MAX and len(line) < 128:
                    _SINGLE_LINE[line] = reply
                return reply

    def __iter__(self) -> Iterator[Reply]:
        while (reply := self.next_reply()) is not None:
            yield reply


def _split_reply_line(line: bytes) -> tuple[int, bool, str]:
    if len(line) < 3 or not line[:3].isdigit() or not 0x32 <= line[0] <= 0x35:
        raise ParseError(f"reply line does not start with a code 200..599: {line[:40]!r}")
    code = int(line[:3])
    if len(line) == 3:
        return code, False, ""
    sep = line[3]
    if sep == 0x2D:  # "-"
        more = True
    elif sep == 0x20:
        more = False
    else:
        raise ParseError(f"reply code must be followed by '-' or a space: {line[:40]!r}")
    text = line[4:].decode("utf-8", "surrogateescape")
    if "\r" in text:
        raise ParseError(f"bare CR inside a reply line: {line[:40]!r}")
    return code, more, text


def _make_reply(code: int, lines: list[str]) -> Reply:
    # An enhanced status code counts only if the first line has one of the reply's class;
    # it is then removed from every line that repeats it.
    enhanced = None
    if code // 100 != 3:
        match = _ENHANCED_PREFIX.match(lines[0])
        if match is not None and int(match[1]) == code // 100:
            token = match.group(0).rstrip(" ")
            enhanced = _status(token)
            cut = len(token)
            lines = [
                line[cut + 1 :] if line.startswith(token + " ") else "" if line == token else line
                for line in lines
            ]
    return Reply(code, tuple(lines), enhanced)


def parse_replies(data: bytes) -> list[Reply]:
    """Every complete reply in ``data`` (a convenience for tests and tools)."""
    parser = ReplyParser()
    parser.feed(data)
    replies = list(parser)
    if parser.in_progress:
        raise ParseError("incomplete reply at the end of the data")
    return replies


# ---------------------------------------------------------------------------------------
# Named replies. Texts follow common practice (Postfix); codes follow RFC 5321 section 4.2
# and the enhanced codes RFC 3463 / RFC 5248.
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _r(code: int, enhanced: str | None, text: str) -> Reply:
    # Replies are immutable and servers send the same few over and over: share them (and
    # their cached wire form).
    return Reply(code, tuple(text.split("\n")), _status(enhanced) if enhanced else None)


def service_ready(domain: str, text: str = "ESMTP smtpx") -> Reply:
    """220 greeting (RFC 5321 4.3.1); no enhanced code in greetings (RFC 2034 section 4)."""
    return _r(220, None, f"{domain} {text}".strip())


def service_refused(domain: str, text: str = "No SMTP service here") -> Reply:
    """554 greeting: the server will answer every command but QUIT with 503.

    No enhanced status code: greetings carry none (RFC 2034 section 4)."""
    return _r(554, None, f"{domain} {text}".strip())


def closing(text: str = "Bye") -> Reply:
    return _r(221, "2.0.0", text)


def helo_ok(domain: str) -> Reply:
    return _r(250, None, domain)


def ehlo_ok(domain: str, greeting: str, extension_lines: Iterable[str]) -> Reply:
    first = f"{domain} {greeting}".strip()
    return Reply(250, (first, *extension_lines))


def ok(text: str = "Ok", enhanced: str = "2.0.0") -> Reply:
    return _r(250, enhanced, text)


def sender_ok(text: str = "Ok") -> Reply:
    return _r(250, "2.1.0", text)


def recipient_ok(text: str = "Ok") -> Reply:
    return _r(250, "2.1.5", text)


def queued(queue_id: str) -> Reply:
    return _r(250, "2.0.0", f"Ok: queued as {queue_id}")


def chunk_ok(size: int) -> Reply:
    return _r(250, "2.0.0", f"Ok: {size} octets received")


def cannot_verify() -> Reply:
    """252 for VRFY (RFC 5321 3.5.3: 252 when the server will not verify)."""
    return _r(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")


def help_text(text: str = "See RFC 5321 https://www.rfc-editor.org/rfc/rfc5321") -> Reply:
    return _r(214, "2.0.0", text)


def auth_succeeded() -> Reply:
    return _r(235, "2.7.0", "Authentication successful")


def auth_challenge(base64_text: str) -> Reply:
    """334 with a base64 challenge (RFC 4954 section 4); may be empty."""
    return Reply(334, (base64_text,))


def start_mail_input() -> Reply:
    return _r(354, None, "End data with <CR><LF>.<CR><LF>")


def ready_to_start_tls() -> Reply:
    return _r(220, "2.0.0", "Ready to start TLS")


def service_unavailable(text: str = "Service not available, closing transmission channel") -> Reply:
    return _r(421, "4.3.2", text)


def command_timeout() -> Reply:
    return _r(421, "4.4.2", "Timeout exceeded waiting for a command, closing transmission channel")


def data_timeout() -> Reply:
    return _r(421, "4.4.2", "Timeout exceeded while reading message data, closing channel")


def data_too_slow() -> Reply:
    return _r(421, "4.4.2", "Message data arriving too slowly, closing channel")


def shutting_down() -> Reply:
    return _r(421, "4.3.2", "Service shutting down, closing transmission channel")


def too_many_errors() -> Reply:
    return _r(421, "4.7.0", "Too many errors, closing transmission channel")


def too_many_connections() -> Reply:
    return _r(421, "4.7.0", "Too many concurrent sessions, try again later")


def too_many_sessions_from_client() -> Reply:
    return _r(421, "4.7.0", "Too many concurrent sessions from your address, try again later")


def connection_rate_exceeded() -> Reply:
    return _r(421, "4.7.0", "Too many connections from your address, try again later")


def local_error(text: str = "Local error in processing") -> Reply:
    return _r(451, "4.3.0", text)


def rate_limited(text: str = "Rate limit exceeded, try again later") -> Reply:
    return _r(451, "4.7.1", text)


def insufficient_storage(text: str = "Insufficient system storage") -> Reply:
    return _r(452, "4.3.1", text)


def too_many_recipients() -> Reply:
    """RFC 5321 4.5.3.1.10: 452 for recipients beyond the limit, so the client retries them."""
    return _r(452, "4.5.3", "Too many recipients")


def tls_not_available() -> Reply:
    return _r(454, "4.7.0", "TLS not available due to temporary reason")


def auth_temporary_failure(text: str = "Temporary authentication failure") -> Reply:
    return _r(454, "4.7.0", text)


def command_unrecognized(verb: str = "") -> Reply:
    text = f"Command unrecognized: {verb}" if verb else "Command unrecognized"
    return _r(500, "5.5.1", text)


def line_too_long() -> Reply:
    return _r(500, "5.5.2", "Line too long")


def empty_line() -> Reply:
    return _r(500, "5.5.2", "Empty command line")


def bare_line_ending() -> Reply:
    """Bare CR or LF (RFC 5321 section 2.3.8); the SMTP smuggling defence."""
    return _r(500, "5.5.2", "Bare CR or LF not allowed; lines end with CRLF (RFC 5321 2.3.8)")


def bad_characters(text: str = "Invalid character in command") -> Reply:
    """500 5.5.2: a command line that is not UTF-8 or holds control characters."""
    return _r(500, "5.5.2", text)


def syntax_error(text: str = "Syntax error in parameters or arguments") -> Reply:
    return _r(501, "5.5.4", text)


def address_syntax_error(text: str = "Bad address syntax") -> Reply:
    return _r(501, "5.1.3", text)


def not_implemented(verb: str = "") -> Reply:
    text = f"Command not implemented: {verb}" if verb else "Command not implemented"
    return _r(502, "5.5.1", text)


def bad_sequence(text: str = "Bad sequence of commands") -> Reply:
    return _r(503, "5.5.1", text)


def parameter_not_implemented(text: str = "Command parameter not implemented") -> Reply:
    return _r(504, "5.5.4", text)


def unrecognized_auth_mechanism(mechanism: str = "") -> Reply:
    text = "Unrecognized authentication type"
    return _r(504, "5.5.4", f"{text}: {mechanism}" if mechanism else text)


def auth_required() -> Reply:
    return _r(530, "5.7.0", "Authentication required")


def starttls_required() -> Reply:
    return _r(530, "5.7.0", "Must issue a STARTTLS command first")


def auth_too_weak() -> Reply:
    return _r(534, "5.7.9", "Authentication mechanism is too weak")


def auth_failed() -> Reply:
    return _r(535, "5.7.8", "Authentication credentials invalid")


def auth_cancelled() -> Reply:
    return _r(501, "5.7.0", "Authentication cancelled")


def encryption_required() -> Reply:
    return _r(538, "5.7.11", "Encryption required for requested authentication mechanism")


def mailbox_unavailable(text: str = "Mailbox unavailable") -> Reply:
    return _r(550, "5.1.1", text)


def relay_denied(text: str = "Relay access denied") -> Reply:
    return _r(550, "5.7.1", text)


def message_too_big() -> Reply:
    return _r(552, "5.3.4", "Message size exceeds fixed maximum message size")


def non_ascii_not_permitted() -> Reply:
    """RFC 6531 section 3.5: UTF-8 address without the SMTPUTF8 parameter."""
    return _r(553, "5.6.7", "Non-ASCII addresses require the SMTPUTF8 parameter")


def transaction_failed(text: str = "Transaction failed") -> Reply:
    return _r(554, "5.0.0", text)


def no_valid_recipients() -> Reply:
    return _r(554, "5.5.1", "No valid recipients")


def parameters_not_recognized(text: str = "Parameters not recognized or not implemented") -> Reply:
    return _r(555, "5.5.4", text)

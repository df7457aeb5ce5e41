"""Envelopes: who a message is from, who it goes to, and the message itself.

This is a pure data module (stdlib only, no I/O). The records follow ``async_smtp``
(features F1-F6 of ``reference/async_smtp.md``):

* :class:`EnvelopeId` - unique, time-sortable, URL-safe identifier of an envelope.
* :class:`EnvelopeInfo` - the SMTP envelope: sender, MAIL parameters, recipients,
  rejected recipients, route and id. Equality and hash ignore the id (F1).
* :class:`Envelope` - info plus the raw RFC 5322 message (CRLF line endings), with
  header helpers that never touch the body bytes (F3) and :meth:`Envelope.of_email` (F2).
* :class:`EnvelopeBodiless` - info plus the raw header block only; the body travels apart
  so several envelopes can share it (F3, F4).
* :class:`HostPort`, :class:`RetryInterval` (from :mod:`smtpx.hops`),
  :class:`RoutedEnvelope`, :class:`RoutedBodiless` and :class:`Batch` - where to deliver
  and when to retry (F4, F5).

:class:`~smtpx.protocol.addresses.Sender` and :class:`~smtpx.protocol.addresses.Address`
are re-exported from here; :class:`~smtpx.protocol.params.MailParams` is the type of the
sender arguments.
"""

from __future__ import annotations

import binascii
import dataclasses
import email.message
import email.parser
import email.policy
import email.utils
import os
import random
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Self, TypeVar

from smtpx.compiled import mypyc_attr
from smtpx.content import SpilledMessage
from smtpx.errors import ParseError
from smtpx.hops import HostPort, RetryInterval
from smtpx.protocol.addresses import ASCII_SPACE, Address, Sender, parse_path
from smtpx.protocol.params import MailParams, RcptParams

__all__ = [
    "Address",
    "Batch",
    "Envelope",
    "EnvelopeBodiless",
    "EnvelopeId",
    "EnvelopeIdGenerator",
    "EnvelopeInfo",
    "HostPort",
    "RetryInterval",
    "RoutedBodiless",
    "RoutedEnvelope",
    "Sender",
    "message_id_in",
]


# ---------------------------------------------------------------------------------------
# Envelope ids


# 64 URL-safe characters (RFC 3986 unreserved) in ASCII order, so that comparing two
# encoded numbers of the same width as strings gives the same answer as comparing the
# numbers (unlike standard base64, whose alphabet is not sorted). None is "-": an id must
# never look like a command-line option.
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_ID_DIGIT = {char: value for value, char in enumerate(_ID_ALPHABET)}
_ID_TIME_CHARS = 10  # 60 bits of microseconds: good until the year 38 000 or so
_ID_RANDOM_CHARS = 6  # 36 random bits tell apart ids made in the same microsecond elsewhere
_ID_LENGTH = _ID_TIME_CHARS + _ID_RANDOM_CHARS
_ID_MAX_MICROS = 64**_ID_TIME_CHARS - 1


# Standard base64 has the same 6-bit digits in another order: encoding is binascii's,
# then one translation to the sorted alphabet (a quarter of the time of a Python loop).
_FROM_BASE64 = bytes.maketrans(
    (string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/").encode(),
    _ID_ALPHABET.encode(),
)


def _encode64(value: int, width: int) -> str:
    """The low ``6 * width`` bits of ``value`` in ``width`` characters of the sorted
    alphabet."""
    size = -(-width // 4) * 3  # whole base64 quanta: 3 bytes give 4 characters
    raw = (value & ((1 << 6 * width) - 1)).to_bytes(size, "big")
    encoded = binascii.b2a_base64(raw, newline=False).translate(_FROM_BASE64)
    return encoded[-width:].decode("ascii")


def _decode64(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _ID_DIGIT[char]
    return value


_RANDOM = random.Random()  # seeded from the OS
os.register_at_fork(after_in_child=_RANDOM.seed)  # a forked child must not repeat ids


class EnvelopeIdGenerator:
    """Makes envelope ids from one clock, strictly increasing.

    The generator remembers the last timestamp it used: when its clock has not moved past
    it (a burst within one microsecond, or a clock stepped back), the timestamp is bumped
    by one microsecond, so an id's :attr:`EnvelopeId.timestamp` may run slightly ahead of
    the clock. Tests give a generator a fake clock and a seeded ``random.Random``.
    """

    def __init__(
        self, now_ns: Callable[[], int] = time.time_ns, rng: random.Random | None = None
    ) -> None:
        self._now_ns = now_ns
        # The random part only tells apart ids made elsewhere in the same microsecond: the
        # random module's generator (seeded from the OS, reseeded in forked children) is
        # enough, and costs no system call per id.
        self._rng = rng if rng is not None else _RANDOM
        self._last = -1
        self._lock = threading.Lock()  # ids may be made from spool worker threads

    def __call__(self) -> EnvelopeId:
        micros = self._now_ns() // 1000
        if micros < 0:
            raise ValueError("the clock reads a time before the Unix epoch")
        with self._lock:
            micros = self._last = max(micros, self._last + 1)
        if micros > _ID_MAX_MICROS:
            raise OverflowError("the clock reads a time too far in the future for an id")
        noise = self._rng.getrandbits(6 * _ID_RANDOM_CHARS)
        text = _encode64(micros << 6 * _ID_RANDOM_CHARS | noise, _ID_LENGTH)
        return str.__new__(EnvelopeId, text)  # valid by construction: no check


@mypyc_attr(native_class=False)  # (mypyc compiles no subclass of str)
class EnvelopeId(str):
    """A unique, time-sortable, URL-safe envelope id (16 characters).

    Layout: 10 characters of microseconds since the Unix epoch, then 6 random
    characters, all from the sorted alphabet ``0-9A-Z_a-z~``. Hence:

    * string order is creation order (to the microsecond across processes, and exactly
      within one process: ids made from one clock get strictly increasing timestamps,
      even when the clock stands still or steps back);
    * ids may appear in file names and URLs unescaped.

    Constructing an ``EnvelopeId`` from a string validates it like :meth:`parse`.
    """

    __slots__ = ()

    def __new__(cls, text: str) -> Self:
        if len(text) != _ID_LENGTH:
            raise ParseError(f"envelope id must be {_ID_LENGTH} characters long: {text!r}")
        if any(char not in _ID_DIGIT for char in text):
            raise ParseError(f"envelope id has characters outside [0-9A-Z_a-z~]: {text!r}")
        return str.__new__(cls, text)

    @classmethod
    def parse(cls, text: str) -> EnvelopeId:
        """Validate ``text`` (length and alphabet) and return it as an id."""
        return cls(text)

    @classmethod
    def create(cls, generator: EnvelopeIdGenerator | None = None) -> EnvelopeId:
        """A fresh id from ``generator`` (by default the process's, on the system clock)."""
        return (generator or _DEFAULT_GENERATOR)()

    @property
    def timestamp(self) -> float:
        """Creation time in seconds since the epoch, as encoded in the id."""
        return _decode64(self[:_ID_TIME_CHARS]) / 1_000_000

    def __repr__(self) -> str:
        return f"EnvelopeId({str(self)!r})"


_DEFAULT_GENERATOR = EnvelopeIdGenerator()


# ---------------------------------------------------------------------------------------
# Envelope info


_NO_PARAMS = MailParams()
_FROM_TEXT = " (use create() for strings)"
_T = TypeVar("_T")


def _to_sender(value: Sender | Address | str) -> Sender:
    if not isinstance(value, Sender | Address | str):
        raise TypeError(f"sender must be a Sender, Address or str, not {type(value).__name__}")
    return Sender.of(value)


def _to_address(value: Address | str) -> Address:
    if isinstance(value, Address):
        return value
    if not isinstance(value, str):
        raise TypeError(f"recipient must be an Address or str, not {type(value).__name__}")
    # parse_path takes both <a@b> and a bare a@b, and the special <Postmaster>.
    address = parse_path(value.strip(ASCII_SPACE), allow_postmaster=True)
    assert address is not None  # only None for <>, which allow_null=False rejects
    return address


def _to_addresses(values: Iterable[Address | str]) -> tuple[Address, ...]:
    if isinstance(values, str | bytes):
        # A lone string would otherwise be read one character at a time.
        raise TypeError("recipients must be a collection of addresses, not a single string")
    return tuple(_to_address(value) for value in values)


def _to_params(value: MailParams | str) -> MailParams:
    return MailParams.parse(value) if isinstance(value, str) else value


# (Mapping is invariant in its keys: a dict of str and a dict of Address are both fine.)
RecipientParams = (
    Mapping[str, RcptParams | str]
    | Mapping[Address, RcptParams | str]
    | Iterable[tuple[Address | str, RcptParams | str]]
)
_NO_RCPT_PARAMS = RcptParams()


def _to_recipient_params(value: RecipientParams) -> tuple[tuple[Address, RcptParams], ...]:
    """(recipient, its RCPT parameters) for the recipients that have any, in order."""
    pairs = value.items() if isinstance(value, Mapping) else value
    found = []
    for recipient, params in pairs:
        parsed = RcptParams.parse(params) if isinstance(params, str) else params
        if parsed != _NO_RCPT_PARAMS:
            found.append((_to_address(recipient), parsed))
    return tuple(found)


def _frozen(
    name: str, values: Iterable[_T], kind: type[_T], hint: str = _FROM_TEXT
) -> tuple[_T, ...]:
    """``values`` as a tuple (lists are accepted, and frozen so that a record stays
    hashable and nobody changes it behind its back), each checked to be a ``kind``."""
    frozen = values if type(values) is tuple else tuple(values)
    if not all(isinstance(value, kind) for value in frozen):
        raise TypeError(f"{name} must hold {kind.__name__} values{hint}")
    return frozen


def _to_id(value: EnvelopeId | str | None) -> EnvelopeId:
    if value is None:
        return EnvelopeId.create()
    return value if isinstance(value, EnvelopeId) else EnvelopeId.parse(value)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class EnvelopeInfo:
    """The SMTP envelope (F1): everything about a message that is not the message.

    ``recipients`` are the accepted recipients, ``rejected_recipients`` those the
    receiving server refused (kept for reporting). ``recipient_params`` holds the RCPT
    parameters (DSN's NOTIFY and ORCPT, RFC 3461) of the recipients that gave any:
    :meth:`params_of` reads them. ``route`` is free text naming the way the message
    should go, for a routing policy to read. ``id`` is fresh by default.

    Equality and hash ignore ``id``: two envelopes with the same sender, arguments,
    recipients and route are the same envelope, whenever they were made.
    """

    sender: Sender
    sender_args: MailParams = _NO_PARAMS
    recipients: tuple[Address, ...]
    rejected_recipients: tuple[Address, ...] = ()
    route: str | None = None
    id: EnvelopeId = field(compare=False)
    recipient_params: tuple[tuple[Address, RcptParams], ...] = ()

    # The constructor is written out, not made by the dataclass, so that it takes what
    # the fields' types do not say (lists, parameters as text) in the compiled build too,
    # whose native fields take their exact types only.
    def __init__(
        self,
        *,
        sender: Sender,
        recipients: Iterable[Address],
        sender_args: MailParams = _NO_PARAMS,
        rejected_recipients: Iterable[Address] = (),
        route: str | None = None,
        id: EnvelopeId | None = None,
        recipient_params: RecipientParams = (),
    ) -> None:
        if not isinstance(sender, Sender):
            raise TypeError(f"sender must be a Sender, not {type(sender).__name__}")
        if not isinstance(sender_args, MailParams):
            raise TypeError("sender_args must be MailParams")
        if id is None:
            id = EnvelopeId.create()
        elif not isinstance(id, EnvelopeId):
            raise TypeError("id must be an EnvelopeId")
        if route is not None and not isinstance(route, str):
            raise TypeError("route must be a str or None")
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "sender_args", sender_args)
        object.__setattr__(self, "recipients", _frozen("recipients", recipients, Address))
        rejected = _frozen("rejected_recipients", rejected_recipients, Address)
        object.__setattr__(self, "rejected_recipients", rejected)
        object.__setattr__(self, "route", route)
        object.__setattr__(self, "id", id)
        params = recipient_params
        if not isinstance(params, tuple) or not all(
            isinstance(a, Address) and isinstance(p, RcptParams) for a, p in params
        ):
            params = _to_recipient_params(params)
        object.__setattr__(self, "recipient_params", params)

    def params_of(self, recipient: Address) -> RcptParams:
        """The RCPT parameters ``recipient`` was given (none: empty parameters)."""
        for address, params in self.recipient_params:
            if address == recipient:
                return params
        return _NO_RCPT_PARAMS

    @classmethod
    def create(
        cls,
        *,
        sender: Sender | Address | str,
        recipients: Iterable[Address | str],
        sender_args: MailParams | str = _NO_PARAMS,
        rejected_recipients: Iterable[Address | str] = (),
        route: str | None = None,
        id: EnvelopeId | str | None = None,
        recipient_params: RecipientParams = (),
    ) -> EnvelopeInfo:
        """Build an info from parsed values or text.

        Text is parsed the way the SMTP commands carry it: the sender with
        :meth:`Sender.parse` (``<>`` is the null sender), recipients as paths (``<a@b>``
        or ``a@b``), the arguments with :meth:`MailParams.parse`. Bad text raises
        :class:`~smtpx.errors.ParseError`.
        """
        return cls(
            sender=_to_sender(sender),
            sender_args=_to_params(sender_args),
            recipients=_to_addresses(recipients),
            rejected_recipients=_to_addresses(rejected_recipients),
            route=route,
            id=_to_id(id),
            recipient_params=_to_recipient_params(recipient_params),
        )

    def with_sender(self, sender: Sender | Address | str) -> EnvelopeInfo:
        return dataclasses.replace(self, sender=_to_sender(sender))

    def with_sender_args(self, sender_args: MailParams | str) -> EnvelopeInfo:
        return dataclasses.replace(self, sender_args=_to_params(sender_args))

    def with_recipients(self, recipients: Iterable[Address | str]) -> EnvelopeInfo:
        """Other recipients; those that stay keep their RCPT parameters."""
        kept = _to_addresses(recipients)
        params = tuple((a, p) for a, p in self.recipient_params if a in kept)
        return dataclasses.replace(self, recipients=kept, recipient_params=params)

    def with_recipient_params(self, params: RecipientParams) -> EnvelopeInfo:
        return dataclasses.replace(self, recipient_params=_to_recipient_params(params))

    def with_rejected_recipients(self, rejected: Iterable[Address | str]) -> EnvelopeInfo:
        return dataclasses.replace(self, rejected_recipients=_to_addresses(rejected))

    def with_route(self, route: str | None) -> EnvelopeInfo:
        return dataclasses.replace(self, route=route)

    def with_id(self, id: EnvelopeId | str | None = None) -> EnvelopeInfo:
        """The same info under ``id``, or under a fresh id when ``id`` is None."""
        return dataclasses.replace(self, id=_to_id(id))


# ---------------------------------------------------------------------------------------
# Raw header blocks
#
# Edits work on the raw bytes of the header block so that the body, and every header
# field that is not edited, stays byte-identical (a DKIM signature over them survives).
# Only the split into fields is done here (RFC 5322 2.2.3: a field is a line plus the
# lines after it that start with white space); reading a whole message, folding new
# fields and RFC 2047 are left to the stdlib ``email`` package.

_BLANK_LINES = (b"\r\n", b"\n")
# RFC 5322 2.2: field-name = 1*ftext, ftext = %d33-57 / %d59-126. White space before the
# colon is the obsolete syntax of RFC 5322 4.5.8, still seen in the wild.
_FIELD_NAME_RE = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_FIELD_NAME_BYTES_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# Unfolding (RFC 5322 2.2.3) removes a line break that is followed by white space.
_FOLD_RE = re.compile(rb"\r?\n(?=[ \t])")


def message_id_in(start: bytes) -> str | None:
    """:meth:`Envelope.message_id` of a message that begins with ``start`` (its
    :meth:`Envelope.start`), for a caller that has read it already."""
    if start.startswith(b"\r\n"):
        return None  # no header fields
    end = start.find(b"\r\n\r\n")
    head = start if end < 0 else start[:end]
    # The last field: found by a literal search of the lowercased header section (a
    # pattern that starts at every line, ignoring case, took half as long again).
    at = head.lower().rfind(b"\nmessage-id:") + 1
    if at == 0 and head[:11].lower() != b"message-id:":
        return None
    found = _MESSAGE_ID_VALUE.match(head, at + 11)
    assert found is not None  # (it matches the empty value)
    value = found.group().replace(b"\r\n", b"").strip().decode("utf-8", "replace")
    return value if 0 < len(value) <= MAX_MESSAGE_ID else None


def _split_message(message: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line: (header block including that line, body).

    Without an empty line the whole message is the header block and the body is empty.
    """
    pos = 0
    while pos < len(message):
        end = message.find(b"\n", pos)
        if end < 0:
            break
        if message[pos : end + 1] in _BLANK_LINES:
            return message[: end + 1], message[end + 1 :]
        pos = end + 1
    return message, b""


class _Field(NamedTuple):
    """One header field as it stands in the source, line break(s) included.

    ``name`` is None for a line that is not a field (no colon, or a stray continuation
    line at the top); such lines are kept as they are but not reported as headers.
    """

    name: str | None
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value, without the white space after the colon or the line break.

        Bytes are read as UTF-8 (RFC 6532); invalid bytes are kept as surrogate escapes,
        so that the value can be written back unchanged.
        """
        _, _, value = self.raw.partition(b":")
        unfolded = _FOLD_RE.sub(b"", value).lstrip(b" \t").rstrip(b"\r\n")
        return unfolded.decode("utf-8", "surrogateescape")


class _HeaderBlock(NamedTuple):
    fields: list[_Field]
    end: bytes  # the empty line that ends the block, and anything after it

    @classmethod
    def parse(cls, block: bytes) -> _HeaderBlock:
        fields: list[_Field] = []
        pos = 0
        while pos < len(block):
            newline = block.find(b"\n", pos)
            end = len(block) if newline < 0 else newline + 1
            line = block[pos:end]
            if line in _BLANK_LINES:
                return cls(fields, block[pos:])
            if line[:1] in (b" ", b"\t") and fields:
                name, raw = fields[-1]
                fields[-1] = _Field(name, raw + line)
            else:
                match = _FIELD_NAME_BYTES_RE.match(line)
                fields.append(_Field(match[1].decode("ascii") if match else None, line))
            pos = end
        return cls(fields, b"")

    def to_bytes(self) -> bytes:
        return b"".join(raw for _, raw in self.fields) + self.end


def _check_name(name: str) -> None:
    if not _FIELD_NAME_RE.fullmatch(name):
        raise ValueError(f"not a header field name (RFC 5322 2.2): {name!r}")


def _fold(
    policy: email.policy.EmailPolicy[email.message.EmailMessage], name: str, value: str
) -> bytes:
    """The bytes of a new field ``name: value``, folded and encoded by the stdlib."""
    _check_name(name)
    if "\r" in value or "\n" in value:
        # A line break in a value would start a new field: header injection.
        raise ValueError(f"header value must not contain CR or LF: {value!r}")
    if value.isascii() or policy.utf8:
        return policy.fold_binary(name, value)
    # Given a plain str, fold_binary writes short non-ASCII values out as they are and
    # then fails to encode them as ASCII; a header object is folded with RFC 2047
    # encoded-words instead.
    return policy.fold_binary(name, policy.header_factory(name, value))


def _same_name(a: str | None, b: str) -> bool:
    # Field names are ASCII and compare case-insensitively (RFC 5322 1.2.2).
    return a is not None and a.lower() == b.lower()


class _HeaderOps:
    """Header helpers shared by :class:`Envelope` and :class:`EnvelopeBodiless` (F3).

    Every helper that changes headers returns a new object; fields it does not touch, and
    the body, keep their exact bytes. New fields are folded by the stdlib, with
    :data:`email.policy.SMTPUTF8` when the envelope says SMTPUTF8 and with
    :data:`email.policy.SMTP` (RFC 2047 encoded-words for non-ASCII text) otherwise.
    """

    __slots__ = ()

    def _info(self) -> EnvelopeInfo:
        """The envelope's info (a method, not a declared field: on the routed kinds
        ``info`` is a property, which a compiled base's field would hide)."""
        raise NotImplementedError

    def _header_bytes(self) -> bytes:
        raise NotImplementedError

    def _with_header_bytes(self, block: bytes) -> Self:
        raise NotImplementedError

    # -- forwarding to info ------------------------------------------------------------

    @property
    def sender(self) -> Sender:
        return self._info().sender

    @property
    def sender_args(self) -> MailParams:
        return self._info().sender_args

    @property
    def recipients(self) -> tuple[Address, ...]:
        return self._info().recipients

    @property
    def rejected_recipients(self) -> tuple[Address, ...]:
        return self._info().rejected_recipients

    @property
    def route(self) -> str | None:
        return self._info().route

    @property
    def id(self) -> EnvelopeId:
        return self._info().id

    # -- reading -----------------------------------------------------------------------

    def _block(self) -> _HeaderBlock:
        return _HeaderBlock.parse(self._header_bytes())

    def _policy(self) -> email.policy.EmailPolicy[email.message.EmailMessage]:
        return email.policy.SMTPUTF8 if self._info().sender_args.smtputf8 else email.policy.SMTP

    def header_list(self) -> list[tuple[str, str]]:
        """Every header field in order, as (name as written, unfolded raw value).

        Values are not RFC 2047 decoded; see :meth:`subject_decoded` and
        :meth:`Envelope.email` for decoded views. (On :class:`Envelope` this is also
        :meth:`Envelope.headers`; on :class:`EnvelopeBodiless` ``headers`` is the raw block.)
        """
        return [(f.name, f.value) for f in self._block().fields if f.name is not None]

    def find_all_headers(self, name: str) -> list[str]:
        """The values of every field called ``name`` (any case), in order."""
        return [f.value for f in self._block().fields if _same_name(f.name, name)]

    def last_header(self, name: str) -> str | None:
        """The value of the last field called ``name`` (any case), or None."""
        values = self.find_all_headers(name)
        return values[-1] if values else None

    def subject_decoded(self) -> str | None:
        """The last ``Subject`` with RFC 2047 encoded-words decoded, or None if absent."""
        subject = self.last_header("Subject")
        if subject is None:
            return None
        return str(email.policy.default.header_factory("Subject", subject))

    # -- editing -----------------------------------------------------------------------

    def _with_fields(self, fields: list[_Field], end: bytes) -> Self:
        return self._with_header_bytes(_HeaderBlock(fields, end).to_bytes())

    def add_header(self, name: str, value: str) -> Self:
        """Add ``name: value`` above every other field (where trace fields go, RFC 5321 4.4)."""
        block = self._block()
        new = _Field(name, _fold(self._policy(), name, value))
        return self._with_fields([new, *block.fields], block.end)

    def add_header_at_bottom(self, name: str, value: str) -> Self:
        """Add ``name: value`` after every other field."""
        block = self._block()
        new = _Field(name, _fold(self._policy(), name, value))
        fields = list(block.fields)
        if fields and not fields[-1].raw.endswith(b"\n"):
            # Only the last line of a message without a body can lack its line break.
            fields[-1] = _Field(fields[-1].name, fields[-1].raw + b"\r\n")
        return self._with_fields([*fields, new], block.end)

    def _set(self, name: str, value: str, *, at_bottom: bool) -> Self:
        block = self._block()
        if not any(_same_name(f.name, name) for f in block.fields):
            if at_bottom:
                return self.add_header_at_bottom(name, value)
            return self.add_header(name, value)
        new = _Field(name, _fold(self._policy(), name, value))
        fields: list[_Field] = []
        placed = False
        for f in block.fields:
            if not _same_name(f.name, name):
                fields.append(f)
            elif not placed:
                fields.append(new)
                placed = True
        return self._with_fields(fields, block.end)

    def set_header(self, name: str, value: str) -> Self:
        """Make ``name: value`` the only field called ``name``.

        It takes the place of the first existing one (the others are removed), or goes
        at the top when there is none.
        """
        return self._set(name, value, at_bottom=False)

    def set_header_at_bottom(self, name: str, value: str) -> Self:
        """Like :meth:`set_header`, but a field that did not exist goes at the bottom."""
        return self._set(name, value, at_bottom=True)

    def filter_headers(self, keep: Callable[[str, str], bool]) -> Self:
        """Keep the fields for which ``keep(name, value)`` is true; drop the others."""
        block = self._block()
        fields = [f for f in block.fields if f.name is None or keep(f.name, f.value)]
        return self._with_fields(fields, block.end)

    def add_headers(self, headers: Iterable[tuple[str, str]]) -> Self:
        """Add each ``(name, value)`` above every other field, in the order given."""
        result = self
        for name, value in reversed(list(headers)):
            result = result.add_header(name, value)
        return result

    def add_headers_at_bottom(self, headers: Iterable[tuple[str, str]]) -> Self:
        """Add each ``(name, value)`` after every other field, in the order given."""
        result = self
        for name, value in headers:
            result = result.add_header_at_bottom(name, value)
        return result

    def smash_and_add_header(self, name: str, value: str) -> Self:
        """One ``name`` field at the bottom whose value is every ``name`` value and then
        ``value``, joined by ``", "`` (the other ``name`` fields go)."""
        values = [*self.find_all_headers(name), value]
        kept = self.filter_headers(lambda field, _: not _same_name(field, name))
        return kept.add_header_at_bottom(name, ", ".join(values))

    def modify_headers(
        self, change: Callable[[list[tuple[str, str]]], Iterable[tuple[str, str]]]
    ) -> Self:
        """Replace the fields by ``change(fields)`` (a list of (name, value) in order). A
        field that comes back unchanged keeps its bytes; a new or changed one is folded."""
        block = self._block()
        policy = self._policy()
        unused: dict[tuple[str, str], list[_Field]] = {}
        for f in block.fields:
            if f.name is not None:
                unused.setdefault((f.name, f.value), []).append(f)
        fields = [f for f in block.fields if f.name is None]  # lines that are no field: first
        for name, value in change(self.header_list()):
            same = unused.get((name, value))
            fields.append(same.pop(0) if same else _Field(name, _fold(policy, name, value)))
        # Only the last line of a message without a body can lack its line break.
        fields[:-1] = [
            f if f.raw.endswith(b"\n") else _Field(f.name, f.raw + b"\r\n") for f in fields[:-1]
        ]
        return self._with_fields(fields, block.end)

    def map_headers(self, change: Callable[[str, str], str]) -> Self:
        """Replace each value by ``change(name, value)``; unchanged fields keep their bytes."""
        block = self._block()
        policy = self._policy()
        fields: list[_Field] = []
        for f in block.fields:
            if f.name is not None:
                value = f.value
                new_value = change(f.name, value)
                if new_value != value:
                    f = _Field(f.name, _fold(policy, f.name, new_value))  # noqa: PLW2901
            fields.append(f)
        return self._with_fields(fields, block.end)


# ---------------------------------------------------------------------------------------
# Envelopes


_BARE_LF_RE = re.compile(rb"(?<!\r)\n")
# How far into a spilled message its header block is looked for.
MAX_HEADER_BLOCK = 4 * 1024 * 1024
MAX_MESSAGE_ID = 998  # RFC 5322 2.1.1: the longest line; a longer Message-ID is not kept
# A field's value: its first line and continuation lines (message_id_in). Written as runs
# of a single class, not an alternation tried at each character (1.1 us -> 0.1).
_MESSAGE_ID_VALUE = re.compile(rb"[^\r\n]*(?:\r\n[ \t][^\r\n]*)*")


def _message_bytes(message: bytes | bytearray | memoryview | str | email.message.Message) -> bytes:
    if isinstance(message, email.message.Message):
        # Keep the message's own policy (compat32 or an EmailPolicy), but write CRLF and
        # leave "From " lines alone: the mbox ">From" mangling has no place in SMTP.
        policy = message.policy.clone(linesep="\r\n", mangle_from_=False)
        data = message.as_bytes(policy=policy)
    elif isinstance(message, str):
        # surrogateescape gives back bytes that were decoded with it (as email does).
        data = message.encode("utf-8", "surrogateescape")
    elif isinstance(message, bytes | bytearray | memoryview):
        data = bytes(message)
    else:
        raise TypeError(f"message must be bytes, str or an email Message, not {type(message)}")
    # RFC 5322 2.3 and RFC 5321 2.3.8: lines end in CRLF on the wire.
    return _BARE_LF_RE.sub(b"\r\n", data)


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Envelope(_HeaderOps):
    """An envelope and its message (F1).

    ``message`` is the raw RFC 5322 message, header block and body, with CRLF line
    endings and *not* dot-stuffed. The constructor stores it as given;
    :meth:`create` normalises bare LF to CRLF.

    ``content`` is where the message is: bytes, or a :class:`~smtpx.content.SpilledMessage`
    (a large message the server kept in a file). ``message`` reads the whole of it;
    :attr:`size`, :meth:`chunks`, the header helpers and the spool read a spilled message
    a chunk at a time.
    """

    info: EnvelopeInfo
    content: bytes | SpilledMessage

    def __init__(
        self,
        *,
        info: EnvelopeInfo,
        message: bytes | bytearray | memoryview | None = None,
        content: bytes | SpilledMessage | None = None,
    ) -> None:
        if not isinstance(info, EnvelopeInfo):
            raise TypeError("info must be an EnvelopeInfo")
        if (message is None) == (content is None):
            raise TypeError("give message or content, not both")
        data = message if message is not None else content
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        elif not isinstance(data, bytes | SpilledMessage):
            raise TypeError("message must be bytes (use Envelope.create for str or Message)")
        object.__setattr__(self, "info", info)
        object.__setattr__(self, "content", data)

    @property
    def message(self) -> bytes:
        """The whole message in memory (a spilled one is read from its file)."""
        content = self.content
        return content if isinstance(content, bytes) else content.read()

    @property
    def size(self) -> int:
        """The message's length in octets (nothing is read)."""
        return len(self.content)

    def in_memory(self) -> Envelope:
        """This envelope with its message in memory: one to keep after the server's
        ``process`` hook returns (a spilled message's file is closed then)."""
        if isinstance(self.content, bytes):
            return self
        return Envelope(info=self.info, message=self.content.read())

    def chunks(self) -> Iterator[bytes]:
        """The message a chunk at a time (one chunk when it is in memory)."""
        content = self.content
        if isinstance(content, bytes):
            yield content
        else:
            yield from content.chunks()

    @classmethod
    def create(
        cls,
        *,
        sender: Sender | Address | str,
        recipients: Iterable[Address | str],
        message: bytes | str | email.message.Message,
        sender_args: MailParams | str = _NO_PARAMS,
        rejected_recipients: Iterable[Address | str] = (),
        route: str | None = None,
        id: EnvelopeId | str | None = None,
        recipient_params: RecipientParams = (),
    ) -> Envelope:
        """Build an envelope; text is parsed as in :meth:`EnvelopeInfo.create`.

        ``message`` may be bytes, text (encoded as UTF-8) or a stdlib
        :class:`email.message.Message`; bare LF line endings become CRLF.
        """
        info = EnvelopeInfo.create(
            sender=sender,
            recipients=recipients,
            sender_args=sender_args,
            rejected_recipients=rejected_recipients,
            route=route,
            id=id,
            recipient_params=recipient_params,
        )
        return cls(info=info, message=_message_bytes(message))

    @classmethod
    def of_email(
        cls,
        message: bytes | str | email.message.Message,
        *,
        ignore_unparseable_recipient_header: bool = False,
    ) -> Envelope:
        """Build an envelope from a message's own headers (F2).

        The sender is the single address of the single ``From`` field: no ``From``, more
        than one, or a ``From`` that is not exactly one valid address raises
        :class:`~smtpx.errors.ParseError`. The recipients are the addresses of every
        ``To``, then ``Cc``, then ``Bcc`` field, in order, each once. A recipient address
        that does not parse raises ParseError, unless
        ``ignore_unparseable_recipient_header`` is true, in which case it is skipped.
        """
        data = _message_bytes(message)
        header_bytes, _ = _split_message(data)
        fields = _HeaderBlock.parse(header_bytes).fields

        def values(name: str) -> list[str]:
            return [f.value for f in fields if _same_name(f.name, name)]

        from_values = values("From")
        if len(from_values) != 1:
            raise ParseError(
                f"need exactly one From header to find the sender, not {len(from_values)}"
            )
        # ('', '') is what getaddresses makes of an empty list item or an empty group.
        senders = [pair for pair in email.utils.getaddresses(from_values) if pair != ("", "")]
        if len(senders) != 1:
            raise ParseError(f"the From header must hold exactly one address: {from_values[0]!r}")
        try:
            sender = Sender(Address.parse(senders[0][1]))
        except ParseError as exc:
            raise ParseError(f"bad sender address in the From header: {exc}") from None

        recipients: dict[Address, None] = {}  # a dict keeps the order and drops repeats
        for header in ("To", "Cc", "Bcc"):
            for value in values(header):
                for display_name, addr in email.utils.getaddresses([value]):
                    if (display_name, addr) == ("", ""):
                        continue
                    try:
                        recipients.setdefault(Address.parse(addr), None)
                    except ParseError:
                        if ignore_unparseable_recipient_header:
                            continue
                        raise ParseError(
                            f"unparseable address {addr or display_name!r} in {header} header"
                        ) from None
        info = EnvelopeInfo(sender=sender, recipients=tuple(recipients))
        return cls(info=info, message=data)

    @classmethod
    def of_bodiless(cls, bodiless: EnvelopeBodiless, body: bytes) -> Envelope:
        """Join what :meth:`split_bodiless` split; the result is byte-identical."""
        return cls(info=bodiless.info, message=bodiless.headers + body)

    def split_bodiless(self) -> tuple[EnvelopeBodiless, bytes]:
        """Split at the first empty line: (info and header block, raw body)."""
        headers, body = _split_message(self.message)
        return EnvelopeBodiless(info=self.info, headers=headers), body

    @property
    def body(self) -> bytes:
        """The raw body: everything after the first empty line."""
        return _split_message(self.message)[1]

    def headers(self) -> list[tuple[str, str]]:
        """Every header field in order, as (name as written, unfolded raw value)."""
        return self.header_list()

    def with_info(self, info: EnvelopeInfo) -> Envelope:
        return Envelope(info=info, content=self.content)

    def email(self) -> email.message.EmailMessage:
        """The message parsed by the stdlib with :data:`email.policy.SMTP` (a fresh copy)."""
        parsed = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(self.message)
        assert isinstance(parsed, email.message.EmailMessage)  # what EmailPolicy builds
        return parsed

    def _header_bytes(self) -> bytes:
        return _split_message(self.start())[0]

    def _with_header_bytes(self, block: bytes) -> Self:
        content = self.content
        if isinstance(content, bytes):
            return type(self)(info=self.info, message=block + _split_message(content)[1])
        header = _split_message(self.start())[0]
        return type(self)(info=self.info, content=content.skip(len(header)).prepend(block))

    def start(self) -> bytes:
        """Enough of the message to hold its header block: all of it when in memory, the
        first ``MAX_HEADER_BLOCK`` octets at most of a spilled one."""
        content = self.content
        if isinstance(content, bytes):
            return content
        return content.read_until(b"\r\n\r\n", MAX_HEADER_BLOCK)

    def message_id(self) -> str | None:
        """The value of the message's last Message-ID field, unfolded and trimmed (None if
        it has none, or one over ``MAX_MESSAGE_ID`` octets): what the spool keeps and the
        mail log's ``accepted`` line says. A regular expression rather than a header
        parser: it runs for every message received."""
        # (the header region: a spilled message is not read whole)
        return message_id_in(self.start())

    def _info(self) -> EnvelopeInfo:
        return self.info

    def __repr__(self) -> str:
        return f"Envelope(info={self.info!r}, message=<{self.size} bytes>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeBodiless(_HeaderOps):
    """An envelope with its header block but not its body (F3).

    ``headers`` is the raw header block including the empty line that ends it (or the
    whole message when it has no empty line). Several bodiless envelopes can share one
    body (:class:`Batch`); :meth:`Envelope.of_bodiless` puts them back together.
    """

    info: EnvelopeInfo
    headers: bytes  # the raw block; header_list() is the parsed view

    def __post_init__(self) -> None:
        if not isinstance(self.info, EnvelopeInfo):
            raise TypeError("info must be an EnvelopeInfo")
        if not isinstance(self.headers, bytes):
            raise TypeError("headers must be bytes")

    def with_info(self, info: EnvelopeInfo) -> EnvelopeBodiless:
        return dataclasses.replace(self, info=info)

    def _info(self) -> EnvelopeInfo:
        return self.info

    def _header_bytes(self) -> bytes:
        return self.headers

    def _with_header_bytes(self, block: bytes) -> Self:
        return dataclasses.replace(self, headers=block)


# ---------------------------------------------------------------------------------------
# Routed envelopes and batches


def _to_hops(hops: Iterable[HostPort | str]) -> tuple[HostPort, ...]:
    if isinstance(hops, str):
        raise TypeError("next_hop_choices must be a collection of hops, not a single string")
    return tuple(hop if isinstance(hop, HostPort) else HostPort.parse(hop) for hop in hops)


def _to_intervals(intervals: Iterable[RetryInterval | str]) -> tuple[RetryInterval, ...]:
    if isinstance(intervals, str):
        raise TypeError("retry_intervals must be a collection of intervals, not a single string")
    return tuple(
        interval if isinstance(interval, RetryInterval) else RetryInterval.parse(interval)
        for interval in intervals
    )


def _set_routing(
    record: RoutedEnvelope | RoutedBodiless,
    hops: Iterable[HostPort],
    intervals: Iterable[RetryInterval],
) -> None:
    object.__setattr__(record, "next_hop_choices", _frozen("next_hop_choices", hops, HostPort))
    intervals = _frozen("retry_intervals", intervals, RetryInterval)
    object.__setattr__(record, "retry_intervals", intervals)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class RoutedEnvelope(_HeaderOps):
    """An envelope with where to send it and when to retry (F4).

    ``next_hop_choices`` are tried in order: if the first fails, the next. After a failed
    round the spool waits ``retry_intervals[0]``, then ``[1]``, and so on; when they run
    out the message has failed for good. The header helpers (F3) work on it directly and
    keep the routing.
    """

    envelope: Envelope
    next_hop_choices: tuple[HostPort, ...] = ()
    retry_intervals: tuple[RetryInterval, ...] = ()

    def __init__(
        self,
        *,
        envelope: Envelope,
        next_hop_choices: Iterable[HostPort] = (),
        retry_intervals: Iterable[RetryInterval] = (),
    ) -> None:
        if not isinstance(envelope, Envelope):
            raise TypeError("envelope must be an Envelope")
        object.__setattr__(self, "envelope", envelope)
        _set_routing(self, next_hop_choices, retry_intervals)

    @classmethod
    def create(
        cls,
        envelope: Envelope,
        *,
        next_hop_choices: Iterable[HostPort | str] = (),
        retry_intervals: Iterable[RetryInterval | str] = (),
    ) -> RoutedEnvelope:
        """Route ``envelope``; hops and intervals may be given as text (``mx:25``, ``5m~30s``)."""
        return cls(
            envelope=envelope,
            next_hop_choices=_to_hops(next_hop_choices),
            retry_intervals=_to_intervals(retry_intervals),
        )

    @property
    def info(self) -> EnvelopeInfo:
        """The envelope's (read-only)."""
        return self.envelope.info

    def _info(self) -> EnvelopeInfo:
        return self.envelope.info

    def _header_bytes(self) -> bytes:
        return self.envelope._header_bytes()

    def _with_header_bytes(self, block: bytes) -> Self:
        return dataclasses.replace(self, envelope=self.envelope._with_header_bytes(block))

    def split_bodiless(self) -> tuple[RoutedBodiless, bytes]:
        """The routed header part and the raw body; see :meth:`Envelope.split_bodiless`."""
        bodiless, body = self.envelope.split_bodiless()
        routed = RoutedBodiless(
            bodiless=bodiless,
            next_hop_choices=self.next_hop_choices,
            retry_intervals=self.retry_intervals,
        )
        return routed, body


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class RoutedBodiless(_HeaderOps):
    """A bodiless envelope with its routing, as it sits in a :class:`Batch` (F4); the
    header helpers (F3) work on it directly and keep the routing."""

    bodiless: EnvelopeBodiless
    next_hop_choices: tuple[HostPort, ...] = ()
    retry_intervals: tuple[RetryInterval, ...] = ()

    def __init__(
        self,
        *,
        bodiless: EnvelopeBodiless,
        next_hop_choices: Iterable[HostPort] = (),
        retry_intervals: Iterable[RetryInterval] = (),
    ) -> None:
        if not isinstance(bodiless, EnvelopeBodiless):
            raise TypeError("bodiless must be an EnvelopeBodiless")
        object.__setattr__(self, "bodiless", bodiless)
        _set_routing(self, next_hop_choices, retry_intervals)

    @property
    def info(self) -> EnvelopeInfo:
        """The bodiless envelope's (read-only)."""
        return self.bodiless.info

    def _info(self) -> EnvelopeInfo:
        return self.bodiless.info

    def _header_bytes(self) -> bytes:
        return self.bodiless.headers

    def _with_header_bytes(self, block: bytes) -> Self:
        return dataclasses.replace(self, bodiless=self.bodiless._with_header_bytes(block))

    def with_body(self, body: bytes) -> RoutedEnvelope:
        """The full routed envelope with ``body`` put back under the headers."""
        return RoutedEnvelope(
            envelope=Envelope.of_bodiless(self.bodiless, body),
            next_hop_choices=self.next_hop_choices,
            retry_intervals=self.retry_intervals,
        )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, init=False)
class Batch:
    """Envelopes that share one body (F4).

    Each member may have its own info, header block and routing; the body is stored
    once. This is how a message is kept when it goes to several destinations that need
    different headers (or were split by next hop).
    """

    envelopes: tuple[RoutedBodiless, ...]
    body: bytes

    def __init__(
        self, *, envelopes: Iterable[RoutedBodiless], body: bytes | bytearray | memoryview
    ) -> None:
        members = _frozen("envelopes", envelopes, RoutedBodiless, "")
        if isinstance(body, bytearray | memoryview):
            body = bytes(body)
        elif not isinstance(body, bytes):
            raise TypeError("body must be bytes")
        object.__setattr__(self, "envelopes", members)
        object.__setattr__(self, "body", body)

    @classmethod
    def single_envelope(cls, routed: RoutedEnvelope) -> Batch:
        """A batch of one, split at the first empty line of the message."""
        member, body = routed.split_bodiless()
        return cls(envelopes=(member,), body=body)

    def to_envelopes(self) -> list[RoutedEnvelope]:
        """Every member joined with the shared body, in order."""
        return [member.with_body(self.body) for member in self.envelopes]

    def __repr__(self) -> str:
        return f"Batch(envelopes={self.envelopes!r}, body=<{len(self.body)} bytes>)"

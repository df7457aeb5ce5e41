"""Envelope selectors (F12): which envelopes a boolean expression picks.

A selector is a small expression, readable and writable as text::

    envelope_sender /@example\\.com$/ and not exists_header X-Spam /^yes/
    exists_envelope_recipient /@corp\\.example$/ or (true and all_headers Cc /@corp\\./)

Terms (``NAME`` a header field name, ``/REGEX/`` a Python regular expression that may match
anywhere in the value, ``(?i)`` for any case):

=====================================  ========================================================
``exists_header NAME /REGEX/``         some ``NAME`` field (any case) has a matching value
``all_headers NAME /REGEX/``           every ``NAME`` field matches (true when there is none)
``envelope_sender /REGEX/``            the envelope sender matches: ``a@b.example`` as a bare
                                       address, ``<>`` for the null sender
``exists_envelope_recipient /REGEX/``  some envelope recipient matches
``all_envelope_recipients /REGEX/``    every envelope recipient matches (true when none)
``true``, ``false``                    always, never
``not X``, ``X and Y``, ``X or Y``     ``not`` binds tighter than ``and``, ``and`` than ``or``;
                                       parentheses group
=====================================  ========================================================

Header values are unfolded and not RFC 2047 decoded (what :meth:`Envelope.find_all_headers`
gives). Inside ``/.../`` a ``/`` is written ``\\/``; every other character, backslashes
included, is the regular expression's own. ``str(selector)`` writes the text that
:func:`parse` reads back to an equal selector.

This module is pure (no I/O): it evaluates on anything with a ``sender``, ``recipients`` and
``find_all_headers`` (:class:`~smtpx.envelope.Envelope`,
:class:`~smtpx.envelope.EnvelopeBodiless`, or a :class:`Fields` built from a spooled
message's record).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from smtpx.errors import ParseError

__all__ = [
    "AllEnvelopeRecipients",
    "AllHeaders",
    "And",
    "Const",
    "EnvelopeSender",
    "ExistsEnvelopeRecipient",
    "ExistsHeader",
    "Fields",
    "Not",
    "Or",
    "Selectable",
    "Selector",
    "parse",
]

MAX_DEPTH = 64  # nesting of parentheses and nots: text from a request must not exhaust the stack
MAX_LENGTH = 16 * 1024


class Selectable(Protocol):
    """What a selector looks at: :class:`~smtpx.envelope.Envelope` and its kin fit."""

    @property
    def sender(self) -> object: ...

    @property
    def recipients(self) -> Sequence[object]: ...

    def find_all_headers(self, name: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Fields:
    """A :class:`Selectable` made of plain values (a spooled message's record, say).

    ``sender`` is the reverse-path as written (``<a@b>`` or ``<>``) or a bare address;
    ``headers`` the (name, unfolded value) pairs of the header block, in order.
    """

    sender: str
    recipients: Sequence[str]
    headers: Sequence[tuple[str, str]] = ()

    def find_all_headers(self, name: str) -> list[str]:
        folded = name.lower()
        return [value for key, value in self.headers if key.lower() == folded]


def _sender_text(sender: object) -> str:
    """``a@b`` for an address (with or without <>), ``<>`` for the null sender."""
    address = getattr(sender, "address", sender)  # a Sender holds an Address or None
    if address is None:
        return "<>"
    text = str(address).strip()
    if text.startswith("<") and text.endswith(">") and text != "<>":
        text = text[1:-1]
    return text


# -- the expression tree -----------------------------------------------------------------


class _BadTerm(ParseError):
    """A term that cannot be built (the parser adds where it is)."""


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise _BadTerm(f"not a regular expression: /{_escape(pattern)}/: {exc}") from None


def _normal(pattern: str) -> str:
    """``\\/`` is ``/`` to a regular expression, and the text form writes ``/`` so."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        pair = pattern[i : i + 2]
        if pair[:1] == "\\" and len(pair) == 2:
            out.append("/" if pair == "\\/" else pair)
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


# ftext (RFC 5322 2.2) without the characters the text form uses: ( ) " /
_NAME_RE = re.compile(r"[!#-'*-.0-9;-~]+")


@dataclass(frozen=True, slots=True)
class _Pattern:
    pattern: str
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", _normal(self.pattern))
        object.__setattr__(self, "regex", _compile(self.pattern))

    @property
    def uses_headers(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class _HeaderPattern:
    name: str
    pattern: str
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise _BadTerm(f"not a header field name a selector can hold: {self.name!r}")
        object.__setattr__(self, "pattern", _normal(self.pattern))
        object.__setattr__(self, "regex", _compile(self.pattern))

    @property
    def uses_headers(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class ExistsHeader(_HeaderPattern):
    """Some field called ``name`` (any case) has a value that ``pattern`` matches."""

    def matches(self, target: Selectable) -> bool:
        return any(self.regex.search(v) for v in target.find_all_headers(self.name))

    def __str__(self) -> str:
        return f"exists_header {self.name} /{_escape(self.pattern)}/"


@dataclass(frozen=True, slots=True)
class AllHeaders(_HeaderPattern):
    """Every field called ``name`` matches (true when there is none)."""

    def matches(self, target: Selectable) -> bool:
        return all(self.regex.search(v) for v in target.find_all_headers(self.name))

    def __str__(self) -> str:
        return f"all_headers {self.name} /{_escape(self.pattern)}/"


@dataclass(frozen=True, slots=True)
class EnvelopeSender(_Pattern):
    """The envelope sender (``a@b``, or ``<>``) matches."""

    def matches(self, target: Selectable) -> bool:
        return self.regex.search(_sender_text(target.sender)) is not None

    def __str__(self) -> str:
        return f"envelope_sender /{_escape(self.pattern)}/"


@dataclass(frozen=True, slots=True)
class ExistsEnvelopeRecipient(_Pattern):
    """Some envelope recipient matches."""

    def matches(self, target: Selectable) -> bool:
        return any(self.regex.search(str(r)) for r in target.recipients)

    def __str__(self) -> str:
        return f"exists_envelope_recipient /{_escape(self.pattern)}/"


@dataclass(frozen=True, slots=True)
class AllEnvelopeRecipients(_Pattern):
    """Every envelope recipient matches (true when there is none)."""

    def matches(self, target: Selectable) -> bool:
        return all(self.regex.search(str(r)) for r in target.recipients)

    def __str__(self) -> str:
        return f"all_envelope_recipients /{_escape(self.pattern)}/"


@dataclass(frozen=True, slots=True)
class Const:
    """``true`` or ``false``."""

    value: bool

    @property
    def uses_headers(self) -> bool:
        return False

    def matches(self, target: Selectable) -> bool:
        return self.value

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(frozen=True, slots=True)
class Not:
    term: Selector

    @property
    def uses_headers(self) -> bool:
        return self.term.uses_headers

    def matches(self, target: Selectable) -> bool:
        return not self.term.matches(target)

    def __str__(self) -> str:
        return f"not {_grouped(self.term, (And, Or))}"


def _check_terms(terms: tuple[Selector, ...], what: str) -> None:
    if len(terms) < 2:
        raise ValueError(f"{what} takes two terms or more (true and false are the empty ones)")


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Selector, ...]

    def __post_init__(self) -> None:
        _check_terms(self.terms, "and")

    @property
    def uses_headers(self) -> bool:
        return any(t.uses_headers for t in self.terms)

    def matches(self, target: Selectable) -> bool:
        return all(t.matches(target) for t in self.terms)

    def __str__(self) -> str:
        return " and ".join(_grouped(t, (And, Or)) for t in self.terms)


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Selector, ...]

    def __post_init__(self) -> None:
        _check_terms(self.terms, "or")

    @property
    def uses_headers(self) -> bool:
        return any(t.uses_headers for t in self.terms)

    def matches(self, target: Selectable) -> bool:
        return any(t.matches(target) for t in self.terms)

    def __str__(self) -> str:
        return " or ".join(_grouped(t, (Or,)) for t in self.terms)


Selector = (
    Const
    | Not
    | And
    | Or
    | ExistsHeader
    | AllHeaders
    | EnvelopeSender
    | ExistsEnvelopeRecipient
    | AllEnvelopeRecipients
)


def _grouped(term: Selector, bracketed: tuple[type, ...]) -> str:
    return f"({term})" if isinstance(term, bracketed) else str(term)


def _escape(pattern: str) -> str:
    """The pattern as written between slashes: a bare ``/`` becomes ``\\/``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        out.append("\\/" if char == "/" else char)
        i += 1
    return "".join(out)


# -- the text form -------------------------------------------------------------------------

_HEADER_TERMS: dict[str, type[ExistsHeader] | type[AllHeaders]] = {
    "exists_header": ExistsHeader,
    "all_headers": AllHeaders,
}
_ENVELOPE_TERMS: dict[
    str, type[EnvelopeSender] | type[ExistsEnvelopeRecipient] | type[AllEnvelopeRecipients]
] = {
    "envelope_sender": EnvelopeSender,
    "exists_envelope_recipient": ExistsEnvelopeRecipient,
    "all_envelope_recipients": AllEnvelopeRecipients,
}
_WORD_RE = re.compile(r"[^\s()/\"]+")


def parse(text: str) -> Selector:
    """Read a selector from its text form (:class:`~smtpx.errors.ParseError` if bad)."""
    if len(text) > MAX_LENGTH:
        raise ParseError(f"a selector is {MAX_LENGTH} characters at most")
    return _Parser(text).parse()


@dataclass(slots=True)
class _Parser:
    text: str
    pos: int = 0
    depth: int = 0

    def parse(self) -> Selector:
        result = self.disjunction()
        self.skip_space()
        if self.pos < len(self.text):
            raise self.error("expected and, or, or the end")
        return result

    # -- lexing --------------------------------------------------------------------------

    def error(self, what: str) -> ParseError:
        near = self.text[self.pos : self.pos + 20]
        where = f"near {near!r}" if near else "at the end"
        return ParseError(f"selector, at character {self.pos + 1} ({where}): {what}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek_word(self) -> str | None:
        self.skip_space()
        match = _WORD_RE.match(self.text, self.pos)
        return match[0] if match else None

    def take_word(self, word: str) -> bool:
        if self.peek_word() != word:
            return False
        self.pos += len(word)
        return True

    def take_char(self, char: str) -> bool:
        self.skip_space()
        if self.text.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def name(self) -> str:
        word = self.peek_word()
        if word is None or not _NAME_RE.fullmatch(word):
            raise self.error("expected a header field name")
        self.pos += len(word)
        return word

    def regex(self) -> str:
        if not self.take_char("/"):
            raise self.error("expected a /regular expression/")
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "/":
                self.pos += 1
                return "".join(out)
            if char == "\\" and self.pos + 1 < len(text):
                following = text[self.pos + 1]
                out.append("/" if following == "/" else char + following)
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        raise self.error("a /regular expression/ without its closing /")

    # -- grammar -------------------------------------------------------------------------

    def disjunction(self) -> Selector:
        terms = [self.conjunction()]
        while self.take_word("or"):
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def conjunction(self) -> Selector:
        terms = [self.negation()]
        while self.take_word("and"):
            terms.append(self.negation())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def negation(self) -> Selector:
        if self.take_word("not"):
            with self.nested():
                return Not(self.negation())
        return self.atom()

    def nested(self) -> _Depth:
        return _Depth(self)

    def atom(self) -> Selector:
        if self.take_char("("):
            with self.nested():
                inner = self.disjunction()
            if not self.take_char(")"):
                raise self.error("expected )")
            return inner
        word = self.peek_word()
        if word is None:
            raise self.error("expected a term (true, false, not, (, exists_header ...)")
        if word in ("true", "false"):
            self.pos += len(word)
            return Const(word == "true")
        start = self.pos
        self.pos += len(word)
        try:
            if word in _HEADER_TERMS:
                name = self.name()
                pattern = self.regex()
                return _HEADER_TERMS[word](name, pattern)
            if word in _ENVELOPE_TERMS:
                pattern = self.regex()
                return _ENVELOPE_TERMS[word](pattern)
        except _BadTerm as exc:  # a regular expression that does not compile
            self.pos = start
            raise self.error(str(exc)) from None
        self.pos = start
        raise self.error(
            "expected true, false, not, (, exists_header, all_headers, envelope_sender, "
            "exists_envelope_recipient or all_envelope_recipients"
        )


@dataclass(slots=True)
class _Depth:
    parser: _Parser

    def __enter__(self) -> None:
        self.parser.depth += 1
        if self.parser.depth > MAX_DEPTH:
            raise self.parser.error(f"nested more than {MAX_DEPTH} deep")

    def __exit__(self, *exc: object) -> None:
        self.parser.depth -= 1

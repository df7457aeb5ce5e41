"""Mailbox addresses and paths (RFC 5321 section 4.1.2, RFC 6531 section 3.3).

::

    Path          = "<" [ A-d-l ":" ] Mailbox ">"        ; the source route is ignored
    Mailbox       = Local-part "@" ( Domain / address-literal )
    Local-part    = Dot-string / Quoted-string           ; RFC 6531 adds UTF-8
    Domain        = sub-domain *("." sub-domain)         ; RFC 6531 adds U-labels (IDNA 2008)
    address-literal = "[" ( IPv4 / "IPv6:" IPv6 / tag ":" dcontent ) "]"

:class:`Address` keeps the local part unquoted (its value) and the domain as written.
Domains compare case-insensitively, local parts case-sensitively (RFC 5321 2.4).
:class:`Sender` is a reverse-path: an address or the null path ``<>``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar

from smtpx.errors import ParseError
from smtpx.protocol import replies
from smtpx.protocol.domains import domain_to_ascii

__all__ = ["Address", "Sender", "match_path", "parse_path"]

# Every non-ASCII code point UTF-8 can carry (RFC 6531 section 3.3, UTF8-non-ascii): not
# the surrogates, which no UTF-8 text holds and the spool could not write.
_NON_ASCII = r"\u0080-\ud7ff\ue000-\U0010ffff"
# RFC 5322 atext, plus every non-ASCII code point.
_ATEXT = rf"A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_NON_ASCII}"
_DOT_STRING = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
# qtextSMTP = %d32-33 / %d35-91 / %d93-126 ; quoted-pairSMTP = "\" %d32-126
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_NON_ASCII}]|\\[\x20-\x7e])*"'
_LET_DIG = rf"A-Za-z0-9{_NON_ASCII}"
_SUB_DOMAIN = rf"[{_LET_DIG}](?:[{_LET_DIG}\-]*[{_LET_DIG}])?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"  # dcontent, checked further below

_MAILBOX = rf"({_DOT_STRING}|{_QUOTED})@({_DOMAIN}|{_LITERAL})"
_MAILBOX_RE = re.compile(_MAILBOX)
# A bare mailbox ends where the grammar says, at a space or the end: a quoted local part
# may hold spaces, and str(Address) writes it so.
_BARE_RE = re.compile(rf"{_MAILBOX}(?= |\Z)")
_DOT_STRING_RE = re.compile(_DOT_STRING)
_ADL = rf"@{_DOMAIN}(?:,@{_DOMAIN})*"
_PATH_RE = re.compile(
    rf"<(?:{_ADL}:)?({_DOT_STRING}|{_QUOTED})@({_DOMAIN}|{_LITERAL})>|<>|<(?i:postmaster)>"
)
_QUOTED_PAIR = re.compile(r"\\(.)")
# The null path after a display name, as async_smtp's Sender reads it: "Mailer Daemon" <>
_NAMED_NULL = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^<>@,"]*?)[ \t]*<>')
_NEEDS_ESCAPE = re.compile(r'(["\\])')

ASCII_SPACE = " \t\r\n"  # what may pad an address given as text

# RFC 5321 4.5.3.1.3: a path is at most 256 octets (so a domain at most 252).
MAX_PATH = 256


def _check_literal(literal: str) -> None:
    inner = literal[1:-1]
    if inner[:5].upper() == "IPV6:":
        if "%" in inner:
            raise ParseError(f"zone ids are not allowed in address literals: {literal}")
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            raise ParseError(f"bad IPv6 address literal {literal}") from None
        return
    if ":" in inner:
        tag, _, content = inner.partition(":")
        # General-address-literal = Standardized-tag ":" 1*dcontent (RFC 5321 4.1.3)
        if not tag or not content or not re.fullmatch(r"[A-Za-z0-9-]*[A-Za-z0-9]", tag):
            raise ParseError(f"bad address literal {literal}")
        return
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        raise ParseError(f"bad IPv4 address literal {literal}") from None


def _check_domain(domain: str) -> None:
    if domain.startswith("["):
        _check_literal(domain)
    elif not domain.isascii():
        domain_to_ascii(domain)  # a ParseError saying why IDNA 2008 refuses it
    elif len(domain) > 63 and any(len(label) > 63 for label in domain.split(".")):
        raise ParseError("domain label longer than 63 octets (RFC 1035 2.3.4)")


def _unquote(local: str) -> str:
    if local.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", local[1:-1])
    return local


def _mailbox(local: str, domain: str) -> Address:
    """The address of a mailbox the grammar matched (``local`` as written, quotes and all),
    once it passes the checks a regex cannot make; errors carry a 501 5.1.3.

    Every parser checks the length, so that any address one of them accepts is accepted
    by all (a source route, which is dropped, does not count)."""
    # RFC 5321 4.5.3.1.3: a path is at most 256 octets, its angle brackets included.
    if len(local) + len(domain) > MAX_PATH // 4 and _octets(local, domain) + 3 > MAX_PATH:
        raise ParseError(
            f"path longer than {MAX_PATH} octets (RFC 5321 4.5.3.1.3)",
            replies.address_syntax_error("Path too long"),
        )
    try:
        _check_domain(domain)
    except ParseError as exc:
        raise ParseError(str(exc), replies.address_syntax_error(str(exc))) from None
    return Address(_unquote(local), domain)


def _octets(*texts: str) -> int:
    return sum(len(text.encode("utf-8")) for text in texts)


def _quote_local(local: str) -> str:
    if local and _DOT_STRING_RE.fullmatch(local):
        return local
    return '"' + _NEEDS_ESCAPE.sub(r"\\\1", local) + '"'


class Address:
    """A mailbox ``local@domain``; the local part is held unquoted.

    The special recipient ``<Postmaster>`` (RFC 5321 4.5.1) has an empty domain.
    """

    __slots__ = ("_key", "_text", "domain", "local_part")

    local_part: str
    domain: str
    _key: tuple[str, str]
    _text: str | None  # the written form, made on first use (several times a message)

    def __init__(self, local_part: str, domain: str) -> None:
        object.__setattr__(self, "local_part", local_part)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "_key", (local_part, domain.lower()))
        object.__setattr__(self, "_text", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Address is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return bool(self._key == other._key)

    def __hash__(self) -> int:
        return hash(self._key)

    def __lt__(self, other: Address) -> bool:
        return bool(self._key < other._key)

    def __repr__(self) -> str:
        return f"Address({str(self)!r})"

    def __str__(self) -> str:
        text = self._text
        if text is None:
            local = _quote_local(self.local_part)
            text = f"{local}@{self.domain}" if self.domain else local
            object.__setattr__(self, "_text", text)
        return text

    def __reduce__(self) -> tuple[type[Address], tuple[str, str]]:
        return (Address, (self.local_part, self.domain))

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse a bare mailbox ``local@domain`` (no angle brackets)."""
        match = _MAILBOX_RE.fullmatch(text)
        if match is None:
            raise ParseError(f"not a valid mailbox: {text!r}", replies.address_syntax_error())
        return _mailbox(match[1], match[2])

    @classmethod
    def postmaster(cls) -> Address:
        return cls("Postmaster", "")

    @property
    def is_postmaster(self) -> bool:
        return not self.domain and self.local_part.lower() == "postmaster"

    @property
    def is_utf8(self) -> bool:
        """True when delivering to or from this address needs SMTPUTF8 (RFC 6531).

        A non-ASCII local part always does. A non-ASCII domain alone does not strictly
        (it can travel as an A-label), but RFC 6531 section 3.2 lets clients send it as
        UTF-8 only with SMTPUTF8, so it counts too.
        """
        return not (self.local_part.isascii() and self.domain.isascii())

    @property
    def ascii_domain(self) -> str:
        """The domain with U-labels converted to A-labels (IDNA 2008 with UTS 46 mapping,
        :func:`~smtpx.protocol.domains.domain_to_ascii`); an ASCII domain as written."""
        return domain_to_ascii(self.domain)

    def to_ascii(self) -> Address:
        """The same mailbox with an A-label domain; raises if the local part is UTF-8."""
        if not self.local_part.isascii():
            raise ParseError(f"{self} has a UTF-8 local part; it cannot be made ASCII")
        if self.domain.isascii():
            return self
        return Address(self.local_part, self.ascii_domain)

    def path(self) -> str:
        """The address in angle brackets, as it goes on the wire."""
        return f"<{self}>"


class _SenderBase:
    # ``Sender.NULL`` is declared here, not in Sender's body: there, the compiled build
    # (mypyc) would take it for a dataclass field.
    __slots__ = ()
    NULL: ClassVar[Sender]


@dataclass(frozen=True, slots=True, init=False)
class Sender(_SenderBase):
    """A reverse-path (RFC 5321 4.1.1.2): an :class:`Address`, or None for the null path ``<>``.

    The null sender is used for bounces and other notifications, which must never be
    answered by a bounce (RFC 5321 section 4.5.5).
    """

    address: Address | None = None

    # Written out: the dataclass's runs interpreted in the compiled build (performance.md).
    def __init__(self, address: Address | None = None) -> None:
        object.__setattr__(self, "address", address)

    @property
    def is_null(self) -> bool:
        return self.address is None

    @classmethod
    def of(cls, value: str | Address | Sender | None) -> Sender:
        if isinstance(value, Sender):
            return value
        if value is None:
            return cls.NULL
        if isinstance(value, Address):
            return cls(value)
        return cls.parse(value)

    @classmethod
    def parse(cls, text: str) -> Sender:
        """Parse ``<>``, ``<local@domain>`` (with an optional source route) or a bare address.

        The null path may follow a display name, ``"Mailer Daemon" <>`` (F8). Wider
        forms: :func:`smtpx.protocol.lenient.parse_sender`."""
        # ASCII white space only: U+00A0 and its kind are atext (RFC 6531), and stripping
        # them would turn one mailbox into another.
        text = text.strip(ASCII_SPACE)
        if text.endswith("<>") and _NAMED_NULL.fullmatch(text):
            return cls.NULL
        address = parse_path(text, allow_null=True)
        return cls.NULL if address is None else cls(address)

    def path(self) -> str:
        return "<>" if self.address is None else self.address.path()

    def __str__(self) -> str:
        return self.path()


Sender.NULL = Sender(None)


def match_path(
    text: str, *, allow_null: bool = False, allow_postmaster: bool = False
) -> tuple[Address | None, int]:
    """Read the path at the start of ``text``; return (address, where the path ends).

    Accepts ``<mailbox>``, ``<@relay,@relay:mailbox>`` (the source route is dropped, as
    RFC 5321 section 4.1.1.3 says it SHOULD be), ``<>`` (None) when ``allow_null``,
    ``<Postmaster>`` when ``allow_postmaster``, and, for old clients, a bare mailbox
    without brackets, followed by a space or the end. The grammar finds where the path
    ends, so a ``>`` or a space inside a quoted local part does not end it: the bare form
    reads back what ``str(address)`` writes (the spool stores recipients so).
    """
    if text.startswith("<"):
        match = _PATH_RE.match(text)
        if match is None:
            raise ParseError(f"bad path {text[:80]!r}", replies.address_syntax_error())
        end = match.end()
        local, domain = match.group(1), match.group(2)
        if local is None:
            if match.group(0) == "<>":
                if not allow_null:
                    raise ParseError(
                        "the null path <> is not allowed here",
                        replies.address_syntax_error("Null path not allowed here"),
                    )
                return None, end
            if not allow_postmaster:
                raise ParseError("<Postmaster> is only a recipient", replies.address_syntax_error())
            return Address(match.group(0)[1:-1], ""), end
    else:
        match = _BARE_RE.match(text)
        if match is None:
            word = text.partition(" ")[0]
            if allow_postmaster and word.lower() == "postmaster":
                return Address(word, ""), len(word)
            raise ParseError(f"not a valid mailbox: {text[:80]!r}", replies.address_syntax_error())
        end = match.end()
        local, domain = match.group(1), match.group(2)
    return _mailbox(local, domain), end


def parse_path(
    text: str, *, allow_null: bool = False, allow_postmaster: bool = False
) -> Address | None:
    """Parse a whole path (see :func:`match_path` for the forms accepted)."""
    address, end = match_path(text, allow_null=allow_null, allow_postmaster=allow_postmaster)
    if end != len(text):
        raise ParseError(f"junk after the path in {text[:80]!r}", replies.address_syntax_error())
    return address

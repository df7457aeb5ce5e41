"""The address forms beyond RFC 5321 that async_smtp takes (F8, F10), behind an option.

Strict RFC 5321 paths stay the default everywhere. An :class:`AddressGrammar` widens
what MAIL FROM and RCPT TO (and :func:`parse_sender`, :func:`parse_recipient`) take:

* ``default_domain``: a mailbox without a domain (``<user>``, ``user``) gets it;
* ``lenient``: also async_smtp's forms (email_message's ``Email_address`` parser): a
  display name before the angle brackets (``"Mailer Daemon" <>``, ``Joe <joe@a.b>``),
  an address wrapped in quotes (``'joe@a.b'``), a local part of any characters but
  ``<>@,`` and white space (``\\`` escapes one). The domain keeps RFC 5321's grammar:
  it is what the spool routes on.

Whatever the grammar, a form strict RFC 5321 reads is read the strict way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from smtpx.errors import ParseError
from smtpx.protocol import replies
from smtpx.protocol.addresses import (
    _DOMAIN,
    _DOT_STRING,
    _LITERAL,
    _QUOTED,
    ASCII_SPACE,
    Address,
    Sender,
    _mailbox,
    match_path,
)

__all__ = ["STRICT", "AddressGrammar", "match_lenient_path", "parse_recipient", "parse_sender"]


@dataclass(frozen=True, slots=True)
class AddressGrammar:
    """Which address forms are taken beyond RFC 5321 (see the module's text)."""

    lenient: bool = False
    default_domain: str | None = None

    def __post_init__(self) -> None:
        if self.default_domain is not None:
            Address.parse(f"postmaster@{self.default_domain}")  # a ParseError if it is bad

    @property
    def is_strict(self) -> bool:
        return not self.lenient and self.default_domain is None


STRICT = AddressGrammar()

_DOMAIN_PART = rf"(?:@({_DOMAIN}|{_LITERAL}))"
# default_domain alone: a strict local part without its domain.
_DOMAINLESS = re.compile(rf"<({_DOT_STRING}|{_QUOTED})>|({_DOT_STRING}|{_QUOTED})(?= |\Z)")
_NAME = r'(?:"(?:[^"\\]|\\.)*"|[^<>@,"]*)'
_LOCAL = r"(?:[^<>@,\s\\]|\\.)+"
_ANGLE = re.compile(rf"{_NAME}[ \t]*<(?:({_LOCAL}){_DOMAIN_PART}?)?>")
_BARE = re.compile(rf"(['\"]?)({_LOCAL}){_DOMAIN_PART}?\1(?= |\Z)")
_ESCAPE = re.compile(r"\\(.)")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def match_lenient_path(
    text: str,
    grammar: AddressGrammar,
    *,
    allow_null: bool = False,
    allow_postmaster: bool = False,
) -> tuple[Address | None, int]:
    """:func:`~smtpx.protocol.addresses.match_path` widened by ``grammar``."""
    try:
        return match_path(text, allow_null=allow_null, allow_postmaster=allow_postmaster)
    except ParseError as exc:
        if grammar.is_strict:
            raise
        found = _lenient(text, grammar) if grammar.lenient else _domainless(text)
        if found is None:
            raise exc from None
    local, domain, end = found
    if local is None:
        if not allow_null:
            raise ParseError(
                "the null path <> is not allowed here",
                replies.address_syntax_error("Null path not allowed here"),
            )
        return None, end
    return _complete(local, domain, grammar), end


def _domainless(text: str) -> tuple[str | None, str | None, int] | None:
    match = _DOMAINLESS.match(text)
    if match is None:
        return None
    local = match[1] if match[1] is not None else match[2]
    return _unquoted(local), None, match.end()


def _lenient(text: str, grammar: AddressGrammar) -> tuple[str | None, str | None, int] | None:
    match = _ANGLE.match(text)
    if match is not None:
        if match[1] is None:
            return None, None, match.end()  # "Mailer Daemon" <>
        return _ESCAPE.sub(r"\1", match[1]), match[2], match.end()
    match = _BARE.match(text)
    if match is None:
        return None
    return _ESCAPE.sub(r"\1", match[2]), match[3], match.end()


def _unquoted(local: str) -> str:
    if local.startswith('"'):
        return _ESCAPE.sub(r"\1", local[1:-1])
    return local


def _complete(local: str, domain: str | None, grammar: AddressGrammar) -> Address:
    if _CONTROLS.search(local):
        raise ParseError(f"control character in {local!r}", replies.address_syntax_error())
    if domain is None:
        if grammar.default_domain is None:
            raise ParseError(
                f"{local!r} has no domain", replies.address_syntax_error("Address has no domain")
            )
        domain = grammar.default_domain
    return _mailbox('"' + re.sub(r'(["\\])', r"\\\1", local) + '"', domain)


def parse_sender(text: str, grammar: AddressGrammar = STRICT) -> Sender:
    """A reverse-path as :meth:`Sender.parse` reads it, widened by ``grammar``."""
    text = text.strip(ASCII_SPACE)
    address, end = match_lenient_path(text, grammar, allow_null=True)
    _check_end(text, end)
    return Sender.NULL if address is None else Sender(address)


def parse_recipient(text: str, grammar: AddressGrammar = STRICT) -> Address:
    """A forward-path (``<Postmaster>`` too), widened by ``grammar``."""
    text = text.strip(ASCII_SPACE)
    address, end = match_lenient_path(text, grammar, allow_postmaster=True)
    _check_end(text, end)
    assert address is not None
    return address


def _check_end(text: str, end: int) -> None:
    if end != len(text):
        raise ParseError(f"junk after the path in {text[:80]!r}", replies.address_syntax_error())

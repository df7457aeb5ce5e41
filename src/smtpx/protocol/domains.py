"""Domain names in ASCII: the one conversion every layer uses (RFC 5890, RFC 5891).

:func:`domain_to_ascii` turns U-labels into A-labels with IDNA 2008 and the UTS 46
mapping (non-transitional), through the ``idna`` package. Addresses, the client's
fallback for servers without SMTPUTF8, routing, configuration, maildir folder names and
notices all call it, so that one domain has one ASCII form everywhere: ``straße.de`` is
``xn--strae-oqa.de`` (IDNA 2003, Python's ``"idna"`` codec, made it ``strasse.de``, a
different domain), and ``ｅｘａｍｐｌｅ．ｃｏｍ`` (fullwidth) is ``example.com``. The
``idna`` package does the work; this module adds the ASCII fast path, a cache and errors
that say what is wrong in words an SMTP reply can carry.
"""

from __future__ import annotations

import functools

import idna

from smtpx.errors import ParseError

__all__ = ["domain_to_ascii"]


@functools.lru_cache(maxsize=4096)
def domain_to_ascii(domain: str) -> str:
    """``domain`` with its U-labels as A-labels: ``idna.encode`` with the UTS 46 mapping,
    non-transitional (so ``ß`` and ``ς`` stay letters of their own).

    An ASCII domain comes back unchanged: the caller's grammar checks it, and its case
    and its labels (an underscore, say) stay as written. Any other is mapped as a whole
    (case folded, fullwidth forms and ideographic full stops made ASCII, RFC 5895), and
    then every label must be valid IDNA 2008, the ASCII ones included. Raises
    :class:`~smtpx.errors.ParseError` (a ValueError) with a printable-ASCII message,
    fit for an SMTP reply, when it is not: a symbol such as U+2603, a joiner out of
    context, a label that breaks the bidi rule or the hyphen rules, an empty label, a name
    longer than 253 characters. Cached: the relay asks for every recipient.
    """
    if domain.isascii():
        return domain
    try:
        name = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
        if name.endswith("."):
            raise idna.IDNAError("Empty Label")  # idna.encode allows a final dot
    except (idna.IDNAError, UnicodeError) as exc:
        message = f"{domain!r} is not a valid IDNA 2008 domain name: {exc}"
        raise ParseError(_printable(message)) from None
    return name


def _printable(text: str) -> str:
    """Printable ASCII, for an SMTP reply to any client: other characters as escapes."""
    return "".join(
        c if " " <= c <= "~" else c.encode("ascii", "backslashreplace").decode() for c in text
    )

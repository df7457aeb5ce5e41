"""EHLO service extensions (RFC 5321 section 4.1.1.1).

An EHLO reply is ``250-domain greeting`` followed by one line per extension::

    ehlo-line = ehlo-keyword *( SP ehlo-param )

:class:`Extensions` parses those lines into typed fields and keeps every keyword it does
not know, so a client can look at anything a server offers and a server can advertise
anything a plugin adds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from smtpx.errors import ParseError
from smtpx.protocol.replies import Reply

__all__ = ["Extensions"]

# keyword -> field name, for the extensions that take no parameter
_FLAGS = {
    "8BITMIME": "eightbitmime",  # RFC 6152
    "PIPELINING": "pipelining",  # RFC 2920
    "SMTPUTF8": "smtputf8",  # RFC 6531
    "ENHANCEDSTATUSCODES": "enhancedstatuscodes",  # RFC 2034
    "CHUNKING": "chunking",  # RFC 3030
    "BINARYMIME": "binarymime",  # RFC 3030
    "DSN": "dsn",  # RFC 3461
    "STARTTLS": "starttls",  # RFC 3207
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Extensions:
    """What a server advertised in its EHLO reply.

    ``size`` is None when SIZE was not advertised, 0 when it was advertised without a limit
    (RFC 1870 section 4), else the limit in octets. ``auth`` lists the SASL mechanisms,
    upper-cased, in the server's order (from every AUTH line, and the old ``AUTH=`` form).
    ``other`` keeps every other line verbatim.
    """

    starttls: bool = False
    auth: tuple[str, ...] = ()
    size: int | None = None
    eightbitmime: bool = False
    pipelining: bool = False
    smtputf8: bool = False
    enhancedstatuscodes: bool = False
    chunking: bool = False
    binarymime: bool = False
    dsn: bool = False
    other: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, lines: Iterable[str]) -> Extensions:
        """Parse extension lines (the EHLO reply's lines after the first)."""
        values: dict[str, object] = {}
        auth: list[str] = []
        other: list[str] = []
        for raw in lines:
            words = raw.split()
            if not words:
                continue
            keyword = words[0].upper()
            if keyword in _FLAGS:
                values[_FLAGS[keyword]] = True
            elif keyword == "SIZE":
                if len(words) > 1 and words[1].isascii() and words[1].isdigit():
                    values["size"] = int(words[1])
                elif len(words) == 1:
                    values["size"] = 0
                else:
                    other.append(raw)
            elif keyword == "AUTH" or keyword.startswith("AUTH="):
                mechs = words[1:] if keyword == "AUTH" else [keyword[5:], *words[1:]]
                # Each mechanism once, in the order named. (Not a generator given to
                # extend(): whether it sees its own additions is CPython's detail, which
                # the compiled build does not share.)
                for mech in mechs:
                    name = mech.upper()
                    if name and name not in auth:
                        auth.append(name)
            else:
                other.append(raw)
        return cls(auth=tuple(auth), other=tuple(other), **values)  # type: ignore[arg-type]

    @classmethod
    def from_reply(cls, reply: Reply) -> tuple[str, Extensions]:
        """Split an EHLO reply into (greeting line, extensions)."""
        if reply.code != 250:
            raise ParseError(f"not a successful EHLO reply: {reply}")
        return reply.lines[0], cls.parse(reply.lines[1:])

    def to_lines(self) -> list[str]:
        """The EHLO lines, in a fixed order (the unknown ones last, as they were)."""
        lines: list[str] = []
        if self.pipelining:
            lines.append("PIPELINING")
        if self.size is not None:
            lines.append(f"SIZE {self.size}" if self.size else "SIZE")
        if self.starttls:
            lines.append("STARTTLS")
        if self.auth:
            lines.append("AUTH " + " ".join(self.auth))
        if self.enhancedstatuscodes:
            lines.append("ENHANCEDSTATUSCODES")
        if self.eightbitmime:
            lines.append("8BITMIME")
        if self.binarymime:
            lines.append("BINARYMIME")
        if self.dsn:
            lines.append("DSN")
        if self.smtputf8:
            lines.append("SMTPUTF8")
        if self.chunking:
            lines.append("CHUNKING")
        lines.extend(self.other)
        return lines

    def supports(self, keyword: str) -> bool:
        """Whether ``keyword`` (any case) was advertised."""
        keyword = keyword.upper()
        if keyword in _FLAGS:
            return bool(getattr(self, _FLAGS[keyword]))
        if keyword == "SIZE":
            return self.size is not None
        if keyword == "AUTH":
            return bool(self.auth)
        return any(line.split()[0].upper() == keyword for line in self.other if line.split())

    def params(self, keyword: str) -> tuple[str, ...] | None:
        """The parameters of an advertised keyword (any case), or None if not advertised."""
        keyword = keyword.upper()
        for line in self.to_lines():
            words = line.split()
            if words and words[0].upper() == keyword:
                return tuple(words[1:])
        return None


NONE = Extensions()

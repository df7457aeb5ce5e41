"""SMTP commands (RFC 5321 section 4.1.1, plus STARTTLS, AUTH, BDAT and LMTP's LHLO).

Each command is a frozen record. :func:`parse_command` reads a command line the way real
clients write it (verbs in any case, ``MAIL FROM: <a@b>`` with a space, a bare address from
an old client, trailing blanks); :meth:`Command.to_bytes` writes the RFC 5321 form
(``MAIL FROM:<a@b> SIZE=123``). A line that cannot be understood raises
:class:`~smtpx.errors.ParseError` whose ``reply`` is the reply the server should send.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from smtpx.errors import ParseError, UnknownCommand
from smtpx.protocol import replies
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.lenient import STRICT, AddressGrammar, match_lenient_path
from smtpx.protocol.params import MailParams, RcptParams

__all__ = [
    "Auth",
    "Bdat",
    "Command",
    "Data",
    "Ehlo",
    "Expn",
    "Helo",
    "Help",
    "Lhlo",
    "Mail",
    "Noop",
    "Quit",
    "Rcpt",
    "Rset",
    "StartTls",
    "Vrfy",
    "parse_command",
]


_NO_MAIL_PARAMS = MailParams()
_NO_RCPT_PARAMS = RcptParams()


class Command:
    """Base of every command record.

    Each class's ``verb`` is set after its body, not in it: a class variable given a value
    in a dataclass's body becomes a field in the compiled build (mypyc, see
    docs/performance.md).
    """

    __slots__ = ()
    verb: ClassVar[str]

    def argument(self) -> str:
        """The text after the verb (empty when there is none)."""
        return ""

    def __str__(self) -> str:
        arg = self.argument()
        return f"{self.verb} {arg}" if arg else self.verb

    def to_bytes(self) -> bytes:
        return (str(self) + "\r\n").encode("utf-8")


# The commands a message brings write their constructors out: a dataclass's own runs
# interpreted in the compiled build (docs/performance.md, "Writing code that compiles").


@dataclass(frozen=True, slots=True, init=False)
class Helo(Command):
    domain: str

    def __init__(self, domain: str) -> None:
        object.__setattr__(self, "domain", domain)

    def argument(self) -> str:
        return self.domain


Helo.verb = "HELO"


@dataclass(frozen=True, slots=True, init=False)
class Ehlo(Command):
    domain: str

    def __init__(self, domain: str) -> None:
        object.__setattr__(self, "domain", domain)

    def argument(self) -> str:
        return self.domain


Ehlo.verb = "EHLO"


@dataclass(frozen=True, slots=True, init=False)
class Lhlo(Ehlo):
    """LMTP's EHLO (RFC 2033 4.1): the only greeting an LMTP server takes, and one an
    SMTP server refuses. A kind of :class:`Ehlo`: it asks for the same extensions."""


Lhlo.verb = "LHLO"


@dataclass(frozen=True, slots=True, init=False)
class Mail(Command):
    sender: Sender
    params: MailParams = _NO_MAIL_PARAMS

    def __init__(self, sender: Sender, params: MailParams = _NO_MAIL_PARAMS) -> None:
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "params", params)

    def __str__(self) -> str:
        params = str(self.params)
        return f"MAIL FROM:{self.sender.path()}{' ' + params if params else ''}"

    def argument(self) -> str:
        return str(self)[5:]


Mail.verb = "MAIL"


@dataclass(frozen=True, slots=True, init=False)
class Rcpt(Command):
    recipient: Address
    params: RcptParams = _NO_RCPT_PARAMS

    def __init__(self, recipient: Address, params: RcptParams = _NO_RCPT_PARAMS) -> None:
        object.__setattr__(self, "recipient", recipient)
        object.__setattr__(self, "params", params)

    def __str__(self) -> str:
        params = str(self.params)
        return f"RCPT TO:{self.recipient.path()}{' ' + params if params else ''}"

    def argument(self) -> str:
        return str(self)[5:]


Rcpt.verb = "RCPT"


@dataclass(frozen=True, slots=True)
class Data(Command):
    pass


Data.verb = "DATA"


@dataclass(frozen=True, slots=True)
class Bdat(Command):
    """``BDAT size [LAST]`` (RFC 3030); ``size`` octets of message data follow the line."""

    size: int
    last: bool = False

    def argument(self) -> str:
        return f"{self.size} LAST" if self.last else str(self.size)


Bdat.verb = "BDAT"


@dataclass(frozen=True, slots=True)
class Rset(Command):
    pass


Rset.verb = "RSET"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    text: str = ""

    def argument(self) -> str:
        return self.text


Noop.verb = "NOOP"


@dataclass(frozen=True, slots=True)
class Quit(Command):
    pass


Quit.verb = "QUIT"


@dataclass(frozen=True, slots=True)
class Vrfy(Command):
    text: str

    def argument(self) -> str:
        return self.text


Vrfy.verb = "VRFY"


@dataclass(frozen=True, slots=True)
class Expn(Command):
    text: str

    def argument(self) -> str:
        return self.text


Expn.verb = "EXPN"


@dataclass(frozen=True, slots=True)
class Help(Command):
    topic: str = ""

    def argument(self) -> str:
        return self.topic


Help.verb = "HELP"


@dataclass(frozen=True, slots=True)
class StartTls(Command):
    pass


StartTls.verb = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Auth(Command):
    """``AUTH mechanism [initial-response]`` (RFC 4954 section 4).

    ``initial_response`` is the base64 text as sent (``"="`` stands for an empty response),
    or None when the client sent none. Decoding is the SASL driver's job.
    """

    mechanism: str
    initial_response: str | None = None

    def argument(self) -> str:
        if self.initial_response is None:
            return self.mechanism
        return f"{self.mechanism} {self.initial_response}"

    def __repr__(self) -> str:
        # Never show credentials in logs or tracebacks.
        hidden = None if self.initial_response is None else "<hidden>"
        return f"Auth(mechanism={self.mechanism!r}, initial_response={hidden!r})"


Auth.verb = "AUTH"


# -------------------------------------------------------------------------------------
# Parsing
# -------------------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII digits only: str.isdigit() takes any script
_DATA = Data()
_RSET = Rset()
_QUIT = Quit()
_STARTTLS = StartTls()
_NOOP = Noop()
_HELP = Help()


def _syntax(text: str) -> ParseError:
    return ParseError(text, replies.syntax_error(text))


def _no_args(command: Command, verb: str, arg: str) -> Command:
    if arg:
        raise _syntax(f"{verb} takes no parameters")
    return command


def _parse_helo(arg: str, cls: type[Helo] | type[Ehlo]) -> Command:
    if not arg or " " in arg:
        raise _syntax(f"{cls.verb} needs one domain or address literal")
    return cls(arg)


def _path_and_params(
    arg: str,
    prefix: str,
    verb: str,
    grammar: AddressGrammar,
    *,
    allow_null: bool = False,
    allow_postmaster: bool = False,
) -> tuple[Address | None, str]:
    """Read ``FROM:<path> params``: the path's address and the parameter text."""
    if arg[: len(prefix)].upper() != prefix:
        raise _syntax(f"Syntax: {verb} {prefix}<address>")
    # Real clients write "MAIL FROM: <a@b>" (a space after the colon); accept it.
    rest = arg[len(prefix) :].lstrip(" ")
    if not rest:
        raise ParseError(
            f"{verb} needs an address",
            replies.address_syntax_error(f"Syntax: {verb} {prefix}<address>"),
        )
    address, end = match_lenient_path(
        rest, grammar, allow_null=allow_null, allow_postmaster=allow_postmaster
    )
    params = rest[end:]
    if params and params[0] != " ":
        raise ParseError("junk after the address", replies.address_syntax_error())
    return address, params.strip(" ")


def _parse_mail(arg: str, grammar: AddressGrammar = STRICT) -> Command:
    address, params = _path_and_params(arg, "FROM:", "MAIL", grammar, allow_null=True)
    return Mail(Sender.NULL if address is None else Sender(address), MailParams.parse(params))


def _parse_rcpt(arg: str, grammar: AddressGrammar = STRICT) -> Command:
    address, params = _path_and_params(arg, "TO:", "RCPT", grammar, allow_postmaster=True)
    assert address is not None
    return Rcpt(address, RcptParams.parse(params))


def _parse_bdat(arg: str) -> Command:
    words = arg.split(" ")
    if not 1 <= len(words) <= 2 or not _DIGITS.fullmatch(words[0]):
        raise _syntax("Syntax: BDAT <size> [LAST] (RFC 3030)")
    if len(words) == 2 and words[1].upper() != "LAST":
        raise _syntax("Syntax: BDAT <size> [LAST] (RFC 3030)")
    return Bdat(int(words[0]), len(words) == 2)


def _parse_auth(arg: str) -> Command:
    mechanism, _, initial = arg.partition(" ")
    if not mechanism or " " in initial:
        raise _syntax("Syntax: AUTH <mechanism> [initial-response]")
    # RFC 4422 section 3.1: mechanism names are 1-20 of A-Z 0-9 - _
    if (
        len(mechanism) > 20
        or not all(c.isalnum() or c in "-_" for c in mechanism)
        or not mechanism.isascii()
    ):
        raise _syntax("Bad SASL mechanism name")
    return Auth(mechanism.upper(), initial or None)


def _required(arg: str, verb: str) -> str:
    if not arg:
        raise _syntax(f"{verb} needs an argument")
    return arg


_PARSERS: dict[str, Callable[[str], Command]] = {
    "HELO": lambda a: _parse_helo(a, Helo),
    "EHLO": lambda a: _parse_helo(a, Ehlo),
    "LHLO": lambda a: _parse_helo(a, Lhlo),
    "MAIL": _parse_mail,
    "RCPT": _parse_rcpt,
    "DATA": lambda a: _no_args(_DATA, "DATA", a),
    "BDAT": _parse_bdat,
    "RSET": lambda a: _no_args(_RSET, "RSET", a),
    "NOOP": lambda a: Noop(a) if a else _NOOP,
    "QUIT": lambda a: _no_args(_QUIT, "QUIT", a),
    "VRFY": lambda a: Vrfy(_required(a, "VRFY")),
    "EXPN": lambda a: Expn(_required(a, "EXPN")),
    "HELP": lambda a: Help(a) if a else _HELP,
    "STARTTLS": lambda a: _no_args(_STARTTLS, "STARTTLS", a),
    "AUTH": _parse_auth,
}

VERBS = frozenset(_PARSERS)
_PATH_VERBS: dict[str, Callable[[str, AddressGrammar], Command]] = {
    "MAIL": _parse_mail,
    "RCPT": _parse_rcpt,
}


def parse_command(line: bytes | str, grammar: AddressGrammar = STRICT) -> Command:
    """Parse one command line (without its CRLF); MAIL and RCPT read their path with
    ``grammar`` (strict RFC 5321 by default; :mod:`smtpx.protocol.lenient`).

    Raises :class:`ParseError` with ``reply`` set: 500 for an unknown verb or a line that is
    not UTF-8 or holds control characters, 501 (or 501 5.1.3 for addresses) for bad
    arguments.
    """
    if isinstance(line, bytes):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(
                "command line is not UTF-8",
                replies.bad_characters("Command line is not valid UTF-8"),
            ) from None
    else:
        text = line
    text = text.rstrip(" \t")
    verb, _, arg = text.partition(" ")
    parser = _PARSERS.get(verb.upper())
    if parser is None:
        # Echo the verb only as printable ASCII: a reply must not carry CR, LF or controls.
        shown = "".join(c if c.isascii() and c.isprintable() else "?" for c in verb[:20])
        line = "".join(c if c.isprintable() else "?" for c in text)
        raise UnknownCommand(
            f"unknown command {shown!r}", replies.command_unrecognized(shown), line
        )
    if not text.isprintable():
        # CR, LF, NUL and other controls have no place in a command (RFC 5321 4.1.1).
        raise ParseError(
            "control character in command",
            replies.bad_characters("Control characters are not allowed in commands"),
        )
    if grammar is not STRICT and (path_parser := _PATH_VERBS.get(verb.upper())) is not None:
        return path_parser(arg.lstrip(" "), grammar)
    return parser(arg.lstrip(" "))

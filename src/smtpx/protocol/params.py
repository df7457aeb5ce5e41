"""ESMTP parameters of MAIL FROM and RCPT TO (RFC 5321 section 4.1.2).

::

    Mail-parameters = esmtp-param *(SP esmtp-param)
    esmtp-param     = esmtp-keyword ["=" esmtp-value]
    esmtp-keyword   = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    esmtp-value     = 1*(%d33-60 / %d62-126)        ; RFC 6531 adds UTF-8

Known parameters are parsed into fields: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030),
SMTPUTF8 (RFC 6531), AUTH (RFC 4954 section 5), RET and ENVID (RFC 3461) on MAIL;
NOTIFY and ORCPT (RFC 3461) on RCPT. Others are kept in ``extra``, for the server to
refuse with 555 or for a plugin to read. Keywords are case-insensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smtpx.errors import ParseError
from smtpx.protocol import replies

__all__ = [
    "MailParams",
    "RcptParams",
    "xtext_decode",
    "xtext_encode",
]

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")
_HEX = re.compile(r"[0-9A-Fa-f]{2}")
_DIGITS = re.compile(r"[0-9]{1,20}")  # RFC 1870: 1*20DIGIT, ASCII only
BODY_TYPES = ("7BIT", "8BITMIME", "BINARYMIME")
NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")
MAX_ENVID = 100  # RFC 3461 section 4.4


def xtext_encode(text: str) -> str:
    """xtext (RFC 3461 section 4): ``+`` ``=`` and characters outside 33..126 become ``+HH``."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def xtext_decode(text: str) -> str:
    """Inverse of :func:`xtext_encode`; a ``+`` must be followed by two hex digits."""
    if "+" not in text:
        return text
    raw = bytearray()
    pos = 0
    while (plus := text.find("+", pos)) >= 0:
        pair = text[plus + 1 : plus + 3]
        if len(pair) != 2 or not _HEX.fullmatch(pair):
            raise ParseError(f"bad xtext {text!r}: '+' must be followed by two hex digits")
        raw += text[pos:plus].encode("utf-8")
        raw.append(int(pair, 16))
        pos = plus + 3
    raw += text[pos:].encode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"xtext {text!r} does not decode to UTF-8") from None


def _syntax(message: str) -> ParseError:
    return ParseError(message, replies.syntax_error(message))


def split_params(text: str) -> list[tuple[str, str | None]]:
    """Split ``KEY=VALUE KEY`` into (upper-cased keyword, value or None) pairs."""
    pairs: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    # Parameters are separated by SP (RFC 5321 4.1.2), not by any Unicode space: a UTF-8
    # value (RFC 6531) may hold a no-break space.
    for token in filter(None, text.split(" ")):
        key, eq, value = token.partition("=")
        if not _KEYWORD.fullmatch(key):
            raise _syntax(f"Bad parameter keyword: {key[:40]}")
        if eq and not _VALUE.fullmatch(value):
            raise _syntax(f"Bad value for parameter {key.upper()}")
        key = key.upper()
        if key in seen:
            raise _syntax(f"Parameter {key} given twice")
        seen.add(key)
        pairs.append((key, value if eq else None))
    return pairs


def _format_extra(extra: tuple[tuple[str, str | None], ...]) -> list[str]:
    return [key if value is None else f"{key}={value}" for key, value in extra]


def _xtext(key: str, value: str) -> str:
    try:
        return xtext_decode(value)
    except ParseError as exc:
        raise _syntax(f"Bad xtext in {key}: {exc}") from None


def _need_value(key: str, value: str | None) -> str:
    if value is None:
        raise _syntax(f"Parameter {key} needs a value")
    return value


def _no_value(key: str, value: str | None) -> None:
    if value is not None:
        raise _syntax(f"Parameter {key} takes no value")


@dataclass(frozen=True, slots=True, kw_only=True)
class MailParams:
    """Parameters of MAIL FROM.

    ``auth`` is the RFC 4954 ``AUTH=`` mailbox after xtext decoding: ``"<>"`` when the
    client does not know the submitter, None when the parameter was not given.
    """

    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    auth: str | None = None
    ret: str | None = None
    envid: str | None = None
    extra: tuple[tuple[str, str | None], ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> MailParams:
        if not text:
            return _EMPTY_MAIL
        size = body = auth = ret = envid = None
        smtputf8 = False
        extra: list[tuple[str, str | None]] = []
        for key, value in split_params(text):
            if key == "SIZE":
                digits = _need_value(key, value)
                if not _DIGITS.fullmatch(digits):
                    raise _syntax("SIZE takes a number of octets (RFC 1870)")
                size = int(digits)
            elif key == "BODY":
                body = _need_value(key, value).upper()
                if body not in BODY_TYPES:
                    raise _syntax(f"BODY must be one of {', '.join(BODY_TYPES)}")
            elif key == "SMTPUTF8":
                _no_value(key, value)
                smtputf8 = True
            elif key == "AUTH":
                auth = _xtext(key, _need_value(key, value))
            elif key == "RET":
                ret = _need_value(key, value).upper()
                if ret not in ("FULL", "HDRS"):
                    raise _syntax("RET must be FULL or HDRS (RFC 3461)")
            elif key == "ENVID":
                envid = _xtext(key, _need_value(key, value))
                if len(envid) > MAX_ENVID:
                    raise _syntax("ENVID longer than 100 characters (RFC 3461 4.4)")
            else:
                extra.append((key, value))
        return cls(
            size=size,
            body=body,
            smtputf8=smtputf8,
            auth=auth,
            ret=ret,
            envid=envid,
            extra=tuple(extra),
        )

    def __str__(self) -> str:
        parts: list[str] = []
        if self.size is not None:
            parts.append(f"SIZE={self.size}")
        if self.body is not None:
            parts.append(f"BODY={self.body}")
        if self.smtputf8:
            parts.append("SMTPUTF8")
        if self.auth is not None:
            parts.append(f"AUTH={xtext_encode(self.auth)}")
        if self.ret is not None:
            parts.append(f"RET={self.ret}")
        if self.envid is not None:
            parts.append(f"ENVID={xtext_encode(self.envid)}")
        parts.extend(_format_extra(self.extra))
        return " ".join(parts)

    def keywords(self) -> list[str]:
        """The upper-cased keywords present, in the order :meth:`__str__` writes them."""
        return [part.partition("=")[0] for part in str(self).split()]


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptParams:
    """Parameters of RCPT TO.

    ``notify`` is None (not given), ``("NEVER",)``, or a tuple of SUCCESS/FAILURE/DELAY.
    ``orcpt`` is ``(address type, address)`` with the address xtext-decoded
    (RFC 3461 section 4.2; RFC 6533 ``utf-8`` addresses are decoded too).
    """

    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None
    extra: tuple[tuple[str, str | None], ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> RcptParams:
        if not text:
            return _EMPTY_RCPT
        notify: tuple[str, ...] | None = None
        orcpt: tuple[str, str] | None = None
        extra: list[tuple[str, str | None]] = []
        for key, value in split_params(text):
            if key == "NOTIFY":
                items = tuple(v.upper() for v in _need_value(key, value).split(","))
                if items != ("NEVER",) and (
                    not items
                    or any(v not in NOTIFY_VALUES for v in items)
                    or len(set(items)) != len(items)
                ):
                    raise _syntax("NOTIFY is NEVER or a list of SUCCESS, FAILURE, DELAY")
                notify = items
            elif key == "ORCPT":
                addr_type, semi, addr = _need_value(key, value).partition(";")
                if not semi or not addr_type or not addr:
                    raise _syntax("ORCPT is addr-type;xtext (RFC 3461 4.2)")
                orcpt = (addr_type.lower(), _decode_orcpt(addr_type, addr))
            else:
                extra.append((key, value))
        return cls(notify=notify, orcpt=orcpt, extra=tuple(extra))

    def __str__(self) -> str:
        parts: list[str] = []
        if self.notify is not None:
            parts.append(f"NOTIFY={','.join(self.notify)}")
        if self.orcpt is not None:
            addr_type, addr = self.orcpt
            parts.append(f"ORCPT={addr_type};{_encode_orcpt(addr_type, addr)}")
        parts.extend(_format_extra(self.extra))
        return " ".join(parts)

    def keywords(self) -> list[str]:
        return [part.partition("=")[0] for part in str(self).split()]


_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def _decode_orcpt(addr_type: str, addr: str) -> str:
    if addr_type.lower() == "utf-8":
        # RFC 6533 utf-8-addr-xtext: non-ASCII as \x{HEX}; plain UTF-8 is also allowed.
        try:
            return _UTF8_ESCAPE.sub(lambda m: chr(int(m[1], 16)), xtext_decode(addr))
        except (ValueError, OverflowError):
            raise _syntax("bad utf-8 ORCPT address") from None
    try:
        return xtext_decode(addr)
    except ParseError:
        raise _syntax("bad xtext in ORCPT") from None


def _encode_orcpt(addr_type: str, addr: str) -> str:
    if addr_type.lower() == "utf-8":
        return "".join(
            c if c.isascii() and c not in "\\+=" and 33 <= ord(c) <= 126 else f"\\x{{{ord(c):X}}}"
            for c in addr
        )
    return xtext_encode(addr)


_EMPTY_MAIL = MailParams()
_EMPTY_RCPT = RcptParams()

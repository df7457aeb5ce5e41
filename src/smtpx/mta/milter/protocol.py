"""The milter wire format, version 6 (sendmail's ``mfdef.h``; no RFC), without I/O.

The MTA is the client: it sends commands (:func:`command` and the helpers below) and
reads replies (:class:`Decoder`, :func:`parse_reply`). A packet is a big-endian
``uint32`` length (the code byte plus the data), the code, the data; strings end with
NUL. :data:`STAGES` is the table of the SMTP stages: each one's command, the protocol
bit with which the milter asks not to be sent it, the bit with which it says it will
not reply, its macro stage, and whether the content timeout applies.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from smtpx.errors import SMTPXError

__all__ = [
    "CHUNK",
    "STAGES",
    "VERSION",
    "Act",
    "Decoder",
    "MilterProtocolError",
    "Modification",
    "Negotiated",
    "Proto",
    "Stage",
    "Verdict",
    "body_chunks",
    "command",
    "connect",
    "macros",
    "optneg",
    "parse_optneg",
    "parse_reply",
]

VERSION = 6
CHUNK = 65535  # MILTER_CHUNK_SIZE: the largest SMFIC_BODY chunk
MAX_PACKET = 1 << 20  # a reply longer than this (1 MiB) is a broken milter


class MilterProtocolError(SMTPXError):
    """The milter broke the protocol (the milter's default action applies)."""


class Act(enum.IntFlag):
    """SMFIF_*: what the milter may do at the end of the message."""

    ADDHDRS = 0x01
    CHGBODY = 0x02
    ADDRCPT = 0x04
    DELRCPT = 0x08
    CHGHDRS = 0x10
    QUARANTINE = 0x20
    CHGFROM = 0x40
    ADDRCPT_PAR = 0x80
    SETSYMLIST = 0x100


class Proto(enum.IntFlag):
    """SMFIP_*: what the milter does not want sent, or will not answer."""

    NOCONNECT = 0x1
    NOHELO = 0x2
    NOMAIL = 0x4
    NORCPT = 0x8
    NOBODY = 0x10
    NOHDRS = 0x20
    NOEOH = 0x40
    NR_HDR = 0x80
    NOUNKNOWN = 0x100
    NODATA = 0x200
    SKIP = 0x400
    RCPT_REJ = 0x800
    NR_CONN = 0x1000
    NR_HELO = 0x2000
    NR_MAIL = 0x4000
    NR_RCPT = 0x8000
    NR_DATA = 0x10000
    NR_UNKN = 0x20000
    NR_EOH = 0x40000
    NR_BODY = 0x80000
    HDR_LEADSPC = 0x100000


# What smtpx offers: every action; every protocol bit but RCPT_REJ (refused recipients
# are not shown to milters) and the larger data sizes (bodies go in 65535-octet chunks).
OFFERED_ACTIONS = Act(0x1FF)
OFFERED_PROTOCOL = Proto(0x1FFFFF) & ~Proto.RCPT_REJ


@dataclass(frozen=True, slots=True)
class Stage:
    """One row of :data:`STAGES`."""

    code: bytes
    skip: Proto  # the milter asked not to be sent this (0: always sent)
    no_reply: Proto  # the milter will not reply to it
    macro_stage: int | None  # SMFIM_*: the macros it asked for at this stage
    content: bool  # the content timeout applies (else the command timeout)


NOTHING = Proto(0)
STAGES: Mapping[str, Stage] = {
    "connect": Stage(b"C", Proto.NOCONNECT, Proto.NR_CONN, 0, content=False),
    "helo": Stage(b"H", Proto.NOHELO, Proto.NR_HELO, 1, content=False),
    "mail": Stage(b"M", Proto.NOMAIL, Proto.NR_MAIL, 2, content=False),
    "rcpt": Stage(b"R", Proto.NORCPT, Proto.NR_RCPT, 3, content=False),
    "data": Stage(b"T", Proto.NODATA, Proto.NR_DATA, 4, content=False),
    "header": Stage(b"L", Proto.NOHDRS, Proto.NR_HDR, None, content=True),
    "eoh": Stage(b"N", Proto.NOEOH, Proto.NR_EOH, 6, content=True),
    "body": Stage(b"B", Proto.NOBODY, Proto.NR_BODY, None, content=True),
    "eom": Stage(b"E", NOTHING, NOTHING, 5, content=True),
    "unknown": Stage(b"U", Proto.NOUNKNOWN, Proto.NR_UNKN, None, content=False),
}

# Macros sent unless the milter asks for others (Postfix's defaults, those smtpx has).
DEFAULT_MACROS: Mapping[int, tuple[str, ...]] = {
    0: ("j", "_", "{daemon_name}", "{if_addr}", "{client_addr}", "{client_name}", "v"),
    1: ("{tls_version}",),
    2: ("i", "{auth_authen}", "{mail_addr}"),
    3: ("i", "{rcpt_addr}"),
    4: ("i",),
    5: ("i",),
    6: ("i",),
}


def command(code: bytes, data: bytes = b"") -> bytes:
    """One packet."""
    return struct.pack(">I", len(data) + 1) + code + data


def _z(*parts: str) -> bytes:
    return b"".join(part.encode("utf-8", "surrogateescape") + b"\0" for part in parts)


def optneg(actions: int = OFFERED_ACTIONS, protocol: int = OFFERED_PROTOCOL) -> bytes:
    """SMFIC_OPTNEG: what the MTA offers."""
    return command(b"O", struct.pack(">III", VERSION, actions, protocol))


def connect(hostname: str, address: tuple[str, int] | None) -> bytes:
    """SMFIC_CONNECT: family ``4``/``6`` with the port, or ``U`` (unknown)."""
    if address is None:
        return command(b"C", _z(hostname) + b"U")
    ip, port = address
    family = b"6" if ":" in ip else b"4"
    return command(b"C", _z(hostname) + family + struct.pack(">H", port) + _z(ip))


def macros(code: bytes, values: Mapping[str, str]) -> bytes:
    """SMFIC_MACRO for the command ``code``."""
    pairs = [part for name, value in values.items() for part in (name, value)]
    return command(b"D", code + _z(*pairs))


def strings(code: bytes, *parts: str) -> bytes:
    """A command whose data are NUL-terminated strings (HELO, MAIL, RCPT, HEADER)."""
    return command(code, _z(*parts))


def body_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """SMFIC_BODY packets of at most :data:`CHUNK` octets, from chunks of any size."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        while len(pending) >= CHUNK:
            yield command(b"B", pending[:CHUNK])
            pending = pending[CHUNK:]
    if pending:
        yield command(b"B", pending)


# -- replies ---------------------------------------------------------------------------


class Decoder:
    """Splits the octets read into (code, data) packets."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buffer += data
        packets = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack_from(">I", self._buffer)
            if not 1 <= length <= MAX_PACKET:
                raise MilterProtocolError(f"milter packet of length {length}")
            if len(self._buffer) < 4 + length:
                break
            packet = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            packets.append((packet[:1], packet[1:]))
        return packets


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The milter's answer to OPTNEG: what it will do, what it wants, and its macros
    (SMFIM stage -> names)."""

    version: int
    actions: Act
    protocol: Proto
    macros: Mapping[int, tuple[str, ...]]

    def sends(self, stage: str) -> bool:
        return not self.protocol & STAGES[stage].skip

    def replies(self, stage: str) -> bool:
        return not self.protocol & STAGES[stage].no_reply

    def macros_at(self, stage: str) -> tuple[str, ...]:
        index = STAGES[stage].macro_stage
        return () if index is None else self.macros.get(index, ())


def parse_optneg(code: bytes, data: bytes) -> Negotiated:
    """The milter's OPTNEG reply; it may not ask for more than was offered."""
    if code != b"O" or len(data) < 12:
        raise MilterProtocolError(f"expected an OPTNEG reply, got {code!r}")
    version, actions, protocol = struct.unpack_from(">III", data)
    if version < 2 or actions & ~int(OFFERED_ACTIONS):
        raise MilterProtocolError(f"milter wants version {version}, actions {actions:#x}")
    if protocol & ~int(OFFERED_PROTOCOL) & 0x1FFFFF:
        raise MilterProtocolError(f"milter wants protocol steps {protocol:#x}")
    wanted = dict(DEFAULT_MACROS)
    rest = data[12:]
    while len(rest) >= 4:
        (stage,) = struct.unpack_from(">I", rest)
        names, _, rest = rest[4:].partition(b"\0")
        wanted[stage] = tuple(names.decode("utf-8", "replace").split())
    return Negotiated(version, Act(actions), Proto(protocol & 0x1FFFFF), wanted)


class Verdict(enum.Enum):
    """A final reply to a stage."""

    CONTINUE = b"c"
    ACCEPT = b"a"
    REJECT = b"r"
    TEMPFAIL = b"t"
    DISCARD = b"d"
    CONN_FAIL = b"f"
    SHUTDOWN = b"4"
    SKIP = b"s"


@dataclass(frozen=True, slots=True)
class Modification:
    """A change asked for at the end of the message: ``kind`` is the reply code
    (``h i m e + 2 - b q``), ``index`` INSHEADER's position or CHGHEADER's occurrence,
    ``args`` the strings (or REPLBODY's chunk, as ``body``)."""

    kind: bytes
    args: tuple[str, ...] = ()
    index: int = 0
    body: bytes = b""


# The action each modification needs to have been negotiated.
MOD_ACTIONS: Mapping[bytes, Act] = {
    b"h": Act.ADDHDRS,
    b"i": Act.ADDHDRS,
    b"m": Act.CHGHDRS,
    b"e": Act.CHGFROM,
    b"+": Act.ADDRCPT,
    b"2": Act.ADDRCPT_PAR,
    b"-": Act.DELRCPT,
    b"b": Act.CHGBODY,
    b"q": Act.QUARANTINE,
}


def _strings(data: bytes, least: int) -> tuple[str, ...]:
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    if len(parts) < least:
        raise MilterProtocolError(f"milter reply with {len(parts)} strings, not {least}")
    return tuple(part.decode("utf-8", "surrogateescape") for part in parts)


def _indexed(code: bytes, data: bytes) -> Modification:
    if len(data) < 4:
        raise MilterProtocolError("milter header change without its index")
    (index,) = struct.unpack_from(">I", data)
    name, *value = _strings(data[4:], 1)
    return Modification(code, (name, value[0] if value else ""), index=index)


def parse_reply(code: bytes, data: bytes) -> Verdict | Modification | str | None:
    """A reply: a :class:`Verdict`, a :class:`Modification`, the text of a REPLYCODE
    (``"550 5.7.1 text"``) or None for PROGRESS."""
    if code == b"p":
        return None
    if code == b"y":
        return _replycode(data)
    if code in (b"i", b"m"):
        return _indexed(code, data)
    if code == b"b":
        return Modification(code, body=data)
    if code in MOD_ACTIONS:
        return Modification(code, _strings(data, 1))
    try:
        return Verdict(code)
    except ValueError:
        raise MilterProtocolError(f"unknown milter reply {code!r}") from None


def _replycode(data: bytes) -> str:
    text = data.rstrip(b"\0").decode("utf-8", "replace")
    if len(text) < 3 or text[0] not in "45" or not text[:3].isdigit():
        raise MilterProtocolError(f"milter reply code {text[:40]!r} is not 4xx or 5xx")
    return text

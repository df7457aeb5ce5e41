"""Events that flow through a connection besides commands and replies.

A :class:`~smtpx.protocol.connection.ServerConnection` yields commands
(:mod:`smtpx.protocol.commands`) and these events; a
:class:`~smtpx.protocol.connection.ClientConnection` yields :class:`Response` and
:class:`ConnectionClosed`, and is given commands and these events to send.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from smtpx.protocol.commands import Command
from smtpx.protocol.replies import Reply

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthResponse",
    "ConnectionClosed",
    "DataChunk",
    "EndOfChunk",
    "EndOfData",
    "Event",
    "Response",
    "Sentinel",
]


class Sentinel(enum.Enum):
    """``NEED_DATA``: feed more bytes. ``PAUSED``: reply to the last event first."""

    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


@dataclass(frozen=True, slots=True, init=False)
class DataChunk:
    """Part of a message body.

    From a server connection: decoded content (dot-stuffing removed, CRLF line endings).
    To a client connection: content to send; during DATA it is dot-stuffed and its line
    endings are made CRLF on the way out, during BDAT it goes out byte for byte.
    """

    data: bytes

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (ten times the cost; docs/performance.md, "Writing code that compiles").
    def __init__(self, data: bytes) -> None:
        object.__setattr__(self, "data", data)

    def __repr__(self) -> str:
        return f"DataChunk(<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True)
class EndOfData:
    """The end of the DATA content (the ``CRLF.CRLF`` terminator)."""


@dataclass(frozen=True, slots=True)
class EndOfChunk:
    """The end of one BDAT chunk; ``last`` when it was ``BDAT n LAST``."""

    last: bool


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """One client line inside an AUTH exchange (base64 text, or ``*`` to cancel)."""

    line: str

    @property
    def cancelled(self) -> bool:
        return self.line.strip() == "*"

    def __repr__(self) -> str:
        return "AuthResponse(<hidden>)"

    def to_bytes(self) -> bytes:
        return self.line.encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection (or we did, after QUIT or a 421)."""


@dataclass(frozen=True, slots=True)
class Response:
    """A reply received by a client, with what it answers.

    ``command`` is the command (or :class:`EndOfData`, :class:`AuthResponse`, or the
    :class:`~smtpx.protocol.commands.Bdat` whose chunk it acknowledges); None for the
    greeting and for an unsolicited 421.
    """

    command: Command | EndOfData | AuthResponse | None
    reply: Reply


Event = Command | DataChunk | EndOfData | EndOfChunk | AuthResponse | ConnectionClosed | Response

"""Every exception smtpx raises.

Expected negative outcomes (a rejected recipient, a 550 to MAIL FROM) are values, not
exceptions. Exceptions are for broken transports, broken peers and broken invariants, and
each one says whose fault it is::

    SMTPXError
    ├── ParseError (also ValueError)      a value (address, command, reply, parameter,
    │                                     config text) does not follow its grammar
    └── ProtocolError                     the SMTP dialogue itself went wrong
        ├── RemoteProtocolError           the peer broke the protocol; .reply is the reply
        │                                 to send back (server) or the one received (client)
        └── LocalProtocolError            our own code asked for something the protocol
                                          forbids in the current state (a bug in the caller)

Later layers add their own branches (transport, auth, spool, config) under SMTPXError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtpx.protocol.replies import Reply

__all__ = [
    "LocalProtocolError",
    "ParseError",
    "ProtocolError",
    "RemoteProtocolError",
    "SMTPXError",
]


class SMTPXError(Exception):
    """Base class of every smtpx exception."""


class ParseError(SMTPXError, ValueError):
    """Text that does not follow its grammar.

    ``reply`` is the SMTP reply a server should send when the text came from a client
    (for example ``501 5.1.3`` for a malformed address), or None when no reply applies.
    """

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class ProtocolError(SMTPXError):
    """The SMTP dialogue went wrong."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol.

    On a server connection the connection stays usable: send ``reply`` (or another reply
    of your choice) and carry on reading. ``fatal`` says that the session cannot go on
    after the reply (the connection should then be closed).
    """

    def __init__(self, message: str, reply: Reply, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.reply = reply
        self.fatal = fatal


class LocalProtocolError(ProtocolError):
    """Our side asked for something the protocol forbids (a caller bug, not the peer's)."""

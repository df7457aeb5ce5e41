"""Every exception smtpx raises.

Expected negative outcomes (a rejected recipient, a 550 to MAIL FROM) are values, not
exceptions. Exceptions are for broken transports, broken peers and broken invariants, and
each one says whose fault it is::

    SMTPXError
    ├── ParseError (also ValueError)      a value (address, command, reply, parameter,
    │                                     config text) does not follow its grammar
    ├── ProtocolError                     the SMTP dialogue itself went wrong
    │   ├── RemoteProtocolError           the peer broke the protocol; .reply is the reply
    │   │                                 to send back (server) or the one received (client)
    │   └── LocalProtocolError            our own code asked for something the protocol
    │                                     forbids in the current state (a bug in the caller)
    ├── AuthError                         SASL authentication (smtpx.auth) did not succeed
    │   ├── NoCommonMechanism             client: the server offers no mechanism that the
    │   │                                 credentials allow, and they do not allow going on
    │   │                                 unauthenticated (the user's configuration, or the
    │   │                                 server's); .client_mechanisms, .server_mechanisms
    │   ├── AuthFailed                    the exchange ended in a rejection; .reply is the
    │   │   │                             reply received (client) or the one to send (server)
    │   │   └── AuthCancelled             server: the client cancelled the exchange with "*"
    │   ├── AuthProtocolError             client: the server broke the SASL exchange (a
    │   │                                 challenge that is not base64, a challenge where the
    │   │                                 mechanism allows none): the server's fault
    │   └── AuthFlowError                 a mechanism misused its exchange callback (never
    │                                     called it, called it after the end, START_AUTH
    │                                     twice, returned before the end): a bug in the
    │                                     mechanism, not the peer's fault
    ├── ClientError                       the client could not carry a session through
    │   ├── ConnectError                  no address of the host accepted a connection;
    │   │                                 .failures lists each address with its error
    │   ├── ConnectionLost                the server closed the connection mid-session
    │   ├── ReplyTimeout (also TimeoutError) the server did not answer in time
    │   ├── SessionError                  the server refused the session itself (greeting,
    │   │                                 EHLO, STARTTLS, a failed TLS handshake); .reply
    │   ├── TlsRequiredError              TLS is required for the destination, and the
    │   │                                 server did not offer it: our policy, its lack
    │   ├── TlsPolicyError                a TLS policy check (DANE, MTA-STS) refused the
    │   │                                 server: its certificate or its TLS, found here
    │   ├── NoHopAvailable                connection cache: every next hop failed to open;
    │   │                                 .failures
    │   ├── GaveUpWaiting                 connection cache: every usable hop stayed at its
    │   │                                 connection limit until the deadline
    │   └── CacheClosed                   connection cache: closed, no new sessions
    └── ConfigError                       a configuration value is missing, of the wrong
                                          type or out of range: the operator's to fix;
                                          .key is the key path (spool.retry_intervals[2])

Later layers add their own branches (transport, spool) under SMTPXError.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtpx.protocol.replies import Reply

__all__ = [
    "AuthCancelled",
    "AuthError",
    "AuthFailed",
    "AuthFlowError",
    "AuthProtocolError",
    "CacheClosed",
    "ClientError",
    "ConfigError",
    "ConnectError",
    "ConnectionLost",
    "GaveUpWaiting",
    "LocalProtocolError",
    "NoCommonMechanism",
    "NoHopAvailable",
    "ParseError",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplyTimeout",
    "SMTPXError",
    "SessionError",
    "TlsPolicyError",
    "TlsRequiredError",
    "UnknownCommand",
    "describe",
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
    after the reply (the connection should then be closed). ``unknown``: the line of a
    command nobody defines, when that is what was refused (a plugin may answer it).
    """

    def __init__(
        self, message: str, reply: Reply, *, fatal: bool = False, unknown: str | None = None
    ) -> None:
        super().__init__(message)
        self.reply = reply
        self.fatal = fatal
        self.unknown = unknown


class UnknownCommand(ParseError):
    """A command line whose verb nothing defines (``500 5.5.1``); ``line``: the line as
    sent, control characters shown as ``?``."""

    def __init__(self, message: str, reply: Reply, line: str) -> None:
        super().__init__(message, reply)
        self.line = line


class LocalProtocolError(ProtocolError):
    """Our side asked for something the protocol forbids (a caller bug, not the peer's)."""


class AuthError(SMTPXError):
    """SASL authentication (:mod:`smtpx.auth`) did not succeed."""


class NoCommonMechanism(AuthError):
    """The client found no mechanism that both the credentials and the server allow.

    Raised by :meth:`smtpx.auth.Credentials.select` when the credentials do not include
    anonymous access (which would let the session go on unauthenticated).
    ``client_mechanisms`` are the mechanisms the credentials offered (under the TLS state
    at the time), ``server_mechanisms`` the ones the server advertised, in its order.
    """

    def __init__(
        self, *, client_mechanisms: tuple[str, ...], server_mechanisms: tuple[str, ...]
    ) -> None:
        client = " ".join(client_mechanisms) or "none"
        server = " ".join(server_mechanisms) or "none"
        super().__init__(
            "No common auth mechanism available and ANON authentication not allowed by client"
            f" (client mechanisms: {client}; server mechanisms: {server})"
        )
        self.client_mechanisms = client_mechanisms
        self.server_mechanisms = server_mechanisms


class AuthFailed(AuthError):
    """The AUTH exchange ended in a rejection.

    Client side: ``reply`` is the reply the server sent (``535 5.7.8 ...`` for bad
    credentials); the message is ``AUTH failed: <reply>``.

    Server side: a server mechanism raises it to reject the client; ``reply`` is the reply
    to send, and None stands for the default ``535 5.7.8 Authentication credentials
    invalid`` (RFC 4954 section 6), which :func:`smtpx.auth.run_server_mechanism` fills in.
    """

    def __init__(self, reply: Reply | None = None, message: str | None = None) -> None:
        if message is None:
            message = (
                f"AUTH failed: {reply}"
                if reply is not None
                else "AUTH failed: authentication credentials invalid"
            )
        super().__init__(message)
        self.reply = reply


class AuthCancelled(AuthFailed):
    """Server side: the client cancelled the exchange with ``*`` (RFC 4954 section 4);
    ``reply`` is ``501 5.7.0``."""


class AuthProtocolError(AuthError):
    """Client side: the server broke the SASL exchange (its fault, not the credentials').

    For example a 334 whose text is not base64, or a challenge to a PLAIN initial response.
    ``reply`` is the offending reply when there is one.
    """

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class AuthFlowError(AuthError):
    """A SASL mechanism misused its exchange callback: it never called it, called it after
    the exchange ended or while another call was in progress, sent ``START_AUTH`` after the
    exchange had started, or returned before the exchange completed ("AUTH flow
    incomplete"). A bug in the mechanism, not the peer's fault."""


class ClientError(SMTPXError):
    """The client could not carry a session through."""


class ConnectError(ClientError, OSError):
    """No address of ``host`` accepted a connection. ``failures`` lists (address, error)."""

    def __init__(self, host: str, port: int, failures: list[tuple[str, BaseException]]) -> None:
        detail = "; ".join(f"{address}: {describe(error)}" for address, error in failures)
        super().__init__(f"cannot connect to {host}:{port}: {detail or 'no address'}")
        self.host = host
        self.port = port
        self.failures = failures


class ConnectionLost(ClientError, ConnectionError):
    """The server closed the connection in the middle of the session."""


class ReplyTimeout(ClientError, TimeoutError):
    """The server did not answer (or take our data) in time."""


class SessionError(ClientError):
    """The server refused the session: a bad greeting, EHLO and HELO refused, STARTTLS
    refused, or a failed TLS handshake. ``reply`` is the server's reply, if any."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class TlsRequiredError(ClientError):
    """The policy for this destination requires TLS, and it could not be negotiated."""


class TlsPolicyError(ClientError):
    """A TLS policy check of the destination (a :class:`smtpx.client.TlsCheck`: DANE,
    MTA-STS) refused the server, or the destination cannot be used securely now. Found
    by this host, not said by the server: a reason to try later or another host, never
    a permanent failure."""


class NoHopAvailable(ClientError):
    """Every next hop failed to open. ``failures`` lists (hop, error)."""

    def __init__(self, failures: list[tuple[object, BaseException]]) -> None:
        detail = "; ".join(f"{hop}: {describe(error)}" for hop, error in failures)
        super().__init__(f"no next hop could be reached: {detail or 'no next hops given'}")
        self.failures = failures


class GaveUpWaiting(ClientError):
    """Every usable next hop stayed at its connection limit until the deadline."""


class CacheClosed(ClientError):
    """The connection cache is closed and hands out no more sessions."""


class ConfigError(SMTPXError):
    """A configuration value is missing, of the wrong type or out of range: the operator's
    to fix, not a bug.

    ``key`` is the path of the offending key (``spool.retry_intervals[2]``,
    ``routing.routes."example.com"``) when one applies, ``problem`` the message without
    it, and ``file`` the file read, when there is one. The message is
    ``[file: ][key: ]problem``.
    """

    def __init__(self, problem: str, *, key: str | None = None, file: str | None = None) -> None:
        message = f"{key}: {problem}" if key else problem
        if file:
            message = f"{file}: {message}"
        super().__init__(message)
        self.problem = problem
        self.key = key
        self.file = file


def describe(error: BaseException) -> str:
    """``error`` in words for people (a deferral reason, a log line): its message, never
    a Python class name. An OS error says what its number means ("Connection refused"),
    a timeout without a message says "timed out"."""
    text = str(error)
    if isinstance(error, OSError) and error.errno is not None:
        meaning = os.strerror(error.errno)
        detail = error.strerror
        return meaning if not detail or detail == meaning else f"{meaning} ({detail})"
    if text:
        return text
    if isinstance(error, TimeoutError):
        return "timed out"
    return "an unexpected error"

"""The SASL mechanism interface (DESIGN.md, "The seed interface"), client and server side.

A **client mechanism** runs the client half of one SASL mechanism. It is handed a callback,
``send_response_and_expect_challenge``, that takes

* :data:`START_AUTH`: begin the exchange without an initial response (``AUTH LOGIN``), or
* :class:`Response`: begin it with an initial response if nothing was sent yet
  (``AUTH PLAIN <base64>``), else answer the last challenge (a bare base64 line),

and returns

* :class:`Challenge`: the server's decoded ``334`` text, or
* :data:`AUTH_COMPLETED`: the server said ``235``.

Base64 is not the mechanism's business: payloads are bytes and the driver
(:func:`smtpx.auth.run_client_mechanism`) encodes and decodes them. The callback raises on
a failed exchange (:class:`~smtpx.errors.AuthFailed` for a rejection, a transport error for
a broken connection) and the mechanism lets it bubble up. It is an error never to call it
and an error to call it after the exchange completed.

A **server mechanism** runs the server half: it calls ``send_challenge_and_expect_response``
with a challenge (bytes) and gets the client's decoded answer (bytes); when the client sent
an initial response, the first call returns it without sending the challenge. It returns
the new session on success and raises :class:`~smtpx.errors.AuthFailed` to reject.

Nothing here does I/O; the drivers in :mod:`smtpx.auth.drivers` connect mechanisms to the
protocol core, and the client and server layers connect the drivers to a connection.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeAlias, TypeVar

__all__ = [
    "AUTH_COMPLETED",
    "START_AUTH",
    "AuthCompleted",
    "BaseClientMechanism",
    "BaseServerMechanism",
    "Challenge",
    "ClientMechanism",
    "Logger",
    "Response",
    "SendChallengeAndExpectResponse",
    "SendResponseAndExpectChallenge",
    "ServerMechanism",
    "StartAuth",
]


# -- exchange values ------------------------------------------------------------------


class StartAuth(enum.Enum):
    """The type of :data:`START_AUTH` (a one-member enum, so that ``is`` narrows types)."""

    START_AUTH = "START_AUTH"

    def __repr__(self) -> str:
        return self.value


class AuthCompleted(enum.Enum):
    """The type of :data:`AUTH_COMPLETED`."""

    AUTH_COMPLETED = "AUTH_COMPLETED"

    def __repr__(self) -> str:
        return self.value


START_AUTH: Final = StartAuth.START_AUTH
"""Begin the AUTH exchange without an initial response (``AUTH <MECHANISM>``)."""

AUTH_COMPLETED: Final = AuthCompleted.AUTH_COMPLETED
"""The server accepted the authentication (``235``)."""


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Response:
    """A client's SASL response: the initial response, or the answer to a challenge.

    ``data`` is the raw payload (the driver base64-encodes it); a ``str`` is encoded as
    UTF-8. The repr never shows the payload, which usually holds credentials.
    """

    data: bytes

    def __init__(self, data: bytes | bytearray | memoryview | str) -> None:
        value = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        object.__setattr__(self, "data", value)

    def __repr__(self) -> str:
        return f"Response(<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True, repr=False)
class Challenge:
    """A server's SASL challenge, base64-decoded by the driver.

    The repr shows only the length: challenges are not secret as a rule, but some
    mechanisms put session material in them.
    """

    data: bytes

    def __repr__(self) -> str:
        return f"Challenge(<{len(self.data)} bytes>)"


# -- callbacks and logging ------------------------------------------------------------


class Logger(Protocol):
    """What the mechanisms and drivers need of a logger: :class:`logging.Logger` and
    :class:`logging.LoggerAdapter` qualify (:class:`smtpx.maillog.MailLog` does not: it
    takes keyword tags, not ``%``-style arguments).

    Messages use ``%``-style arguments (``log.debug("AUTH %s started", name)``). Nothing
    in :mod:`smtpx.auth` logs a payload or a credential.
    """

    def debug(self, msg: str, /, *args: object) -> object: ...

    def info(self, msg: str, /, *args: object) -> object: ...

    def warning(self, msg: str, /, *args: object) -> object: ...


SendResponseAndExpectChallenge: TypeAlias = Callable[
    [StartAuth | Response], Awaitable[Challenge | AuthCompleted]
]
"""The client side's exchange callback (see the module docstring)."""

SendChallengeAndExpectResponse: TypeAlias = Callable[[bytes], Awaitable[bytes]]
"""The server side's exchange callback: send a challenge, get the client's answer."""


# -- client side ----------------------------------------------------------------------


class ClientMechanism(Protocol):
    """The client half of a SASL mechanism (structural: any object with these members).

    ``mechanism`` is the SASL name as advertised in EHLO (``PLAIN``). A mechanism with
    ``require_tls`` is only used once TLS is in effect (STARTTLS or implicit TLS).
    """

    @property
    def mechanism(self) -> str: ...

    @property
    def require_tls(self) -> bool: ...

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        """Run the client side of the exchange; see the module docstring for the rules.

        ``remote`` describes the peer (for log messages), or is None.
        """


class BaseClientMechanism(abc.ABC):
    """A convenient base for a client mechanism: set ``mechanism`` (and ``require_tls``,
    True unless the mechanism keeps the secret off the wire) and write ``negotiate``.

    A custom mechanism is a few lines. For example SASL EXTERNAL (RFC 4422 appendix A),
    where the TLS client certificate is the credential, sends an empty initial response and
    expects to be done::

        from smtpx.auth import AUTH_COMPLETED, BaseClientMechanism, Response
        from smtpx.errors import AuthProtocolError

        class External(BaseClientMechanism):
            mechanism = "EXTERNAL"
            require_tls = True

            async def negotiate(self, *, log, remote, send_response_and_expect_challenge):
                result = await send_response_and_expect_challenge(Response(b""))
                if result is not AUTH_COMPLETED:
                    raise AuthProtocolError("EXTERNAL: the server sent a challenge")

    Likewise a user who must send PLAIN in plaintext (a lab network) subclasses
    :class:`~smtpx.auth.Plain` with ``require_tls = False``; the built-in one never allows it.
    """

    mechanism: str
    require_tls: bool = True

    @abc.abstractmethod
    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        """Run the client side of the exchange (see :class:`ClientMechanism`)."""


# -- server side ----------------------------------------------------------------------

S = TypeVar("S")


class ServerMechanism(Protocol[S]):
    """The server half of a SASL mechanism, generic in the session type ``S``.

    ``negotiate`` returns the session to carry on with (usually a copy recording who
    authenticated) or raises :class:`~smtpx.errors.AuthFailed` to reject the client.
    """

    @property
    def mechanism(self) -> str: ...

    async def negotiate(
        self,
        *,
        log: Logger,
        session: S,
        send_challenge_and_expect_response: SendChallengeAndExpectResponse,
    ) -> S:
        """Run the server side of the exchange; the first call of the callback returns the
        client's initial response, without sending the challenge, when there was one."""


class BaseServerMechanism(abc.ABC, Generic[S]):
    """A convenient base for a server mechanism: set ``mechanism`` and write ``negotiate``."""

    mechanism: str

    @abc.abstractmethod
    async def negotiate(
        self,
        *,
        log: Logger,
        session: S,
        send_challenge_and_expect_response: SendChallengeAndExpectResponse,
    ) -> S:
        """Run the server side of the exchange (see :class:`ServerMechanism`)."""

"""The drivers: one AUTH exchange between a mechanism and the protocol core, without I/O.

The drivers hold the base64 and the rules of the seed interface; the I/O is one injected
coroutine, ``exchange``, that the client or server layer implements on its connection:

* client: ``exchange(Auth | AuthResponse) -> Reply`` sends one item and returns the
  server's reply to it;
* server: ``exchange(Reply) -> AuthResponse`` sends one ``334`` reply and returns the
  client's next line.

Neither driver logs a payload or a credential: only mechanism names, the peer, the
replies that end or cancel an exchange, and the type (never the text) of an unexpected
exception.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Awaitable, Callable
from typing import TypeVar

from smtpx.auth.interface import (
    AUTH_COMPLETED,
    START_AUTH,
    AuthCompleted,
    Challenge,
    ClientMechanism,
    Logger,
    Response,
    ServerMechanism,
    StartAuth,
)
from smtpx.errors import AuthCancelled, AuthFailed, AuthFlowError, AuthProtocolError
from smtpx.protocol import replies
from smtpx.protocol.commands import Auth
from smtpx.protocol.events import AuthResponse
from smtpx.protocol.replies import Reply

__all__ = [
    "ClientExchange",
    "ServerExchange",
    "bad_base64",
    "run_client_mechanism",
    "run_server_mechanism",
]

S = TypeVar("S")

ClientExchange = Callable[[Auth | AuthResponse], Awaitable[Reply]]
ServerExchange = Callable[[Reply], Awaitable[AuthResponse]]

_CANCEL = AuthResponse("*")


def bad_base64() -> Reply:
    """501 5.5.2: a client response that cannot be base64-decoded (RFC 4954 section 6)."""
    return Reply.of(501, "Cannot Base64-decode client response", "5.5.2")


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(text: str) -> bytes:
    """Strict RFC 4648 base64 (padding required, nothing but the alphabet)."""
    return base64.b64decode(text.encode("ascii"), validate=True)


class _Phase(enum.Enum):
    NOT_STARTED = "not started"
    WAITING = "waiting for the reply"
    CHALLENGED = "challenged"  # the peer waits for our answer (client: after a 334)
    COMPLETED = "completed"
    FAILED = "failed"
    BROKEN = "broken"  # the exchange callback raised: the transport's state is unknown


def _check_callable(name: str, phase: _Phase) -> None:
    """Refuse a call of the exchange callback once the exchange is over or while a call is
    in progress (the seed interface: calling it after the exchange completed is an error)."""
    if phase is _Phase.COMPLETED:
        raise AuthFlowError(f"AUTH {name}: exchange called after it completed")
    if phase in (_Phase.FAILED, _Phase.BROKEN):
        raise AuthFlowError(f"AUTH {name}: exchange called after it failed")
    if phase is _Phase.WAITING:
        raise AuthFlowError(f"AUTH {name}: exchange called while a call is in progress")


# ---------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------


# RFC 5321 section 4.5.3.1.4: a command line is at most 512 octets, CRLF included; an
# AUTH command with its initial response must fit (RFC 4954 section 4).
MAX_AUTH_COMMAND = 512


class _ClientFlow:
    """The state behind one ``send_response_and_expect_challenge`` callback."""

    def __init__(self, name: str, exchange: ClientExchange) -> None:
        self.name = name
        self.exchange = exchange
        self.phase = _Phase.NOT_STARTED
        self.final: Reply | None = None
        self.failure: AuthFailed | None = None
        self.transport_error: BaseException | None = None

    async def send(self, item: StartAuth | Response) -> Challenge | AuthCompleted:
        phase = self.phase
        _check_callable(self.name, phase)
        message: Auth | AuthResponse
        if item is START_AUTH:
            if phase is not _Phase.NOT_STARTED:
                raise AuthFlowError(f"AUTH {self.name}: START_AUTH after the exchange started")
            message = Auth(self.name)
        elif isinstance(item, Response):
            if phase is _Phase.NOT_STARTED:
                # RFC 4954 section 4: "=" stands for an empty initial response.
                encoded = _encode(item.data) or "="
                if len(self.name) + len(encoded) + 8 <= MAX_AUTH_COMMAND:  # AUTH, SP, CRLF
                    message = Auth(self.name, encoded)
                else:
                    # Too long to go with the command (RFC 4954 section 4 forbids it): the
                    # command alone, and the response to the server's empty challenge
                    # (RFC 4422 section 5.1). The mechanism sees one step, as it asked.
                    started = await self._ask(Auth(self.name))
                    if started.code != 334:
                        return self._outcome(started)
                    message = AuthResponse(encoded)
            else:
                message = AuthResponse(_encode(item.data))
        else:
            raise TypeError(f"expected START_AUTH or Response, not {type(item).__name__}")
        return self._outcome(await self._ask(message))

    async def _ask(self, message: Auth | AuthResponse) -> Reply:
        self.phase = _Phase.WAITING
        try:
            return await self.exchange(message)
        except BaseException as exc:
            self.phase = _Phase.BROKEN
            self.transport_error = exc
            raise

    def _outcome(self, reply: Reply) -> Challenge | AuthCompleted:
        if reply.code == 235:
            self.phase = _Phase.COMPLETED
            self.final = reply
            return AUTH_COMPLETED
        if reply.code == 334:
            self.phase = _Phase.CHALLENGED
            # A challenge may span lines; the base64 is their concatenation.
            text = "".join(line.strip() for line in reply.lines)
            try:
                return Challenge(_decode(text))
            except ValueError:  # binascii.Error, or not ASCII
                raise AuthProtocolError(
                    f"AUTH {self.name}: the server's challenge is not base64", reply
                ) from None
        self.phase = _Phase.FAILED
        self.failure = AuthFailed(reply)
        raise self.failure

    async def cancel(self, log: Logger) -> None:
        """Leave an exchange the server still expects an answer to (RFC 4954 section 4:
        ``*`` cancels, and the server answers 501), so that the session stays in step."""
        self.phase = _Phase.FAILED
        try:
            reply = await self.exchange(_CANCEL)
        except Exception as exc:  # the original failure matters more; the session is broken
            self.phase = _Phase.BROKEN
            log.warning("AUTH %s: cancelling failed: %s", self.name, type(exc).__name__)
            return
        log.debug("AUTH %s cancelled: %s", self.name, reply.code)


async def run_client_mechanism(
    mechanism: ClientMechanism,
    *,
    exchange: ClientExchange,
    log: Logger,
    remote: str | None = None,
) -> Reply:
    """Run ``mechanism`` over ``exchange``; return the server's ``235`` reply.

    The first call of ``send_response_and_expect_challenge`` sends ``AUTH MECH``
    (:data:`START_AUTH`) or ``AUTH MECH <base64>`` (:class:`Response`; ``=`` when empty;
    when that line would pass SMTP's 512 octets, ``AUTH MECH`` and then the response to
    the server's empty ``334``, RFC 4954 section 4); later calls send a bare base64 line.
    A ``235`` reply is :data:`AUTH_COMPLETED`, a ``334`` a :class:`Challenge`, anything
    else :class:`~smtpx.errors.AuthFailed` with the reply (message ``AUTH failed:
    <reply>``).

    Raises, besides what the mechanism and ``exchange`` raise (unchanged):

    * :class:`~smtpx.errors.AuthFailed`: the server rejected the exchange (also when the
      mechanism caught that failure and returned);
    * :class:`~smtpx.errors.AuthProtocolError`: a challenge that is not base64;
    * :class:`~smtpx.errors.AuthFlowError`: the mechanism never called the callback,
      called it after the end or concurrently, sent START_AUTH twice, or returned before
      the exchange completed ("AUTH flow incomplete").

    When the mechanism fails or returns early while the server waits for an answer to a
    challenge, the driver first cancels the exchange (``*``, answered by ``501``) so that
    the connection is back at the command level; a failing cancel is logged and ignored.
    """
    name = mechanism.mechanism.upper()
    flow = _ClientFlow(name, exchange)
    log.debug("AUTH %s: starting with %s", name, remote or "the server")
    try:
        await mechanism.negotiate(
            log=log, remote=remote, send_response_and_expect_challenge=flow.send
        )
    except Exception:
        if flow.phase is _Phase.CHALLENGED:
            await flow.cancel(log)
        if flow.failure is not None:
            log.info("AUTH %s failed: %s", name, flow.failure.reply)
        raise
    if flow.transport_error is not None:
        # The mechanism swallowed a broken connection: it must not pass for a success.
        raise flow.transport_error
    if flow.phase is _Phase.NOT_STARTED:
        raise AuthFlowError(
            f"AUTH {name}: the mechanism never called send_response_and_expect_challenge"
        )
    if flow.failure is not None:
        # The mechanism swallowed the rejection: it must not pass for a success.
        raise flow.failure
    if flow.phase is not _Phase.COMPLETED or flow.final is None:
        if flow.phase is _Phase.CHALLENGED:
            await flow.cancel(log)
        raise AuthFlowError(f"AUTH {name}: AUTH flow incomplete")
    log.debug("AUTH %s: authenticated", name)
    return flow.final


# ---------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------


class _ServerFlow:
    """The state behind one ``send_challenge_and_expect_response`` callback."""

    def __init__(self, name: str, initial_response: str | None, exchange: ServerExchange) -> None:
        self.name = name
        self.initial = initial_response
        self.exchange = exchange
        self.phase = _Phase.NOT_STARTED
        self.failure: AuthFailed | None = None
        self.transport_error: BaseException | None = None

    def _fail(self, failure: AuthFailed) -> AuthFailed:
        self.phase = _Phase.FAILED
        self.failure = failure
        return failure

    async def send(self, challenge: bytes) -> bytes:
        _check_callable(self.name, self.phase)
        if self.initial is not None:
            # RFC 4954 section 4: the initial response answers the first challenge, which
            # is then not sent; "=" stands for an empty one.
            text, self.initial = self.initial, None
            self.phase = _Phase.CHALLENGED
            if text.strip() == "=":
                return b""
            return self._decode(text)
        self.phase = _Phase.WAITING
        try:
            answer = await self.exchange(replies.auth_challenge(_encode(bytes(challenge))))
        except BaseException as exc:
            self.phase = _Phase.BROKEN
            self.transport_error = exc
            raise
        self.phase = _Phase.CHALLENGED
        if answer.cancelled:
            raise self._fail(
                AuthCancelled(replies.auth_cancelled(), "AUTH cancelled by the client")
            )
        return self._decode(answer.line)

    def _decode(self, text: str) -> bytes:
        try:
            return _decode(text.strip())
        except ValueError:  # binascii.Error, or not ASCII
            raise self._fail(AuthFailed(bad_base64())) from None


async def run_server_mechanism(
    mechanism: ServerMechanism[S],
    *,
    session: S,
    initial_response: str | None,
    exchange: ServerExchange,
    log: Logger,
) -> tuple[S, Reply]:
    """Run ``mechanism`` for one ``AUTH`` command; return the session and the reply to send.

    ``initial_response`` is the command's :attr:`~smtpx.protocol.commands.Auth.initial_response`
    (base64 text, ``=`` for empty, None when absent). ``send_challenge_and_expect_response``
    returns it decoded on the first call without sending anything; otherwise it sends
    ``334 <base64(challenge)>`` through ``exchange`` and decodes the answer.

    The result is ``(new session, 235 2.7.0)`` on success, and ``(session, reply)`` with
    the session unchanged when the client is turned away:

    * the mechanism raised :class:`~smtpx.errors.AuthFailed`: its reply, by default
      ``535 5.7.8`` (also when it caught the failure and returned anyway);
    * the client cancelled with ``*``: ``501 5.7.0``;
    * a response that is not base64: ``501 5.5.2``;
    * the mechanism raised anything else (a bug, a credential store that is down):
      ``454 4.7.0 Temporary authentication failure``, logged as a warning with the
      exception's type only (its text may hold credentials).

    What ``exchange`` raises (a closed connection, a timeout) propagates unchanged, as
    does :class:`BaseException` (cancellation).
    """
    name = mechanism.mechanism.upper()
    flow = _ServerFlow(name, initial_response, exchange)
    log.debug("AUTH %s: started", name)
    try:
        new_session = await mechanism.negotiate(
            log=log, session=session, send_challenge_and_expect_response=flow.send
        )
    except Exception as exc:
        if flow.transport_error is not None:
            # The connection broke: that is the news, whatever the mechanism made of it.
            if exc is flow.transport_error:
                raise
            raise flow.transport_error from exc
        if flow.failure is None and not isinstance(exc, AuthFailed):
            flow.phase = _Phase.FAILED
            log.warning("AUTH %s: the mechanism raised %s", name, type(exc).__name__)
            return session, replies.auth_temporary_failure()
        # A failure the callback raised (cancel, bad base64) wins over whatever the
        # mechanism did with it afterwards.
        failure = flow.failure if flow.failure is not None else exc
        assert isinstance(failure, AuthFailed)
        return session, _rejected(flow, failure, log)
    if flow.transport_error is not None:
        # The mechanism swallowed a broken connection: it must not pass for a success.
        raise flow.transport_error
    if flow.failure is not None:
        # The mechanism swallowed a failure: it must not pass for a success either.
        return session, _rejected(flow, flow.failure, log)
    flow.phase = _Phase.COMPLETED
    log.debug("AUTH %s: succeeded", name)
    return new_session, replies.auth_succeeded()


def _rejected(flow: _ServerFlow, failure: AuthFailed, log: Logger) -> Reply:
    flow.phase = _Phase.FAILED
    reply = failure.reply if failure.reply is not None else replies.auth_failed()
    log.info("AUTH %s failed: %s", flow.name, reply)
    return reply

"""SASL authentication for SMTP (RFC 4954), sans-I/O.

* :mod:`smtpx.auth.interface`: the seed interface (DESIGN.md): the exchange values
  :data:`START_AUTH`, :class:`Response`, :class:`Challenge`, :data:`AUTH_COMPLETED`, and
  the :class:`ClientMechanism` / :class:`ServerMechanism` protocols with convenient
  abstract bases;
* :mod:`smtpx.auth.client`: PLAIN, LOGIN, CRAM-MD5 and XOAUTH2 for clients;
* :mod:`smtpx.auth.server`: the same for servers, with injected credential checks;
* :mod:`smtpx.auth.credentials`: :class:`Credentials` and the choice of mechanism;
* :mod:`smtpx.auth.drivers`: :func:`run_client_mechanism` and
  :func:`run_server_mechanism`, which hold the base64 and the rules of the exchange and
  talk to the protocol core (:class:`~smtpx.protocol.commands.Auth`,
  :class:`~smtpx.protocol.events.AuthResponse`, :class:`~smtpx.protocol.replies.Reply`)
  through one injected coroutine.

Nothing here does I/O, and nothing here logs a credential.
"""

from smtpx.auth.client import CramMD5, Login, Plain, XOAuth2
from smtpx.auth.credentials import Credentials
from smtpx.auth.drivers import (
    ClientExchange,
    ServerExchange,
    bad_base64,
    run_client_mechanism,
    run_server_mechanism,
)
from smtpx.auth.interface import (
    AUTH_COMPLETED,
    START_AUTH,
    AuthCompleted,
    BaseClientMechanism,
    BaseServerMechanism,
    Challenge,
    ClientMechanism,
    Logger,
    Response,
    SendChallengeAndExpectResponse,
    SendResponseAndExpectChallenge,
    ServerMechanism,
    StartAuth,
)
from smtpx.auth.server import CramMD5Server, LoginServer, PlainServer, XOAuth2Server
from smtpx.errors import (
    AuthCancelled,
    AuthError,
    AuthFailed,
    AuthFlowError,
    AuthProtocolError,
    NoCommonMechanism,
)

__all__ = [
    "AUTH_COMPLETED",
    "START_AUTH",
    "AuthCancelled",
    "AuthCompleted",
    "AuthError",
    "AuthFailed",
    "AuthFlowError",
    "AuthProtocolError",
    "BaseClientMechanism",
    "BaseServerMechanism",
    "Challenge",
    "ClientExchange",
    "ClientMechanism",
    "CramMD5",
    "CramMD5Server",
    "Credentials",
    "Logger",
    "Login",
    "LoginServer",
    "NoCommonMechanism",
    "Plain",
    "PlainServer",
    "Response",
    "SendChallengeAndExpectResponse",
    "SendResponseAndExpectChallenge",
    "ServerExchange",
    "ServerMechanism",
    "StartAuth",
    "XOAuth2",
    "XOAuth2Server",
    "bad_base64",
    "run_client_mechanism",
    "run_server_mechanism",
]

"""The built-in client mechanisms: PLAIN, LOGIN, CRAM-MD5 and XOAUTH2.

Each is a frozen record holding the credentials; its repr shows the username but never the
password or token. Usually they are not built by hand: :class:`smtpx.auth.Credentials`
picks one against the server's advertised list.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpx.auth._util import HIDDEN, cram_md5_digest
from smtpx.auth.interface import (
    AUTH_COMPLETED,
    START_AUTH,
    BaseClientMechanism,
    Challenge,
    Logger,
    Response,
    SendResponseAndExpectChallenge,
)
from smtpx.errors import AuthProtocolError

__all__ = ["CramMD5", "Login", "Plain", "XOAuth2"]

# How much of an XOAUTH2 error document to log (it is the server's JSON, not a secret, but
# it is the peer's text and should stay bounded).
_MAX_LOGGED_ERROR = 300


def _no_nul(mechanism: str, **fields: str | None) -> None:
    for name, value in fields.items():
        if value is not None and "\0" in value:
            raise ValueError(f"{mechanism}: {name} may not contain NUL (RFC 4616 section 2)")


@dataclass(frozen=True, repr=False)
class Plain(BaseClientMechanism):
    """SASL PLAIN (RFC 4616): one initial response ``authzid NUL authcid NUL passwd``.

    ``on_behalf_of`` is the authorization identity (empty when None): the user to act as,
    when the server lets ``username`` do so. The password crosses the wire, so TLS is
    required. A challenge in answer to the initial response is the server's fault.
    """

    username: str
    password: str
    on_behalf_of: str | None = None
    mechanism = "PLAIN"
    require_tls = True

    def __post_init__(self) -> None:
        _no_nul(
            "PLAIN", username=self.username, password=self.password, on_behalf_of=self.on_behalf_of
        )

    def message(self) -> bytes:
        """The PLAIN message (it holds the password)."""
        return f"{self.on_behalf_of or ''}\0{self.username}\0{self.password}".encode()

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        result = await send_response_and_expect_challenge(Response(self.message()))
        if result is not AUTH_COMPLETED:
            raise AuthProtocolError("PLAIN: the server sent a challenge after the initial response")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(username={self.username!r}, password={HIDDEN},"
            f" on_behalf_of={self.on_behalf_of!r})"
        )


@dataclass(frozen=True, repr=False)
class Login(BaseClientMechanism):
    """The LOGIN mechanism (draft-murchison-sasl-login): ``AUTH LOGIN``, then the username
    and the password, each in answer to a challenge whose text is ignored (servers say
    ``Username:`` and ``Password:``, in various languages). TLS is required."""

    username: str
    password: str
    mechanism = "LOGIN"
    require_tls = True

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        send = send_response_and_expect_challenge
        if await send(START_AUTH) is AUTH_COMPLETED:
            raise AuthProtocolError("LOGIN: the server accepted before the username was sent")
        if await send(Response(self.username)) is AUTH_COMPLETED:
            raise AuthProtocolError("LOGIN: the server accepted before the password was sent")
        if await send(Response(self.password)) is not AUTH_COMPLETED:
            raise AuthProtocolError("LOGIN: the server sent a third challenge")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(username={self.username!r}, password={HIDDEN})"


@dataclass(frozen=True, repr=False)
class CramMD5(BaseClientMechanism):
    """CRAM-MD5 (RFC 2195): the server's challenge is answered with
    ``username SP hex(HMAC-MD5(password, challenge))``.

    The password never crosses the wire, so TLS is not required (but MD5 and a server that
    must store the secret in the clear make it a legacy choice).
    """

    username: str
    password: str
    mechanism = "CRAM-MD5"
    require_tls = False

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        challenge = await send_response_and_expect_challenge(START_AUTH)
        if not isinstance(challenge, Challenge):
            raise AuthProtocolError("CRAM-MD5: the server accepted without a challenge")
        digest = cram_md5_digest(self.password, challenge.data)
        result = await send_response_and_expect_challenge(Response(f"{self.username} {digest}"))
        if result is not AUTH_COMPLETED:
            raise AuthProtocolError("CRAM-MD5: the server sent a second challenge")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(username={self.username!r}, password={HIDDEN})"


@dataclass(frozen=True, repr=False)
class XOAuth2(BaseClientMechanism):
    """XOAUTH2 (Google and Microsoft): an OAuth 2.0 bearer token in the initial response
    ``user={username}^Aauth=Bearer {token}^A^A``.

    When the token is refused the server sends a challenge holding a JSON error document;
    the protocol then wants an empty response, to which the server answers with the final
    failure (``535``), raised as :class:`~smtpx.errors.AuthFailed` by the driver. The JSON
    is logged at info level. The token is a credential, so TLS is required.
    """

    username: str
    token: str
    mechanism = "XOAUTH2"
    require_tls = True

    def __post_init__(self) -> None:
        for name, value in (("username", self.username), ("token", self.token)):
            if "\x01" in value:
                raise ValueError(f"XOAUTH2: {name} may not contain ^A (\\x01)")

    def message(self) -> bytes:
        """The XOAUTH2 initial response (it holds the token)."""
        return f"user={self.username}\x01auth=Bearer {self.token}\x01\x01".encode()

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        result = await send_response_and_expect_challenge(Response(self.message()))
        if isinstance(result, Challenge):
            error = result.data[:_MAX_LOGGED_ERROR].decode("utf-8", "replace")
            log.info("XOAUTH2 refused by %s: %s", remote or "the server", error)
            # The failure itself comes as the reply to this empty response (the driver
            # raises AuthFailed with it).
            result = await send_response_and_expect_challenge(Response(b""))
            if result is not AUTH_COMPLETED:
                raise AuthProtocolError("XOAUTH2: the server sent a second challenge")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(username={self.username!r}, token={HIDDEN})"

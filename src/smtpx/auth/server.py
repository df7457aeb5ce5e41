"""The built-in server mechanisms: PLAIN, LOGIN, CRAM-MD5 and XOAUTH2.

The credential check is injected: a callback that returns a bool, or an awaitable of one
(sync and async functions both work). Anything but a bool is a bug and is not taken as a
yes. A false result rejects the client with ``535 5.7.8``.

On success the mechanism returns ``on_success(session, identity)``, or the session
unchanged when no ``on_success`` was given. ``identity`` is the SASL *authorization
identity*: the user the session now acts as, which is the username, or for PLAIN with an
authzid the ``on_behalf_of`` user that ``authenticate`` allowed. A server whose session
records the user passes, for example::

    PlainServer(check_password, on_success=lambda s, user: replace(s, authenticated=user))

Responses that decode but do not follow the mechanism's grammar get ``501 5.5.2``: RFC 4954
section 6 gives that reply to responses that cannot be base64-decoded, and a response of the
wrong shape is the same kind of fault, one that retrying will not cure (the reference's
``455`` says "try again later"). Nothing here logs a credential.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from smtpx.auth._util import check, cram_md5_digest, malformed, resolve
from smtpx.auth.interface import BaseServerMechanism, Logger, SendChallengeAndExpectResponse
from smtpx.errors import AuthFailed

__all__ = ["CramMD5Server", "LoginServer", "PlainServer", "XOAuth2Server"]

S = TypeVar("S")


def _succeed(on_success: Callable[[S, str], S] | None, session: S, identity: str) -> S:
    return session if on_success is None else on_success(session, identity)


def _text(data: bytes, mechanism: str, expected: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthFailed(malformed(mechanism, expected)) from None


@dataclass(frozen=True)
class PlainServer(BaseServerMechanism[S]):
    """SASL PLAIN (RFC 4616).

    ``authenticate(session, username, password, on_behalf_of)`` checks the password and,
    when ``on_behalf_of`` is not None (a non-empty authzid), whether ``username`` may act as
    that user. Without an initial response the server sends the empty challenge of RFC 4954
    section 4 (``334 ``). A message without exactly three NUL-separated UTF-8 fields, or
    with an empty username or password (RFC 4616 section 2 requires both), gets
    ``501 5.5.2``.
    """

    authenticate: Callable[[S, str, str, str | None], bool | Awaitable[bool]]
    on_success: Callable[[S, str], S] | None = field(default=None, kw_only=True)
    mechanism = "PLAIN"

    async def negotiate(
        self,
        *,
        log: Logger,
        session: S,
        send_challenge_and_expect_response: SendChallengeAndExpectResponse,
    ) -> S:
        expected = "authzid NUL authcid NUL passwd (RFC 4616)"
        fields = _text(await send_challenge_and_expect_response(b""), "PLAIN", expected)
        parts = fields.split("\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise AuthFailed(malformed("PLAIN", expected))
        authzid, username, password = parts
        on_behalf_of = authzid or None
        if not await check(
            self.authenticate(session, username, password, on_behalf_of), "PLAIN authenticate"
        ):
            raise AuthFailed()
        return _succeed(self.on_success, session, on_behalf_of or username)


@dataclass(frozen=True)
class LoginServer(BaseServerMechanism[S]):
    """The LOGIN mechanism: challenges ``Username:`` then ``Password:``; a client's
    initial response counts as the username (the driver returns it for the first
    challenge, which is then not sent).

    ``authenticate(session, username, password)`` checks the password.
    """

    authenticate: Callable[[S, str, str], bool | Awaitable[bool]]
    on_success: Callable[[S, str], S] | None = field(default=None, kw_only=True)
    mechanism = "LOGIN"

    async def negotiate(
        self,
        *,
        log: Logger,
        session: S,
        send_challenge_and_expect_response: SendChallengeAndExpectResponse,
    ) -> S:
        send = send_challenge_and_expect_response
        username = _text(await send(b"Username:"), "LOGIN", "a UTF-8 username")
        password = _text(await send(b"Password:"), "LOGIN", "a UTF-8 password")
        if not await check(self.authenticate(session, username, password), "LOGIN authenticate"):
            raise AuthFailed()
        return _succeed(self.on_success, session, username)


_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True)
class CramMD5Server(BaseServerMechanism[S]):
    """CRAM-MD5 (RFC 2195).

    The challenge is ``<{nonce()}@{hostname}>``; ``nonce`` is injected (pass
    :func:`secrets.token_hex`; tests pass a constant). ``lookup_secret(username)`` returns
    the shared secret, or None for an unknown user; the digest is then still computed and
    compared (with :func:`hmac.compare_digest`) so that unknown users cost the same time as
    wrong passwords. The response is ``username SP digest``, split at the last space so that
    usernames may hold spaces.
    """

    lookup_secret: Callable[[str], str | Awaitable[str | None] | None]
    hostname: str
    nonce: Callable[[], str]
    on_success: Callable[[S, str], S] | None = field(default=None, kw_only=True)
    mechanism = "CRAM-MD5"

    async def negotiate(
        self,
        *,
        log: Logger,
        session: S,
        send_challenge_and_expect_response: SendChallengeAndExpectResponse,
    ) -> S:
        expected = "username SP 32 hex digits (RFC 2195)"
        challenge = f"<{self.nonce()}@{self.hostname}>".encode()
        answer = _text(await send_challenge_and_expect_response(challenge), "CRAM-MD5", expected)
        username, space, digest = answer.rpartition(" ")
        if not space or not username or not _HEX_DIGEST.fullmatch(digest):
            raise AuthFailed(malformed("CRAM-MD5", expected))
        secret = await resolve(self.lookup_secret(username))
        wanted = cram_md5_digest(secret if secret is not None else "", challenge)
        # Both are ASCII hex (the regex above), which compare_digest takes as str.
        matches = hmac.compare_digest(wanted, digest.lower())
        if secret is None or not matches:
            raise AuthFailed()
        return _succeed(self.on_success, session, username)


_DEFAULT_XOAUTH2_ERROR = b'{"status":"401","schemes":"bearer"}'


@dataclass(frozen=True)
class XOAuth2Server(BaseServerMechanism[S]):
    """XOAUTH2: the client sends ``user={username}^Aauth=Bearer {token}^A^A``.

    ``validate_token(session, username, token)`` checks the bearer token. When it says no,
    the server sends ``error`` (a JSON document, RFC 7628 section 3.2.2 style) as a
    challenge, reads the client's (empty) answer, then rejects with ``535 5.7.8``, which is
    the dance Google's and Microsoft's servers perform.
    """

    validate_token: Callable[[S, str, str], bool | Awaitable[bool]]
    on_success: Callable[[S, str], S] | None = field(default=None, kw_only=True)
    error: bytes = field(default=_DEFAULT_XOAUTH2_ERROR, kw_only=True)
    mechanism = "XOAUTH2"

    async def negotiate(
        self,
        *,
        log: Logger,
        session: S,
        send_challenge_and_expect_response: SendChallengeAndExpectResponse,
    ) -> S:
        expected = "user=...^Aauth=Bearer ...^A^A"
        text = _text(await send_challenge_and_expect_response(b""), "XOAUTH2", expected)
        if not text.endswith("\x01\x01"):
            raise AuthFailed(malformed("XOAUTH2", expected))
        pairs = {}
        for item in text[:-2].split("\x01"):
            key, equals, value = item.partition("=")
            if not equals or key in pairs:
                raise AuthFailed(malformed("XOAUTH2", expected))
            pairs[key] = value
        username = pairs.get("user", "")
        scheme, _, token = pairs.get("auth", "").partition(" ")
        # RFC 7235 section 2.1: the auth-scheme is case-insensitive.
        if not username or scheme.lower() != "bearer" or not token:
            raise AuthFailed(malformed("XOAUTH2", expected))
        if not await check(self.validate_token(session, username, token), "XOAUTH2 validate_token"):
            await send_challenge_and_expect_response(self.error)
            raise AuthFailed()
        return _succeed(self.on_success, session, username)

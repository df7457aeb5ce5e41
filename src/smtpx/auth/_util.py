"""Small helpers shared by the mechanisms and drivers (not public)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable
from typing import TypeVar, cast

from smtpx.protocol.replies import Reply

T = TypeVar("T")

HIDDEN = "<hidden>"


async def resolve(value: T | Awaitable[T]) -> T:
    """The value, awaited first when a callback returned an awaitable (sync or async
    callbacks are both accepted)."""
    if isinstance(value, Awaitable):
        return cast(T, await value)
    return value


async def check(value: bool | Awaitable[bool], what: str) -> bool:
    """The result of a credential check; anything but a bool is a bug in the callback (a
    truthy non-bool must never let a client in)."""
    result = await resolve(value)
    if not isinstance(result, bool):
        raise TypeError(f"{what} returned {type(result).__name__}, not bool")
    return result


def cram_md5_digest(secret: str, challenge: bytes) -> str:
    """RFC 2195 section 2: the lower-case hex HMAC-MD5 of the challenge keyed by the secret."""
    return hmac.new(secret.encode("utf-8"), challenge, "md5").hexdigest()


def malformed(mechanism: str, expected: str) -> Reply:
    """501 5.5.2 for a response that decodes but does not follow the mechanism's grammar.

    RFC 4954 section 6 gives 501 5.5.2 for responses that cannot be base64-decoded; a
    response that decodes to the wrong shape is the same kind of fault (a syntax error that
    retrying will not cure), so it gets the same reply rather than the reference
    implementation's transient 455.
    """
    return Reply.of(501, f"Malformed {mechanism} response; expected {expected}", "5.5.2")

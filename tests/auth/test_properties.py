"""Every client mechanism against its server mechanism, with arbitrary credentials."""

from __future__ import annotations

import base64
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from smtpx.auth import (
    AuthFailed,
    ClientMechanism,
    CramMD5,
    CramMD5Server,
    Login,
    LoginServer,
    Plain,
    PlainServer,
    ServerMechanism,
    XOAuth2,
    XOAuth2Server,
)
from tests.auth.wire import Outcome, Session, converse, record_user


def text(exclude: str = "") -> st.SearchStrategy[str]:
    # Any Unicode scalar value (no lone surrogates: they cannot be UTF-8 encoded).
    return st.text(st.characters(codec="utf-8", exclude_characters=exclude), min_size=1)


Pair = Callable[[str, str, str], tuple[ClientMechanism, ServerMechanism[Session]]]


def plain(user: str, secret: str, offered: str) -> tuple[ClientMechanism, ServerMechanism[Session]]:
    return Plain(user, offered), PlainServer(
        lambda s, u, p, b: (u, p, b) == (user, secret, None), on_success=record_user
    )


def login(user: str, secret: str, offered: str) -> tuple[ClientMechanism, ServerMechanism[Session]]:
    return Login(user, offered), LoginServer(
        lambda s, u, p: (u, p) == (user, secret), on_success=record_user
    )


def cram(user: str, secret: str, offered: str) -> tuple[ClientMechanism, ServerMechanism[Session]]:
    return CramMD5(user, offered), CramMD5Server(
        {user: secret}.get, "mx.example.org", lambda: "12345.67890", on_success=record_user
    )


def xoauth2(
    user: str, secret: str, offered: str
) -> tuple[ClientMechanism, ServerMechanism[Session]]:
    return XOAuth2(user, offered), XOAuth2Server(
        lambda s, u, t: (u, t) == (user, secret), on_success=record_user
    )


# Wrapped in a mark that no log line holds, so that a secret of one letter still tells.
MARK = "\u2063"


def assert_no_secret_logged(outcome: Outcome, secret: str) -> None:
    logs = outcome.client_log.text + "\n" + outcome.server_log.text
    assert logs.isascii(), logs  # nothing from the payloads (the remote is ASCII here)
    assert secret not in logs
    assert base64.b64encode(secret.encode()).decode() not in logs


async def round_trip(pair: Pair, user: str, password: str) -> None:
    secret = f"{MARK}{password}{MARK}"
    client, server = pair(user, secret, secret)
    outcome = await converse(client, [server])
    assert outcome.client_error is None, outcome.transcript
    assert outcome.session == Session(authenticated=user)
    assert outcome.lines[-1] == "S: 235 2.7.0 Authentication successful"
    assert_no_secret_logged(outcome, secret)

    client, server = pair(user, secret, secret + "x")
    outcome = await converse(client, [server])
    assert isinstance(outcome.client_error, AuthFailed)
    assert outcome.client_error.reply is not None and outcome.client_error.reply.code == 535
    assert outcome.session == Session()
    assert_no_secret_logged(outcome, secret + "x")


@given(user=text("\0"), password=text("\0"))
async def test_plain_round_trip(user: str, password: str) -> None:
    await round_trip(plain, user, password)


@given(user=text(), password=text())
async def test_login_round_trip(user: str, password: str) -> None:
    await round_trip(login, user, password)


@given(user=text(), password=text())
async def test_cram_md5_round_trip(user: str, password: str) -> None:
    await round_trip(cram, user, password)


@given(user=text("\x01"), token=text("\x01"))
async def test_xoauth2_round_trip(user: str, token: str) -> None:
    await round_trip(xoauth2, user, token)


@given(user=text("\0"), password=text("\0"), behalf=text("\0"))
async def test_plain_delegation_round_trip(user: str, password: str, behalf: str) -> None:
    seen: list[tuple[str, str, str | None]] = []

    def authenticate(s: Session, u: str, p: str, b: str | None) -> bool:
        seen.append((u, p, b))
        return True

    outcome = await converse(
        Plain(user, password, on_behalf_of=behalf),
        [PlainServer(authenticate, on_success=record_user)],
    )
    assert seen == [(user, password, behalf)]
    assert outcome.session == Session(authenticated=behalf)

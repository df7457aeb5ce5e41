"""Exchange values, reprs that hide secrets, exceptions, and the Logger protocol."""

from __future__ import annotations

import logging

import pytest

from smtpx.auth import (
    AUTH_COMPLETED,
    START_AUTH,
    AuthCompleted,
    Challenge,
    CramMD5,
    Credentials,
    Logger,
    Login,
    Plain,
    Response,
    StartAuth,
    XOAuth2,
)
from smtpx.errors import AuthFailed, AuthFlowError, NoCommonMechanism, SMTPXError
from smtpx.protocol import Reply, replies

SECRET = "hunter2-Secret"


def test_response_accepts_bytes_and_str() -> None:
    assert Response(b"abc").data == b"abc"
    assert Response("héllo").data == "héllo".encode()
    assert Response(bytearray(b"x")).data == b"x"
    assert Response("a") == Response(b"a") != Response(b"b")
    assert hash(Response("a")) == hash(Response(b"a"))
    assert Response(b"a") != Challenge(b"a")


def test_challenge() -> None:
    assert Challenge(b"\x00\xff").data == b"\x00\xff"
    assert Challenge(b"a") == Challenge(b"a")
    assert {Challenge(b"a"), Challenge(b"a")} == {Challenge(b"a")}


def test_values_are_immutable() -> None:
    response = Response(b"x")
    with pytest.raises(AttributeError):
        response.data = b"y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Challenge(b"x").data = b"y"  # type: ignore[misc]


def test_reprs_never_show_payloads() -> None:
    assert repr(Response(SECRET)) == f"Response(<{len(SECRET)} bytes>)"
    assert SECRET not in repr(Challenge(SECRET.encode()))
    assert repr(START_AUTH) == "START_AUTH"
    assert repr(AUTH_COMPLETED) == "AUTH_COMPLETED"
    assert isinstance(START_AUTH, StartAuth) and isinstance(AUTH_COMPLETED, AuthCompleted)


@pytest.mark.parametrize(
    "thing",
    [
        Plain("alice", SECRET),
        Plain("alice", SECRET, on_behalf_of="bob"),
        Login("alice", SECRET),
        CramMD5("alice", SECRET),
        XOAuth2("alice", SECRET),
        Credentials.login("alice", SECRET, on_behalf_of="bob")
        + Credentials.anonymous()
        + Credentials.cram_md5("alice", SECRET)
        + Credentials.xoauth2("alice", SECRET)
        + Credentials.custom(Plain("alice", SECRET)),
    ],
    ids=repr,
)
def test_mechanism_and_credential_reprs_hide_secrets(thing: object) -> None:
    text = repr(thing) + str(thing)
    assert SECRET not in text
    assert "alice" in text or "custom(" in text
    assert "<hidden>" in text


def test_credentials_repr_reads_like_the_construction() -> None:
    creds = (
        Credentials.anonymous() + Credentials.login("a", SECRET) + Credentials.cram_md5("a", "b")
    )
    assert repr(creds) == (
        "Credentials(anonymous + login('a', password=<hidden>) + custom(CRAM-MD5))"
    )


def test_exceptions_sit_under_smtpxerror_and_say_what_happened() -> None:
    failed = AuthFailed(replies.auth_failed())
    assert isinstance(failed, SMTPXError)
    assert str(failed) == "AUTH failed: 535 5.7.8 Authentication credentials invalid"
    assert AuthFailed().reply is None
    error = NoCommonMechanism(client_mechanisms=("PLAIN",), server_mechanisms=("LOGIN",))
    assert str(error) == (
        "No common auth mechanism available and ANON authentication not allowed by client"
        " (client mechanisms: PLAIN; server mechanisms: LOGIN)"
    )
    assert isinstance(AuthFlowError("x"), SMTPXError)
    assert Reply.parse(str(failed.reply)).code == 535


def test_logging_loggers_satisfy_the_logger_protocol() -> None:
    # Checked by mypy as much as at run time.
    log: Logger = logging.getLogger("smtpx.test")
    adapter: Logger = logging.LoggerAdapter(logging.getLogger("smtpx.test"))
    assert callable(log.debug) and callable(adapter.warning)


def test_the_package_exports_resolve() -> None:
    import smtpx.auth

    exported = smtpx.auth.__all__
    assert len(exported) == len(set(exported))
    assert [name for name in exported if not hasattr(smtpx.auth, name)] == []
    assert {"Credentials", "run_client_mechanism", "run_server_mechanism"} <= set(exported)

"""The drivers' rules (the seed interface): base64, sequencing, misuse, cancel, failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from smtpx.auth import (
    AUTH_COMPLETED,
    START_AUTH,
    AuthCancelled,
    AuthCompleted,
    AuthFailed,
    AuthFlowError,
    AuthProtocolError,
    BaseClientMechanism,
    BaseServerMechanism,
    Challenge,
    ClientMechanism,
    Logger,
    Plain,
    PlainServer,
    Response,
    SendChallengeAndExpectResponse,
    SendResponseAndExpectChallenge,
    ServerMechanism,
    StartAuth,
    run_client_mechanism,
)
from smtpx.protocol import Auth, AuthResponse, Reply
from tests.auth.wire import (
    Disconnected,
    RecordingLog,
    Session,
    converse,
    expect,
    record_user,
    script_client,
    script_server,
)

Step = Callable[[SendResponseAndExpectChallenge], Awaitable[None]]
CANCELLED = "501 5.7.0 Authentication cancelled"


class Scripted(BaseClientMechanism):
    """A client mechanism whose negotiate is a test function."""

    mechanism = "X-TEST"
    require_tls = False

    def __init__(self, step: Step) -> None:
        self.step = step

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        await self.step(send_response_and_expect_challenge)


# -- client driver ---------------------------------------------------------------------


async def test_start_auth_and_responses_are_encoded() -> None:
    results: list[Challenge | AuthCompleted] = []

    async def step(send: SendResponseAndExpectChallenge) -> None:
        results.append(await send(START_AUTH))
        results.append(await send(Response("héllo")))
        results.append(await send(Response(b"")))

    outcome = await script_client(Scripted(step), ["334 Zmlyc3Q=", "334 ", "235 2.7.0 Ok"])
    assert outcome.client_error is None
    assert outcome.transcript == expect(
        "C: AUTH X-TEST",
        "S: 334 Zmlyc3Q=",
        "C: aMOpbGxv",
        "S: 334 ",
        "C: ",  # an empty later response is an empty line
        "S: 235 2.7.0 Ok",
    )
    assert results == [Challenge(b"first"), Challenge(b""), AUTH_COMPLETED]
    assert outcome.client_reply == Reply.parse("235 2.7.0 Ok")


async def test_an_empty_initial_response_is_an_equals_sign() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        assert await send(Response(b"")) is AUTH_COMPLETED

    outcome = await script_client(Scripted(step), ["235 2.7.0 Ok"])
    assert outcome.lines[0] == "C: AUTH X-TEST ="
    assert outcome.client_error is None


async def test_a_multi_line_challenge_is_concatenated() -> None:
    seen: list[Challenge | AuthCompleted] = []

    async def step(send: SendResponseAndExpectChallenge) -> None:
        seen.append(await send(START_AUTH))
        seen.append(await send(Response(b"x")))

    await script_client(Scripted(step), ["334-aGVs\r\n334 bG8=", "235 2.7.0 Ok"])
    assert seen == [Challenge(b"hello"), AUTH_COMPLETED]


async def test_never_calling_the_callback_is_an_error() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        return None

    outcome = await script_client(Scripted(step), [])
    assert isinstance(outcome.client_error, AuthFlowError)
    assert "never called" in str(outcome.client_error)
    assert outcome.lines == []


async def test_calling_after_completion_is_an_error() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        assert await send(Response(b"x")) is AUTH_COMPLETED
        await send(Response(b"again"))

    outcome = await script_client(Scripted(step), ["235 2.7.0 Ok"])
    assert isinstance(outcome.client_error, AuthFlowError)
    assert "after it completed" in str(outcome.client_error)
    assert len(outcome.lines) == 2  # nothing more was sent


async def test_start_auth_twice_is_an_error_and_cancels() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        await send(START_AUTH)
        await send(START_AUTH)

    outcome = await script_client(Scripted(step), ["334 ", CANCELLED])
    assert isinstance(outcome.client_error, AuthFlowError)
    assert "START_AUTH after the exchange started" in str(outcome.client_error)
    assert outcome.transcript == expect("C: AUTH X-TEST", "S: 334 ", "C: *", f"S: {CANCELLED}")


async def test_returning_before_completion_is_auth_flow_incomplete() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        await send(START_AUTH)

    outcome = await script_client(Scripted(step), ["334 ", CANCELLED])
    assert isinstance(outcome.client_error, AuthFlowError)
    assert str(outcome.client_error) == "AUTH X-TEST: AUTH flow incomplete"
    assert outcome.lines[-2:] == ["C: *", f"S: {CANCELLED}"]


async def test_an_undecodable_challenge_is_the_servers_fault() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        await send(START_AUTH)

    outcome = await script_client(Scripted(step), ["334 not*base64", CANCELLED])
    error = outcome.client_error
    assert isinstance(error, AuthProtocolError)
    assert error.reply == Reply.parse("334 not*base64")
    assert outcome.lines[-2:] == ["C: *", f"S: {CANCELLED}"]


async def test_any_other_reply_is_auth_failed() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        await send(START_AUTH)

    outcome = await script_client(Scripted(step), ["454 4.7.0 Temporary authentication failure"])
    error = outcome.client_error
    assert isinstance(error, AuthFailed)
    assert str(error) == "AUTH failed: 454 4.7.0 Temporary authentication failure"
    assert error.reply is not None and error.reply.is_transient
    assert len(outcome.lines) == 2  # no cancel after a final reply


async def test_calling_after_a_failure_is_an_error() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        with pytest.raises(AuthFailed):
            await send(START_AUTH)
        await send(Response(b"again"))

    outcome = await script_client(Scripted(step), ["535 5.7.8 No"])
    assert isinstance(outcome.client_error, AuthFlowError)
    assert "after it failed" in str(outcome.client_error)


async def test_a_swallowed_failure_is_raised_anyway() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        try:
            await send(START_AUTH)
        except AuthFailed:
            return

    outcome = await script_client(Scripted(step), ["535 5.7.8 No"])
    assert isinstance(outcome.client_error, AuthFailed)
    assert outcome.client_reply is None


async def test_concurrent_calls_are_an_error() -> None:
    errors: list[BaseException] = []

    async def step(send: SendResponseAndExpectChallenge) -> None:
        first = asyncio.ensure_future(send(Response(b"x")))
        await asyncio.sleep(0)
        try:
            await send(Response(b"y"))
        except AuthFlowError as exc:
            errors.append(exc)
        assert await first is AUTH_COMPLETED

    outcome = await script_client(Scripted(step), ["235 2.7.0 Ok"], yield_first=True)
    assert outcome.client_error is None
    assert len(errors) == 1 and "in progress" in str(errors[0])
    assert len(outcome.lines) == 2


async def test_exceptions_from_negotiate_bubble_up_unchanged() -> None:
    class Oops(Exception):
        pass

    async def after_challenge(send: SendResponseAndExpectChallenge) -> None:
        await send(START_AUTH)
        raise Oops

    outcome = await script_client(Scripted(after_challenge), ["334 ", CANCELLED])
    assert type(outcome.client_error) is Oops
    assert outcome.lines[-2:] == ["C: *", f"S: {CANCELLED}"]  # the session is kept in step

    async def after_completion(send: SendResponseAndExpectChallenge) -> None:
        await send(Response(b"x"))
        raise Oops

    outcome = await script_client(Scripted(after_completion), ["235 2.7.0 Ok"])
    assert type(outcome.client_error) is Oops
    assert len(outcome.lines) == 2  # nothing to cancel


async def test_a_transport_error_bubbles_up_without_a_cancel() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        await send(START_AUTH)
        await send(Response(b"x"))

    outcome = await script_client(Scripted(step), ["334 "])  # then the server is gone
    assert isinstance(outcome.client_error, Disconnected)
    assert outcome.lines == ["C: AUTH X-TEST", "S: 334 ", "C: eA=="]


async def test_a_swallowed_transport_error_is_raised_anyway() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        try:
            await send(START_AUTH)
        except Disconnected:
            return

    outcome = await script_client(Scripted(step), [])
    assert isinstance(outcome.client_error, Disconnected)


async def test_a_failing_cancel_is_logged_and_the_original_error_kept() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        await send(START_AUTH)
        raise KeyError("boom")

    outcome = await script_client(Scripted(step), ["334 "])  # no reply to the cancel
    assert isinstance(outcome.client_error, KeyError)
    assert "cancelling failed: Disconnected" in outcome.client_log.text


async def test_wrong_item_type_is_a_type_error() -> None:
    async def step(send: SendResponseAndExpectChallenge) -> None:
        await send("text")  # type: ignore[arg-type]

    outcome = await script_client(Scripted(step), [])
    assert isinstance(outcome.client_error, TypeError)


async def test_the_mechanism_name_is_sent_upper_case() -> None:
    class Lower(Plain):
        mechanism = "plain"

    sent: list[Auth | AuthResponse] = []

    async def exchange(item: Auth | AuthResponse) -> Reply:
        sent.append(item)
        return Reply.parse("235 2.7.0 Ok")

    await run_client_mechanism(Lower("u", "p"), exchange=exchange, log=RecordingLog())
    assert isinstance(sent[0], Auth) and sent[0].mechanism == "PLAIN"


# -- server driver ---------------------------------------------------------------------

PLAIN = PlainServer(lambda s, u, p, b: p == "password", on_success=record_user)


async def test_cancel_with_a_star() -> None:
    outcome = await script_server(PLAIN, "AUTH PLAIN", ["*"])
    assert outcome.transcript == expect(
        "C: AUTH PLAIN", "S: 334 ", "C: *", "S: 501 5.7.0 Authentication cancelled"
    )
    assert outcome.session == Session()


async def test_bad_base64_in_a_response() -> None:
    outcome = await script_server(PLAIN, "AUTH PLAIN", ["AHVzZXJuYW1lAHBhc3N3b3Jk!"])
    assert outcome.lines[-1] == "S: 501 5.5.2 Cannot Base64-decode client response"
    assert outcome.session == Session()


async def test_bad_base64_in_the_initial_response_sends_no_challenge() -> None:
    outcome = await script_server(PLAIN, "AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3J", [])
    assert outcome.transcript == expect(
        "C: AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3J",
        "S: 501 5.5.2 Cannot Base64-decode client response",
    )


class ServerScripted(BaseServerMechanism[Session]):
    """A server mechanism whose negotiate is a test function."""

    mechanism = "X-TEST"

    def __init__(
        self, step: Callable[[Session, SendChallengeAndExpectResponse], Awaitable[Session]]
    ) -> None:
        self.step = step

    async def negotiate(
        self,
        *,
        log: Logger,
        session: Session,
        send_challenge_and_expect_response: SendChallengeAndExpectResponse,
    ) -> Session:
        return await self.step(session, send_challenge_and_expect_response)


async def test_equals_is_an_empty_initial_response() -> None:
    got: list[bytes] = []

    async def step(session: Session, send: SendChallengeAndExpectResponse) -> Session:
        got.append(await send(b"ignored"))
        got.append(await send(b"next"))
        return replace(session, authenticated="x")

    outcome = await script_server(ServerScripted(step), "AUTH X-TEST =", ["eQ=="])
    assert got == [b"", b"y"]
    assert outcome.transcript == expect(
        "C: AUTH X-TEST =",
        "S: 334 bmV4dA==",
        "C: eQ==",
        "S: 235 2.7.0 Authentication successful",
    )


async def test_server_call_after_completion_raises() -> None:
    kept: list[SendChallengeAndExpectResponse] = []

    async def step(session: Session, send: SendChallengeAndExpectResponse) -> Session:
        kept.append(send)
        await send(b"")
        return session

    outcome = await script_server(ServerScripted(step), "AUTH X-TEST eA==", [])
    assert outcome.server_reply is not None and outcome.server_reply.code == 235
    with pytest.raises(AuthFlowError, match="after it completed"):
        await kept[0](b"")


async def test_server_call_after_failure_keeps_the_failure() -> None:
    async def step(session: Session, send: SendChallengeAndExpectResponse) -> Session:
        with contextlib.suppress(AuthCancelled):
            await send(b"")
        with pytest.raises(AuthFlowError, match="after it failed"):
            await send(b"")
        return replace(session, authenticated="mallory")  # must not count

    outcome = await script_server(ServerScripted(step), "AUTH X-TEST", ["*"])
    assert outcome.lines[-1] == "S: 501 5.7.0 Authentication cancelled"
    assert outcome.session == Session()


async def test_server_concurrent_calls_raise() -> None:
    async def step(session: Session, send: SendChallengeAndExpectResponse) -> Session:
        first = asyncio.ensure_future(send(b"a"))
        await asyncio.sleep(0)
        with pytest.raises(AuthFlowError, match="in progress"):
            await send(b"b")
        await first
        return replace(session, authenticated="ok")

    outcome = await script_server(ServerScripted(step), "AUTH X-TEST", ["eA=="])
    assert outcome.session == Session(authenticated="ok")
    assert outcome.lines.count("S: 334 YQ==") == 1
    assert "S: 334 Yg==" not in outcome.lines


async def test_a_custom_reject_reply() -> None:
    async def step(session: Session, send: SendChallengeAndExpectResponse) -> Session:
        await send(b"")
        raise AuthFailed(Reply.of(534, "Authentication mechanism is too weak", "5.7.9"))

    outcome = await script_server(ServerScripted(step), "AUTH X-TEST eA==", [])
    assert outcome.lines[-1] == "S: 534 5.7.9 Authentication mechanism is too weak"


async def test_an_unexpected_exception_is_a_temporary_failure_without_secrets() -> None:
    async def step(session: Session, send: SendChallengeAndExpectResponse) -> Session:
        secret = (await send(b"")).decode()
        raise KeyError(secret)

    outcome = await script_server(ServerScripted(step), "AUTH X-TEST c2VjcmV0LXB3", [])
    assert outcome.lines[-1] == "S: 454 4.7.0 Temporary authentication failure"
    assert "KeyError" in outcome.server_log.text
    assert "secret-pw" not in outcome.server_log.text


async def test_a_server_transport_error_propagates() -> None:
    with pytest.raises(Disconnected):
        await script_server(PLAIN, "AUTH PLAIN", [])

    async def swallow(session: Session, send: SendChallengeAndExpectResponse) -> Session:
        try:
            await send(b"")
        except Disconnected:
            raise AuthFailed() from None
        return session

    with pytest.raises(Disconnected):
        await script_server(ServerScripted(swallow), "AUTH X-TEST", [])

    async def ignore(session: Session, send: SendChallengeAndExpectResponse) -> Session:
        with contextlib.suppress(Disconnected):
            await send(b"")
        return replace(session, authenticated="mallory")

    with pytest.raises(Disconnected):
        await script_server(ServerScripted(ignore), "AUTH X-TEST", [])


# -- a custom mechanism pair, defined here -----------------------------------------------


class Otp(BaseClientMechanism):
    """X-OTP: the server sends a nonce, the client answers ``user:code`` where the code
    is derived from the nonce; several rounds, no initial response."""

    mechanism = "X-OTP"
    require_tls = False

    def __init__(self, user: str, seed: int) -> None:
        self.user, self.seed = user, seed

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        result = await send_response_and_expect_challenge(START_AUTH)
        while isinstance(result, Challenge):
            code = int(result.data) * self.seed % 9973
            result = await send_response_and_expect_challenge(Response(f"{self.user}:{code}"))


class OtpServer(BaseServerMechanism[Session]):
    mechanism = "X-OTP"

    def __init__(self, seeds: dict[str, int], rounds: int) -> None:
        self.seeds, self.rounds = seeds, rounds

    async def negotiate(
        self,
        *,
        log: Logger,
        session: Session,
        send_challenge_and_expect_response: SendChallengeAndExpectResponse,
    ) -> Session:
        user = ""
        for nonce in range(100, 100 + self.rounds):
            answer = (await send_challenge_and_expect_response(str(nonce).encode())).decode()
            user, _, code = answer.partition(":")
            if user not in self.seeds or int(code) != nonce * self.seeds[user] % 9973:
                raise AuthFailed()
        return replace(session, authenticated=user)


async def test_a_custom_mechanism_pair() -> None:
    client: ClientMechanism = Otp("carol", 7)
    server: ServerMechanism[Session] = OtpServer({"carol": 7}, rounds=3)
    outcome = await converse(client, [server])
    assert outcome.transcript == expect(
        "C: AUTH X-OTP",
        "S: 334 MTAw",
        "C: Y2Fyb2w6NzAw",  # carol:700
        "S: 334 MTAx",
        "C: Y2Fyb2w6NzA3",  # carol:707
        "S: 334 MTAy",
        "C: Y2Fyb2w6NzE0",  # carol:714
        "S: 235 2.7.0 Authentication successful",
    )
    assert outcome.session == Session(authenticated="carol")

    wrong = await converse(Otp("carol", 8), [server])
    assert isinstance(wrong.client_error, AuthFailed)
    assert wrong.lines[-1] == "S: 535 5.7.8 Authentication credentials invalid"


class External(BaseClientMechanism):
    # The example of BaseClientMechanism's docstring, verbatim but typed.
    mechanism = "EXTERNAL"
    require_tls = True

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        result = await send_response_and_expect_challenge(Response(b""))
        if result is not AUTH_COMPLETED:
            raise AuthProtocolError("EXTERNAL: the server sent a challenge")


async def test_the_docstring_example_mechanism() -> None:
    ok = await script_client(External(), ["235 2.7.0 Ok"])
    assert ok.lines[0] == "C: AUTH EXTERNAL =" and ok.client_error is None
    challenged = await script_client(External(), ["334 ", CANCELLED])
    assert isinstance(challenged.client_error, AuthProtocolError)


def test_start_auth_is_a_narrowable_sentinel() -> None:
    item: StartAuth | Response = START_AUTH
    assert item is StartAuth.START_AUTH

    # mypy (strict, over tests/) fails here unless ``is START_AUTH`` narrows the union:
    # ``item.data`` is only valid once ``item`` is known to be a Response.
    def payload(item: StartAuth | Response) -> bytes | None:
        if item is START_AUTH:
            return None
        return item.data

    assert payload(START_AUTH) is None
    assert payload(Response(b"x")) == b"x"
    assert repr(START_AUTH) == "START_AUTH" and repr(AUTH_COMPLETED) == "AUTH_COMPLETED"

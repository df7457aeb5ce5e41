"""Test helpers: an in-memory wire between the two drivers, and scripted peers.

Everything crosses the wire as bytes (commands and replies are serialised and parsed
again), and every line is recorded as ``C: ...`` / ``S: ...``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from smtpx.auth import (
    AuthError,
    ClientMechanism,
    ServerMechanism,
    run_client_mechanism,
    run_server_mechanism,
)
from smtpx.protocol import Auth, AuthResponse, Reply, parse_command, replies


@dataclass(frozen=True)
class Session:
    """A server session that records who authenticated."""

    authenticated: str | None = None


def record_user(session: Session, user: str) -> Session:
    return replace(session, authenticated=user)


class RecordingLog:
    """A logger that keeps what it was told, formatted."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _add(self, level: str, msg: str, args: tuple[object, ...]) -> None:
        self.records.append((level, msg % args if args else msg))

    def debug(self, msg: str, /, *args: object) -> None:
        self._add("debug", msg, args)

    def info(self, msg: str, /, *args: object) -> None:
        self._add("info", msg, args)

    def warning(self, msg: str, /, *args: object) -> None:
        self._add("warning", msg, args)

    @property
    def text(self) -> str:
        return "\n".join(f"{level}: {message}" for level, message in self.records)


class Disconnected(Exception):
    """The scripted peer has nothing more to say (a closed connection)."""


@dataclass
class Outcome:
    lines: list[str]
    client_reply: Reply | None = None
    client_error: BaseException | None = None
    session: Session | None = None
    server_reply: Reply | None = None
    client_log: RecordingLog = field(default_factory=RecordingLog)
    server_log: RecordingLog = field(default_factory=RecordingLog)

    @property
    def transcript(self) -> str:
        return "\n".join(self.lines)


def _line(data: bytes) -> str:
    assert data.endswith(b"\r\n")
    return data[:-2].decode("utf-8")


async def converse(
    client: ClientMechanism,
    servers: Iterable[ServerMechanism[Session]],
    *,
    session: Session | None = None,
    remote: str | None = "mx.example.org",
) -> Outcome:
    """Run one AUTH exchange between ``client`` and whichever of ``servers`` it names.

    The client's failure (an AuthError) is recorded in the outcome, not raised.
    """
    by_name = {s.mechanism.upper(): s for s in servers}
    c2s: asyncio.Queue[bytes] = asyncio.Queue()
    s2c: asyncio.Queue[bytes] = asyncio.Queue()
    outcome = Outcome(lines=[])
    lines = outcome.lines

    async def client_exchange(item: Auth | AuthResponse) -> Reply:
        data = item.to_bytes()
        lines.append("C: " + _line(data))
        await c2s.put(data)
        return Reply.parse(await s2c.get())

    async def send_reply(reply: Reply) -> None:
        data = reply.to_bytes()
        lines.append("S: " + _line(data))
        await s2c.put(data)

    async def server_exchange(reply: Reply) -> AuthResponse:
        await send_reply(reply)
        return AuthResponse(_line(await c2s.get()))

    async def server() -> None:
        command = parse_command(_line(await c2s.get()).encode())
        assert isinstance(command, Auth)
        mechanism = by_name.get(command.mechanism)
        if mechanism is None:
            await send_reply(replies.unrecognized_auth_mechanism(command.mechanism))
            return
        new_session, reply = await run_server_mechanism(
            mechanism,
            session=session if session is not None else Session(),
            initial_response=command.initial_response,
            exchange=server_exchange,
            log=outcome.server_log,
        )
        outcome.session, outcome.server_reply = new_session, reply
        await send_reply(reply)

    server_task = asyncio.create_task(server())
    try:
        outcome.client_reply = await run_client_mechanism(
            client, exchange=client_exchange, log=outcome.client_log, remote=remote
        )
    except AuthError as exc:
        outcome.client_error = exc
    finally:
        await asyncio.sleep(0)
        if not server_task.done():
            server_task.cancel()
    # A cancelled task is only done once it has run again: wait, or result() would raise
    # InvalidStateError whenever the client stopped before the server had finished.
    await asyncio.wait([server_task])
    if not server_task.cancelled():
        server_task.result()  # re-raise a server-side surprise
    return outcome


async def script_server(
    mechanism: ServerMechanism[Session],
    command: str,
    client_lines: Sequence[str],
    *,
    session: Session | None = None,
) -> Outcome:
    """Drive a server mechanism with a hand-written client: ``command`` is the AUTH line,
    ``client_lines`` the lines that answer the 334 replies. Running out of lines raises
    :class:`Disconnected` out of the exchange."""
    parsed = parse_command(command.encode())
    assert isinstance(parsed, Auth)
    outcome = Outcome(lines=[f"C: {command}"])
    pending = list(client_lines)

    async def exchange(reply: Reply) -> AuthResponse:
        outcome.lines.append("S: " + _line(reply.to_bytes()))
        await asyncio.sleep(0)  # a real transport suspends here
        if not pending:
            raise Disconnected("Client disconnected during authentication flow")
        line = pending.pop(0)
        outcome.lines.append(f"C: {line}")
        return AuthResponse(line)

    new_session, reply = await run_server_mechanism(
        mechanism,
        session=session if session is not None else Session(),
        initial_response=parsed.initial_response,
        exchange=exchange,
        log=outcome.server_log,
    )
    outcome.session, outcome.server_reply = new_session, reply
    outcome.lines.append("S: " + _line(reply.to_bytes()))
    return outcome


async def script_client(
    mechanism: ClientMechanism, server_replies: Sequence[str], *, yield_first: bool = False
) -> Outcome:
    """Drive a client mechanism against a hand-written server: each item the client sends
    is answered by the next of ``server_replies``. Errors are recorded, not raised."""
    outcome = Outcome(lines=[])
    pending = list(server_replies)

    async def exchange(item: Auth | AuthResponse) -> Reply:
        outcome.lines.append("C: " + _line(item.to_bytes()))
        if yield_first:
            await asyncio.sleep(0)
        if not pending:
            raise Disconnected("Server disconnected")
        reply = Reply.parse(pending.pop(0))
        outcome.lines.append(f"S: {reply}")
        return reply

    try:
        outcome.client_reply = await run_client_mechanism(
            mechanism, exchange=exchange, log=outcome.client_log, remote=None
        )
    except Exception as exc:
        outcome.client_error = exc
    return outcome


def expect(*lines: str) -> str:
    return "\n".join(lines)

"""Client sessions: envelope outcomes, pipelining, parameters, bodies, faults, timeouts."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smtpx.client import (
    Accepted,
    Client,
    ClientConfig,
    RejectedAllRecipients,
    RejectedBody,
    RejectedSender,
    RejectedSenderAndRecipients,
    Unsendable,
    WireFile,
    connect,
)
from smtpx.client.status import EnvelopeStatus
from smtpx.envelope import Envelope, EnvelopeInfo
from smtpx.errors import ConnectError, ConnectionLost, RemoteProtocolError, ReplyTimeout
from smtpx.io import StaticResolver, memory_pair
from smtpx.protocol import (
    Data,
    Ehlo,
    Extensions,
    Helo,
    Mail,
    MailParams,
    Rcpt,
    Reply,
    dot_stuff,
    replies,
)
from smtpx.testing import Handler, Hangup, ScriptedServer
from smtpx.testing.clock import run_virtual
from tests.client.helpers import Run, Trickling, against_peer, in_memory

BODY = b"Subject: test\r\n\r\nline one\r\n.leading dot\r\n"
ENVELOPE = Envelope.create(
    sender="sender@example.com",
    recipients=["a@example.org", "b@example.org"],
    message=BODY,
)


async def send_one(
    handler: Handler, envelope: Envelope = ENVELOPE, **kw: object
) -> tuple[Run, list[EnvelopeStatus]]:
    statuses: list[EnvelopeStatus] = []

    async def use(client: Client) -> None:
        statuses.append(await client.send(envelope))

    run = await in_memory(handler, use, **kw)  # type: ignore[arg-type]
    return run, statuses


class Refusing(Handler):
    """Refuses what its fields say."""

    def __init__(
        self,
        *,
        sender: Reply | None = None,
        rcpt: dict[str, Reply] | None = None,
        data: Reply | None = None,
        final: Reply | None = None,
        **kw: object,
    ) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.refuse_sender, self.refuse_rcpt = sender, rcpt or {}
        self.refuse_data, self.refuse_final = data, final

    def mail(self, command: Mail) -> Reply:
        return self.refuse_sender or super().mail(command)

    def rcpt(self, command: Rcpt) -> Reply:
        refusal = self.refuse_rcpt.get(str(command.recipient))
        return refusal or super().rcpt(command)

    def data(self, command: Data) -> Reply:
        return self.refuse_data or super().data(command)

    def end_of_data(self) -> Reply:
        return self.refuse_final or super().end_of_data()


# --- outcomes ------------------------------------------------------------------------


DATA_ONLY = ClientConfig.for_testing(chunking=False)


async def test_accepted_with_pipelining_in_one_flight() -> None:
    handler = Handler()
    run, (status,) = await send_one(handler, config=DATA_ONLY)
    assert isinstance(status, Accepted) and status.ok and status.rejected == ()
    assert status.remote_id == "Ok: queued as MSG1"
    assert handler.messages[0].data == BODY
    lines = run.lines()
    mail = lines.index("C: MAIL FROM:<sender@example.com> SIZE=41")
    # MAIL, both RCPTs and DATA leave before the first reply comes back (RFC 2920).
    assert lines[mail : mail + 4] == [
        "C: MAIL FROM:<sender@example.com> SIZE=41",
        "C: RCPT TO:<a@example.org>",
        "C: RCPT TO:<b@example.org>",
        "C: DATA",
    ]
    assert "C: ..leading dot" in lines


async def test_lockstep_without_pipelining() -> None:
    handler = Handler(extensions=Extensions(eightbitmime=True))
    run, (status,) = await send_one(handler)
    assert status.ok
    lines = run.lines()
    mail = lines.index("C: MAIL FROM:<sender@example.com>")
    assert lines[mail + 1] == "S: 250 2.1.0 Ok"
    assert lines[mail + 2] == "C: RCPT TO:<a@example.org>"


async def test_rejected_sender() -> None:
    handler = Refusing(sender=Reply.of(550, "no", "5.7.1"))
    _, (status,) = await send_one(handler)
    assert isinstance(status, RejectedSender)
    assert status.permanent and str(status) == "Rejected sender (550 5.7.1 no)"
    assert handler.messages == []


async def test_some_recipients_rejected_4xx_and_5xx() -> None:
    handler = Refusing(rcpt={"a@example.org": Reply.of(450, "busy", "4.2.1")})
    _, (status,) = await send_one(handler)
    assert isinstance(status, Accepted)
    assert [(str(a), r.code) for a, r in status.rejected] == [("a@example.org", 450)]
    assert "but rejected recipients: a@example.org (450 4.2.1 busy)" in str(status)
    assert [str(r.recipient) for r in handler.messages[0].recipients] == ["b@example.org"]


async def test_all_recipients_rejected_sends_no_data() -> None:
    handler = Refusing(
        rcpt={
            "a@example.org": Reply.of(550, "unknown", "5.1.1"),
            "b@example.org": Reply.of(451, "later", "4.3.0"),
        }
    )
    run, (status,) = await send_one(handler)
    assert isinstance(status, RejectedAllRecipients)
    assert len(status.rejected) == 2
    assert handler.messages == []
    # DATA was pipelined; the server refused it (no valid recipients).
    assert "S: 554 5.5.1 No valid recipients" in run.lines()


async def test_data_refused() -> None:
    handler = Refusing(data=Reply.of(554, "not from you", "5.7.1"))
    _, (status,) = await send_one(handler, config=DATA_ONLY)
    assert isinstance(status, RejectedSenderAndRecipients)
    assert status.reply.code == 554


async def test_body_refused() -> None:
    handler = Refusing(final=Reply.of(552, "too big", "5.3.4"))
    _, (status,) = await send_one(handler)
    assert isinstance(status, RejectedBody)
    assert status.permanent
    with pytest.raises(Exception, match="Rejected message"):
        status.ok_or_error()


async def test_rset_after_a_failed_envelope_then_the_next_one_goes_through() -> None:
    class FirstSenderRefused(Refusing):
        calls = 0

        def rcpt(self, command: Rcpt) -> Reply:
            self.calls += 1
            if self.calls <= 2:
                return Reply.of(550, "no", "5.1.1")
            return super().rcpt(command)

    handler = FirstSenderRefused()
    statuses: list[EnvelopeStatus] = []

    async def use(client: Client) -> None:
        statuses.append(await client.send(ENVELOPE))
        statuses.append(await client.send(ENVELOPE))

    run = await in_memory(handler, use)
    assert [type(s) for s in statuses] == [RejectedAllRecipients, Accepted]
    lines = run.lines()
    # The open transaction (MAIL accepted) is reset, pipelined with the next MAIL.
    rset = lines.index("C: RSET")
    assert lines[rset + 1].startswith("C: MAIL FROM:")
    assert len(handler.messages) == 1


async def test_several_envelopes_on_one_session_need_no_rset() -> None:
    handler = Handler()

    async def use(client: Client) -> None:
        for _ in range(3):
            assert (await client.send(ENVELOPE)).ok

    run = await in_memory(handler, use)
    assert "C: RSET" not in run.lines()
    assert len(handler.messages) == 3


# --- parameters ------------------------------------------------------------------------


async def test_size_over_the_servers_limit_is_not_sent() -> None:
    handler = Handler(extensions=Extensions(size=10, pipelining=True))
    run, (status,) = await send_one(handler)
    assert isinstance(status, Unsendable)
    assert status.reply.code == 552 and str(status.reply.enhanced) == "5.3.4"
    assert not any(line.startswith("C: MAIL") for line in run.lines())


async def test_utf8_local_part_needs_smtputf8() -> None:
    envelope = Envelope.create(
        sender="δοκιμή@example.com", recipients=["b@example.org"], message=BODY
    )
    _, (status,) = await send_one(Handler(extensions=Extensions(pipelining=True)), envelope)
    assert isinstance(status, Unsendable) and status.reply.code == 553
    handler = Handler()
    run, (status,) = await send_one(handler, envelope)
    assert status.ok
    assert any(
        line.startswith("C: MAIL FROM:<δοκιμή@example.com>") and "SMTPUTF8" in line
        for line in run.lines()
    )


async def test_utf8_domain_alone_travels_as_an_a_label() -> None:
    envelope = Envelope.create(
        sender="a@bücher.example", recipients=["b@bücher.example"], message=BODY
    )
    run, (status,) = await send_one(Handler(extensions=Extensions(pipelining=True)), envelope)
    assert status.ok
    assert "C: MAIL FROM:<a@xn--bcher-kva.example>" in run.lines()
    assert "C: RCPT TO:<b@xn--bcher-kva.example>" in run.lines()


async def test_8bit_body_gets_body_8bitmime_when_offered() -> None:
    envelope = Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org"],
        message="Subject: é\r\n\r\nç\r\n".encode(),
    )
    run, (status,) = await send_one(Handler(), envelope)
    assert status.ok
    assert any("BODY=8BITMIME" in line for line in run.lines() if line.startswith("C: MAIL"))


async def test_parameters_the_server_lacks_are_dropped() -> None:
    info = EnvelopeInfo.create(
        sender="a@example.com",
        recipients=["b@example.org"],
        sender_args=MailParams(ret="HDRS", envid="abc", body="8BITMIME"),
    )

    async def use(client: Client) -> None:
        assert (await client.send_envelope(info, BODY)).ok

    run = await in_memory(Handler(extensions=Extensions(pipelining=True)), use)
    assert "C: MAIL FROM:<a@example.com>" in run.lines()
    run = await in_memory(Handler(), use)
    assert "C: MAIL FROM:<a@example.com> SIZE=41 BODY=8BITMIME RET=HDRS ENVID=abc" in run.lines()


# --- bodies ------------------------------------------------------------------------------


async def test_every_kind_of_body_arrives_the_same(tmp_path: Path) -> None:
    raw = tmp_path / "raw.eml"
    raw.write_bytes(BODY)
    wire = tmp_path / "wire"
    wire.write_bytes(dot_stuff(BODY)[:-3])  # wire-ready: stuffed, without ".\r\n"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(BODY), 7):
            yield BODY[i : i + 7]

    stuffed = dot_stuff(BODY)[:-3]
    sized = tmp_path / "sized"  # a part of a file, as a spool segment holds it
    sized.write_bytes(b"before" + stuffed + b"after")
    bodies: list[object] = [
        BODY,
        io.BytesIO(BODY),
        raw,
        chunks(),
        WireFile(wire),  # the rest of the file: sendfile (or its fallback)
        WireFile(sized, size=len(stuffed), offset=6),  # a small part: read at once
    ]
    async with (
        ScriptedServer(Handler) as server,
        connect("127.0.0.1", server.port, config=ClientConfig.for_testing()) as client,
    ):
        for body in bodies:
            status = await client.send_envelope(ENVELOPE.info, body)  # type: ignore[arg-type]
            assert status.ok, status
    assert server.messages() == [BODY] * len(bodies)


async def test_a_wire_file_without_a_final_crlf_gets_one(tmp_path: Path) -> None:
    """Both ways of sending a wire-ready file (the rest of a file; a small sized part)
    end the last line before the terminator."""
    wire = tmp_path / "wire"
    wire.write_bytes(b"Subject: x\r\n\r\nno end")
    async with (
        ScriptedServer(Handler) as server,
        connect("127.0.0.1", server.port, config=ClientConfig.for_testing()) as client,
    ):
        for body in (WireFile(wire), WireFile(wire, size=wire.stat().st_size)):
            assert (await client.send_envelope(ENVELOPE.info, body)).ok
    assert server.messages() == [b"Subject: x\r\n\r\nno end\r\n"] * 2


async def test_large_body_streams_in_pieces() -> None:
    big = b"Subject: big\r\n\r\n" + (b"0123456789" * 99 + b"\r\n") * 1000  # about 1 MB
    handler = Handler(extensions=Extensions(pipelining=True, size=0))
    big_envelope = Envelope.create(
        sender="a@example.com", recipients=["b@example.org"], message=big
    )
    _, (status,) = await send_one(handler, big_envelope)
    assert status.ok
    assert handler.messages[0].data == big


# --- session setup ------------------------------------------------------------------------


async def test_ehlo_refused_falls_back_to_helo() -> None:
    class Old(Handler):
        def ehlo(self, command: Ehlo) -> Reply:
            return replies.command_unrecognized("EHLO")

    handler = Old()
    run, (status,) = await send_one(handler)
    assert status.ok
    lines = run.lines()
    assert lines[1].startswith("C: EHLO") and lines[2].startswith("S: 500")
    assert lines[3].startswith("C: HELO")


async def test_greeting_refused() -> None:
    run = await in_memory(Handler(greeting=replies.service_refused("mx.test")))
    assert run.error is not None and "greeted with 554" in str(run.error)
    assert run.lines()[-2:] == ["C: QUIT", "S: 221 2.0.0 Bye"]


async def test_response_injection_after_starttls_is_refused() -> None:
    client_stream, server_stream = memory_pair()

    async def evil_server() -> None:
        server_stream.write(b"220 mx ESMTP\r\n")
        assert (await server_stream.read()).startswith(b"EHLO")
        server_stream.write(b"250-mx\r\n250 STARTTLS\r\n")
        assert await server_stream.read() == b"STARTTLS\r\n"
        server_stream.write(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
        await server_stream.read()

    task = asyncio.get_running_loop().create_task(evil_server())
    with pytest.raises(RemoteProtocolError, match="injection"):
        await connect("mx.test", config=ClientConfig.for_testing(), stream=client_stream)
    task.cancel()


async def test_connect_tries_every_address_and_reports_each() -> None:
    async with ScriptedServer(Handler) as server:
        resolver = StaticResolver({"mx.test": ["127.0.0.2", "127.0.0.1"]})
        # 127.0.0.2 refuses (nothing listens on the port there), 127.0.0.1 answers.
        async with connect(
            "mx.test", server.port, config=ClientConfig.for_testing(), resolver=resolver
        ) as client:
            assert client.remote_address == ("127.0.0.1", server.port)
    dead = StaticResolver({"mx.test": ["127.0.0.2", "127.0.0.3"]})
    with pytest.raises(ConnectError) as info:
        await connect("mx.test", server.port, config=ClientConfig.for_testing(), resolver=dead)
    assert [address for address, _ in info.value.failures] == ["127.0.0.2", "127.0.0.3"]
    assert "127.0.0.2" in str(info.value) and "127.0.0.3" in str(info.value)


# --- faults ------------------------------------------------------------------------------


def test_stalled_server_times_out_on_the_final_reply() -> None:
    class Stalls(Handler):
        def end_of_data(self) -> Reply:
            return None  # type: ignore[return-value]

    async def scenario() -> tuple[Run, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        run, statuses = await send_one(
            Stalls(), config=ClientConfig.for_testing(final_reply_timeout=600)
        )
        assert statuses == []
        return run, loop.time() - start

    run, waited = run_virtual(scenario())
    assert isinstance(run.error, ReplyTimeout)
    assert "600" in str(run.error)
    assert 600 <= waited < 700


def test_stalled_greeting_times_out() -> None:
    async def scenario() -> BaseException:
        client_stream, _server_stream = memory_pair()
        with pytest.raises(ReplyTimeout) as info:
            await connect(
                "mx.test",
                config=ClientConfig.for_testing(greeting_timeout=300),
                stream=client_stream,
            )
        return info.value

    assert "300" in str(run_virtual(scenario()))


async def test_server_closes_mid_data() -> None:
    class HangsUp(Handler):
        def chunk(self, data: bytes) -> None:
            raise Hangup

    run, statuses = await send_one(HangsUp())
    assert statuses == []
    assert isinstance(run.error, ConnectionLost)


async def test_quit_is_always_sent_and_eof_counts_as_221() -> None:
    class NoBye(Handler):
        def other(self, command: object) -> Reply:
            if str(command) == "QUIT":
                raise Hangup
            return super().other(command)  # type: ignore[arg-type]

    run, (status,) = await send_one(NoBye())
    assert status.ok and run.error is None
    assert run.lines()[-1] == "C: QUIT"


async def test_peer_information() -> None:
    async def use(client: Client) -> None:
        assert client.greeting is not None and client.greeting.code == 220
        assert client.ehlo_reply is not None and client.ehlo_reply.lines[0].startswith("mx.test")
        assert client.supports("pipelining") and client.extensions.size == 10_240_000
        assert not client.is_using_tls

    run = await in_memory(Handler(), use)
    assert run.error is None


async def test_command_escape_hatch() -> None:
    async def use(client: Client) -> None:
        reply = await client.command(Helo("again.example"))
        assert reply.code == 250
        assert (await client.noop()).code == 250

    run = await in_memory(Handler(), use)
    assert run.error is None and "C: HELO again.example" in run.lines()


def test_runs_on_uvloop(tmp_path: Path) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the streams must not care."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario(wire: Path) -> list[bytes]:
        async with (
            ScriptedServer(Handler) as server,
            connect("127.0.0.1", server.port, config=ClientConfig.for_testing()) as client,
        ):
            assert (await client.send(ENVELOPE)).ok
            # uvloop has no loop.sendfile: the stream falls back to plain writes.
            assert (await client.send_envelope(ENVELOPE.info, WireFile(wire, offset=3))).ok
        return server.messages()

    wire = tmp_path / "wire"
    wire.write_bytes(b"xyz" + dot_stuff(BODY)[:-3])
    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario(wire)) == [BODY, BODY]
    finally:
        loop.close()


class _StopsReading(asyncio.Protocol):
    """A server that answers until the content should come (``354`` to DATA; a BDAT
    command), then reads nothing more: a stalled or tarpitting MX."""

    def __init__(self, chunking: bool) -> None:
        self.chunking = chunking
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 stall.example ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line.startswith(b"EHLO"):
                offer = b"250-CHUNKING\r\n" if self.chunking else b""
                self.transport.write(b"250-stall.example\r\n" + offer + b"250 PIPELINING\r\n")
            elif line.startswith((b"DATA", b"BDAT")):
                if line.startswith(b"DATA"):
                    self.transport.write(b"354 go ahead\r\n")
                self.transport.pause_reading()
                return
            else:
                self.transport.write(b"250 ok\r\n")


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
def test_a_server_that_stops_reading_mid_message_is_given_up_on(
    tmp_path: Path, chunking: bool
) -> None:
    """Content sent straight from a file (a spooled message) waits for the server at
    most ``data_block_timeout`` per block: it had no deadline at all."""
    wire = tmp_path / "wire"
    wire.write_bytes((b"y" * 998 + b"\r\n") * 8000)  # 8 MB: far more than the buffers hold
    config = ClientConfig.for_testing(chunking=chunking)

    # Held here: a transport that reads nothing is referred to by nothing else, and the
    # garbage collector would close it (a reset, not a stall).
    held: list[_StopsReading] = []

    def accept() -> _StopsReading:
        held.append(_StopsReading(chunking))
        return held[-1]

    async def attempt(port: int) -> None:
        async with connect("127.0.0.1", port, config=config) as client:
            # The guard: a client without a deadline would wait until this one.
            await asyncio.wait_for(client.send_envelope(ENVELOPE.info, WireFile(wire)), 3600)

    error, elapsed = against_peer(accept, attempt)
    assert isinstance(error, ReplyTimeout), error
    assert config.data_block_timeout <= elapsed < 2 * config.data_block_timeout


def test_a_reply_trickled_an_octet_at_a_time_does_not_extend_the_wait() -> None:
    config = ClientConfig.for_testing()  # 10 s for the greeting
    every = config.greeting_timeout / 4  # each octet well within the timeout; 26 of them

    async def attempt(port: int) -> None:
        client = await connect("127.0.0.1", port, config=config)
        await client.quit()

    error, elapsed = against_peer(lambda: Trickling(every), attempt)
    assert isinstance(error, ReplyTimeout), error
    assert config.greeting_timeout <= elapsed < config.greeting_timeout + every

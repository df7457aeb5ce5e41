"""The server's LMTP mode (RFC 2033): LHLO only, and one reply per recipient at the end
of each message, from the plugin's ``process_lmtp`` (or, by default, ``process``),
read by smtpx's own LMTP client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest

from smtpx.envelope import Envelope, HostPort
from smtpx.errors import ReplyTimeout
from smtpx.mta import lmtp
from smtpx.mta.lmtp import LmtpAgent
from smtpx.protocol import replies
from smtpx.protocol.replies import Reply
from smtpx.server import Listener, Plugin, Reject, Server, ServerConfig, Session, Transaction
from tests.client.helpers import Trickling, against_peer
from tests.mta.helpers import sending

MESSAGE = b"Subject: lmtp\r\n\r\nhello\r\n"


class PerRecipient(Plugin):
    """Full mailboxes are temporary failures; "gone" is refused at RCPT."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []

    async def rcpt_to(self, session, transaction, recipient, params) -> None:  # type: ignore[no-untyped-def]
        if recipient.local_part == "gone":
            raise Reject(replies.mailbox_unavailable())

    async def process_lmtp(
        self, session: Session, transaction: Transaction, envelope: Envelope
    ) -> Sequence[Reply]:
        self.sessions.append(session)
        return [
            Reply.of(452, f"<{r}> Mailbox full", "4.2.2")
            if r.local_part == "full"
            else Reply.of(250, f"<{r}> Saved", "2.0.0")
            for r in transaction.recipients
        ]


class OnlyProcess(Plugin):
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        if self.refuse:
            raise Reject(Reply.of(554, "No thanks", "5.7.1"))
        return "Ok: kept"


class Miscounts(Plugin):
    async def process_lmtp(
        self, session: Session, transaction: Transaction, envelope: Envelope
    ) -> Sequence[Reply]:
        return [replies.ok()]


async def deliver(plugin: Plugin, *recipients: str, size: int = 35 * 1024 * 1024) -> list[str]:
    config = ServerConfig(listeners=[Listener(lmtp=True)], max_message_size=size)
    async with Server(plugin, config) as server:
        agent = LmtpAgent(HostPort("127.0.0.1", server.ports[0]), "client.test", timeout=10)
        results = await agent.deliver(sending(*recipients, sender="<s@x.test>"), MESSAGE)
    assert [r for r, _ in results] == list(recipients)
    return [str(reply) for _, reply in results]


async def test_each_recipient_gets_its_own_reply() -> None:
    plugin = PerRecipient()
    got = await deliver(plugin, "a@y.test", "gone@y.test", "full@y.test", "b@y.test")
    assert got == [
        "250 2.0.0 <a@y.test> Saved",
        "550 5.1.1 Mailbox unavailable",
        "452 4.2.2 <full@y.test> Mailbox full",
        "250 2.0.0 <b@y.test> Saved",
    ]
    (session,) = plugin.sessions
    assert session.lmtp and session.esmtp and session.helo == "client.test"


async def test_a_plugin_with_process_only_answers_every_recipient_alike() -> None:
    assert await deliver(OnlyProcess(), "a@y.test", "b@y.test") == ["250 2.0.0 Ok: kept"] * 2
    refused = await deliver(OnlyProcess(refuse=True), "a@y.test", "b@y.test")
    assert refused == ["554 5.7.1 No thanks"] * 2


async def test_a_wrong_number_of_replies_is_a_local_error_for_each() -> None:
    got = await deliver(Miscounts(), "a@y.test", "b@y.test")
    assert [reply[:9] for reply in got] == ["451 4.3.0"] * 2


async def test_content_the_core_refuses_is_refused_for_each() -> None:
    got = await deliver(PerRecipient(), "a@y.test", "b@y.test", size=10)
    assert [reply[:9] for reply in got] == ["552 5.3.4"] * 2


async def test_lmtp_listeners_take_lhlo_only() -> None:
    async with Server(PerRecipient(), ServerConfig(listeners=[Listener(lmtp=True)])) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        await reader.readline()
        writer.write(b"EHLO c\r\nHELO c\r\nLHLO c\r\nQUIT\r\n")
        data = await reader.read(4096)
        while not data.endswith(b"221 2.0.0 Bye\r\n"):
            data += await reader.read(4096)
        writer.close()
    lines = data.decode().splitlines()
    assert lines[0].startswith("500 5.5.1") and lines[1].startswith("500 5.5.1")
    assert lines[2].startswith("250-")


async def test_content_sent_in_slices_arrives_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent encodes and sends a slice at a time: dots at line starts and CRLFs
    across the slices' edges come out as one message."""
    monkeypatch.setattr(lmtp, "SLICE", 5)
    got: list[bytes] = []

    class Keeps(Plugin):
        async def process(
            self, session: Session, transaction: Transaction, envelope: Envelope
        ) -> str:
            assert isinstance(envelope.content, bytes)
            got.append(envelope.content)
            return "Ok: kept"

    content = b"Subject: slices\r\n\r\n.one\r\n..two\r\nthree.\r\n.\r\n" * 7
    config = ServerConfig(listeners=[Listener(lmtp=True)])
    async with Server(Keeps(), config) as server:
        agent = LmtpAgent(HostPort("127.0.0.1", server.ports[0]), "client.test", timeout=10)
        [(_, reply)] = await agent.deliver(sending("a@y.test"), content)
    assert reply.code == 250
    assert got == [content]


class Pieces:
    """Content read a chunk at a time (as a body from the spool is); ``fail``: the pass
    (1, 2...) whose read breaks down before the last chunk, as a damaged body's does."""

    def __init__(self, content: bytes, *, fail: int = 0) -> None:
        self.content = content
        self.fail = fail
        self.passes = 0

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        self.passes += 1
        for start in range(0, len(self.content), size):
            if self.passes == self.fail and start + size >= len(self.content):
                raise OSError(5, "Input/output error")
            yield self.content[start : start + size]


class Keeps(Plugin):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, int | None]] = []

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        self.got.append((envelope.message, transaction.params.size))
        return "Ok: kept"


async def test_content_read_in_chunks_arrives_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Content larger than a slice is read twice (its size and kind for MAIL FROM, then
    to send it); content of one slice once."""
    large = Pieces(b"Subject: pieces\r\n\r\n.one\r\n..two\r\n\xc3\xa9\r\n" * 3)
    small = Pieces(b"Subject: x\r\n\r\nhi\r\n")
    plugin = Keeps()
    async with Server(plugin, ServerConfig(listeners=[Listener(lmtp=True)])) as server:
        agent = LmtpAgent(HostPort("127.0.0.1", server.ports[0]), "client.test", timeout=10)
        for content, slice_size in ((large, 5), (small, 64)):
            monkeypatch.setattr(lmtp, "SLICE", slice_size)
            [(_, reply)] = await agent.deliver(sending("a@y.test"), content)
            assert reply.code == 250
    assert plugin.got == [(large.content, len(large.content)), (small.content, len(small.content))]
    assert (large.passes, small.passes) == (2, 1)


@pytest.mark.parametrize("fail", [1, 2])
async def test_content_that_breaks_down_is_not_delivered(
    monkeypatch: pytest.MonkeyPatch, fail: int
) -> None:
    """The reads fail before the last chunk (of the first pass, before the session; of
    the second, while the content is sent): no final dot is sent, the server keeps
    nothing, and the agent raises (the spool tries again, or quarantines a damaged
    body)."""
    monkeypatch.setattr(lmtp, "SLICE", 5)
    plugin = Keeps()
    content = Pieces(b"Subject: pieces\r\n\r\n" + b"line\r\n" * 20, fail=fail)
    async with Server(plugin, ServerConfig(listeners=[Listener(lmtp=True)])) as server:
        agent = LmtpAgent(HostPort("127.0.0.1", server.ports[0]), "client.test", timeout=10)
        with pytest.raises(OSError, match="Input/output error"):
            await agent.deliver(sending("a@y.test"), content)
    assert plugin.got == []
    assert content.passes == fail


def test_a_trickled_lmtp_reply_does_not_extend_the_wait() -> None:
    """The agent reads replies as the SMTP client does: whole within its timeout."""

    async def attempt(port: int) -> None:
        agent = LmtpAgent(HostPort("127.0.0.1", port), "c.test", timeout=10)
        await agent.deliver(sending("a@y.test"), MESSAGE)

    error, waited = against_peer(lambda: Trickling(4, b"220 slow.test LMTP\r\n"), attempt)
    assert isinstance(error, ReplyTimeout), error
    assert 10 <= waited < 14  # it came whole after 80 s, each octet within 10 s

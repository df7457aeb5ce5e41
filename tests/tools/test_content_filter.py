"""The content-filter round trip (F126): out to a scanner, back tagged, the original
envelope kept; against a scanner of our own here, and a real Postfix in
tests/interop/test_content_filter_postfix.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from smtpx.client import ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.protocol import replies
from smtpx.server import Listener, Plugin, Reject, Server, ServerConfig, Session, Transaction
from smtpx.tools import ContentFilter, ContentFilterError
from smtpx.tools.content_filter import TAG

PLAIN = ClientConfig(tls=(("", TlsConfig(mode=TlsMode.NONE)),))


class Scanner(Plugin):
    """Adds a header and sends the message on to ``back`` (or swallows or refuses it)."""

    hostname = "scanner.test"

    def __init__(self, mode: str = "pass") -> None:
        self.mode = mode
        self.back = 0

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        if self.mode == "refuse":
            raise Reject(replies.Reply.of(554, "Virus found", "5.7.1"))
        if self.mode == "pass":
            checked = envelope.in_memory().add_header("X-Scanned", "clean; by scanner.test")
            async with connect("127.0.0.1", self.back, config=PLAIN) as client:
                assert (await client.send(checked)).ok
        return "Ok: scanned"


@pytest.fixture
async def scanner() -> AsyncIterator[tuple[Scanner, Server]]:
    plugin = Scanner()
    async with Server(plugin, ServerConfig(listeners=[Listener(port=0)])) as server:
        yield plugin, server


def message(n: int) -> Envelope:
    return Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org", "c@example.org"],
        message=f"From: a@example.com\r\nSubject: {n}\r\n\r\n.body {n}\r\n".encode(),
    )


async def test_messages_come_back_tagged_by_the_scanner(
    scanner: tuple[Scanner, Server],
) -> None:
    plugin, server = scanner
    async with ContentFilter(f"127.0.0.1:{server.ports[0]}") as content_filter:
        plugin.back = content_filter.port
        sent = [message(n) for n in range(5)]
        back = await asyncio.gather(*(content_filter.send_receive(m) for m in sent))
    for original, returned in zip(sent, back, strict=True):
        assert returned.info == original.info and returned.id == original.id
        assert returned.last_header("X-Scanned") == "clean; by scanner.test"
        assert returned.find_all_headers(TAG) == []
        # everything else is as it was sent: the scanner's field is the only change
        assert returned.message == b"X-Scanned: clean; by scanner.test\r\n" + original.message


async def test_a_refusal_or_no_return_is_an_error(scanner: tuple[Scanner, Server]) -> None:
    plugin, server = scanner
    async with ContentFilter(f"127.0.0.1:{server.ports[0]}", timeout=0.3) as content_filter:
        plugin.mode = "refuse"
        with pytest.raises(ContentFilterError, match=r"refused the message: .*Virus found"):
            await content_filter.send_receive(message(1))
        plugin.mode = "swallow"
        with pytest.raises(ContentFilterError, match=r"did not send the message back within 0\.3s"):
            await content_filter.send_receive(message(2))
        assert content_filter._waiting == {}


async def test_the_return_listener_refuses_strangers() -> None:
    async with (
        ContentFilter("127.0.0.1:9") as content_filter,
        connect("127.0.0.1", content_filter.port, config=PLAIN) as client,
    ):
        unknown = message(1).add_header(TAG, "not-a-token-we-sent")
        for stranger in (message(1), unknown):
            status = await client.send(stranger)
            assert not status.ok and status.reply.code == 550

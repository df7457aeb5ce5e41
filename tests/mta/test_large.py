"""A large message through ``smtpx serve``: spilled to a file as it arrives, spooled from
that file, relayed and delivered locally byte-exact, and sound after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpx.client import connect
from smtpx.content import SpilledMessage
from smtpx.envelope import Envelope
from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from smtpx.spool.fsck import check
from smtpx.testing import Handler, ScriptedServer
from tests.mta.helpers import PLAIN, config, maildir, wait_until

DOTTED = b".leading dot, then text " + b"y" * 50 + b"\r\n"


def large(to: str, size: int = 3_000_000, line: bytes = DOTTED) -> Envelope:
    return Envelope.create(
        sender="a@example.com",
        recipients=[to],
        message=b"Subject: large\r\nMessage-ID: <large@t>\r\n\r\n" + line * (size // len(line)),
    )


# Dotted lines: stuffed a chunk at a time as the journal writes them. Without: the
# server took the content as it came, and the journal writes the file as it is
# (SpilledMessage.wire_form).
@pytest.mark.parametrize("line", [DOTTED, b"no dot. " + b"z" * 60 + b"\r\n"], ids=["dots", "none"])
async def test_a_large_message_is_spilled_spooled_and_delivered_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: bytes
) -> None:
    def never(self: SpilledMessage) -> bytes:
        raise AssertionError("a spilled message was read whole into memory")

    # From the session to the journal, nothing may hold a large message whole.
    monkeypatch.setattr(SpilledMessage, "read", never)
    async with ScriptedServer(Handler) as sink:
        cfg = config(
            tmp_path,
            server={"spill_threshold": "64K"},
            routing={"routes": {"example.net": [f"127.0.0.1:{sink.port}"]}},
        )
        relayed, local = large("x@example.net", line=line), large("user@example.org", line=line)
        async with Mta(cfg, dns=FakeDns()) as mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert (await client.send(relayed)).ok
                assert (await client.send(local)).ok
            assert mta.server.buffers.spills == 2 and mta.server.buffers.used == 0
            await wait_until(lambda: len(sink.messages()) == 1 and not mta.spool.messages)
        (received,) = sink.messages()
        (stored,) = maildir(tmp_path, "user@example.org")
    # Each has our Received header in front of exactly the octets that were sent.
    assert received.startswith(b"Received: ") and received.endswith(relayed.message)
    assert stored.endswith(local.message.replace(b"\r\n", b"\n"))  # maildir: LF lines
    assert check(tmp_path / "spool") == []

"""The smtpx client sends with BDAT into a real Postfix smtpd, which offers CHUNKING
(Postfix 3.4 and later); Postfix relays each message on to an smtpx test server, where
it must arrive byte for byte (after the Received: header Postfix adds)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from smtpx.client import ClientConfig, WireFile, connect
from smtpx.envelope import Envelope
from smtpx.protocol import dot_stuff
from smtpx.testing import Handler, ScriptedServer
from tests.interop.postfix import private_postfix

pytestmark = pytest.mark.interop

HEAD = (
    b"From: <sender@example.com>\r\nTo: <rcpt@example.org>\r\nSubject: chunking\r\n"
    b"Date: Tue, 02 Dec 2025 10:00:00 +0000\r\nMessage-ID: <chunking@example.com>\r\n\r\n"
)
SMALL = HEAD + b"small\r\n.a line with a leading dot\r\n"
LARGE = HEAD + b"".join(b"%06d large line, some text to fill it\r\n" % i for i in range(25_000))
DOTTED = HEAD + b"".join(b".%06d every line starts with a dot\r\n" % i for i in range(25_000))


def envelope(body: bytes) -> Envelope:
    return Envelope.create(
        sender="sender@example.com", recipients=["rcpt@example.org"], message=body
    )


def without_received(message: bytes) -> bytes:
    """The message without the Received: header (and its folded lines) at its top."""
    match = re.match(rb"Received: [^\r]*\r\n(?:[ \t][^\r]*\r\n)*", message)
    assert match is not None, message[:200]
    return message[match.end() :]


async def test_bdat_into_postfix_arrives_byte_for_byte(tmp_path: Path) -> None:
    wire = tmp_path / "wire"
    wire.write_bytes(dot_stuff(DOTTED)[:-3])
    async with ScriptedServer(Handler) as next_hop:
        with private_postfix(next_hop.port) as postfix:
            config = ClientConfig.for_testing(chunking=True)
            async with connect("127.0.0.1", postfix.port, config=config) as client:
                assert client.extensions.chunking and client.extensions.pipelining
                for body in (SMALL, LARGE):
                    assert (await client.send(envelope(body))).ok
                assert (await client.send_envelope(envelope(DOTTED).info, WireFile(wire))).ok
            deadline = time.monotonic() + 60
            while len(next_hop.messages()) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            log = "\n".join(postfix.log_lines())
    # Postfix counts the commands of each session: BDAT only, never DATA.
    (counts,) = re.findall(r"disconnect from \S+ (ehlo=.*)", log)
    assert "bdat=" in counts and "data=" not in counts, counts
    got = sorted(without_received(m) for m in next_hop.messages())
    assert got == sorted([SMALL, LARGE, DOTTED])

"""The ``accepted`` mail log line carries the message's fingerprint (F115) when the server's
``fingerprints`` is on: computed inline for a small message, in a thread, a chunk at a
time, for a spilled one; the same either way."""

from __future__ import annotations

import logging

import pytest

from smtpx.client import ClientConfig, connect
from smtpx.envelope import Envelope
from smtpx.fingerprint import fingerprint
from smtpx.maillog import MailLog, PlainFormatter
from smtpx.server import Listener, Plugin, Server, ServerConfig, Session, Transaction

CLIENT = ClientConfig.for_testing()


class Accept(Plugin):
    hostname = "mx.test"

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        return "Ok"


def message(size: int) -> Envelope:
    line = b"x" * 76 + b"\r\n"
    body = line * (size // len(line))
    return Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org"],
        message=b"From: a@example.com\r\nSubject: big\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nhello\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\n\r\n" + body + b"--B--\r\n",
    )


def accepted(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "accepted"]


@pytest.mark.parametrize("on", [True, False])
async def test_the_accepted_line_has_the_fingerprint(
    caplog: pytest.LogCaptureFixture, on: bool
) -> None:
    caplog.set_level(logging.INFO, logger="smtpx.mail")
    small, large = message(4_000), message(3_000_000)
    config = ServerConfig(listeners=[Listener(port=0)], spill_threshold=64 * 1024, fingerprints=on)
    async with (
        Server(Accept(), config) as server,
        connect("127.0.0.1", server.ports[0], config=CLIENT) as client,
    ):
        assert (await client.send(small)).ok
        assert (await client.send(large)).ok  # spilled to a file
    records = accepted(caplog)
    assert len(records) == 2
    if not on:
        assert all("fingerprint" not in r.mail for r in records)  # type: ignore[attr-defined]
        return
    for record, sent in zip(records, (small, large), strict=True):
        logged = record.mail["fingerprint"]  # type: ignore[attr-defined]
        assert logged == fingerprint([sent.message]).to_json()
        assert logged["headers"][1] == ["Subject", "big"]
        assert len(logged["parts"]) == 2 and all(p["md5"] for p in logged["parts"])
    assert "fingerprint={" in PlainFormatter().format(records[0])


def test_redaction_keeps_names_and_md5s(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smtpx.mail")
    fp = fingerprint([b"From: secret@example.com\r\n\r\nbody"]).to_json()
    MailLog("t", redact=True).info("accepted", fingerprint=fp)
    (record,) = caplog.records
    logged = record.mail["fingerprint"]  # type: ignore[attr-defined]
    assert logged == {"headers": [["From", "***"]], "md5": fp["md5"], "parts": []}


async def test_the_accepted_line_says_the_message_id_the_spool_keeps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Envelope.message_id(): the last field, unfolded (the spool's record has the same).
    caplog.set_level(logging.INFO, logger="smtpx.mail")
    sent = Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org"],
        message=b"Message-ID: <old@t>\r\nMessage-ID:\r\n <new@t>\r\nSubject: x\r\n\r\nbody\r\n",
    )
    async with (
        Server(Accept(), ServerConfig(listeners=[Listener(port=0)])) as server,
        connect("127.0.0.1", server.ports[0], config=CLIENT) as client,
    ):
        assert (await client.send(sent)).ok
    (record,) = accepted(caplog)
    assert record.mail["rfc822_id"] == "<new@t>" == sent.message_id()  # type: ignore[attr-defined]

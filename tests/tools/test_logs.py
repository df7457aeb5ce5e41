"""The mail log read back (F129): a real MTA's JSON log, rebuilt into sessions, and the
lines of selected mail."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpx.client import connect
from smtpx.envelope import Envelope
from smtpx.maillog import JsonFormatter
from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from smtpx.testing import Handler, ScriptedServer
from smtpx.tools.logs import LogQuery, read_lines, select_lines, sessions
from tests.cli.helpers import invoke
from tests.mta.helpers import PLAIN, config, wait_until


@pytest.fixture
def mail_log() -> Iterator[io.StringIO]:
    logger = logging.getLogger("smtpx.mail")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def mail(subject: str, to: str, cc: str = "") -> Envelope:
    headers = f"From: Alice <a@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n"
    headers += f"Cc: {cc}\r\n" if cc else ""
    recipients = [to] + ([cc] if cc else [])
    message = f"{headers}Message-ID: <{subject}@t>\r\n\r\nbody\r\n".encode()
    return Envelope.create(sender="a@example.com", recipients=recipients, message=message)


async def test_sessions_and_selection_from_a_real_log(
    tmp_path: Path, mail_log: io.StringIO
) -> None:
    async with ScriptedServer(Handler) as sink:
        cfg = config(
            tmp_path,
            routing={
                "routes": {"example.net": [f"127.0.0.1:{sink.port}"], "down.test": ["127.0.0.1:9"]}
            },
            log={"fingerprints": True},
            spool={"retry_intervals": ["1h"]},
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert (await client.send(mail("first", "b@example.net", "c@down.test"))).ok
                assert (await client.send(mail("second", "d@example.net"))).ok
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert (await client.send(mail("third", "e@example.net"))).ok
            await wait_until(lambda: len(sink.messages()) == 3)
            await wait_until(lambda: all(m.attempt_count for m in mta.spool.status()))
    lines = list(read_lines(io.StringIO(mail_log.getvalue() + "not json\n")))
    stories = sessions(lines)
    assert [len(s.inbound) for s in stories] == [2, 1]
    assert stories[0].remote_ip == "127.0.0.1"
    first = next(iter(stories[0].inbound.values())).summary()
    assert first["subject"] == "first" and first["message_id"] == "<first@t>"
    assert first["to"] == ["b@example.net"] and first["cc"] == ["c@down.test"]
    assert first["sender"] == "<a@example.com>"
    outcomes = sorted(o["outcome"] for o in first["outbound"])
    assert len(outcomes) == 2  # one spool message per destination domain
    assert outcomes[0].startswith("deferred c@down.test") and outcomes[1].startswith(
        "delivered b@example.net"
    )

    picked = select_lines(lines, LogQuery(subject="^first$"))
    assert {line["message"] for line in picked} == {"accepted", "delivered", "deferred"}
    assert all(line.get("rfc822_id") in (None, "<first@t>") for line in picked)
    assert select_lines(lines, LogQuery(header_recipient="c@down")) == picked
    assert [x["message"] for x in select_lines(lines, LogQuery(recipient="^e@"))] == [
        "accepted",
        "delivered",
    ]
    assert select_lines(lines, LogQuery(sender="nobody")) == []

    log_file = tmp_path / "mail.log"
    log_file.write_text(mail_log.getvalue())
    shown = invoke("log", "sessions", str(log_file))
    assert shown.exit_code == 0 and "2 sessions" in shown.stderr
    assert '"first"' in shown.stdout and "delivered b@example.net" in shown.stdout
    as_json = [
        json.loads(x)
        for x in invoke("log", "sessions", "--json", str(log_file)).stdout.splitlines()
    ]
    assert [len(s["inbound"]) for s in as_json] == [2, 1]
    selected = invoke("log", "select", "--message-id", "third", str(log_file))
    assert selected.exit_code == 0
    assert [json.loads(x)["message"] for x in selected.stdout.splitlines()] == [
        "accepted",
        "delivered",
    ]
    assert invoke("log", "select", "--subject", "nope", str(log_file)).exit_code == 1
    assert invoke("log", "select", "--subject", "(", str(log_file)).exit_code == 2

"""The mail log: flows, formatters, redaction, and one message's story end to end."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from smtpx.maillog import Flows, JsonFormatter, MailLog, PlainFormatter, _plain, redact_address
from smtpx.spool.spool import Hops
from smtpx.testing import MemoryNetwork
from tests.spool.helpers import MX, delivery, make_spool, settle, virtual


def capture(fmt: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(fmt)
    logger = logging.getLogger(f"test.maillog.{id(stream)}")
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream


def test_flows() -> None:
    session = Flows.create("srv")
    envelope = session.extend("in")
    out = envelope.extend("out")
    assert tuple(out.of_kind("srv")) == session.ids and len(out.ids) == 3
    assert out.are_related(session) and not Flows.create("srv").are_related(session)
    assert session.union(Flows.create("cli")).ids[0] == session.ids[0]
    with pytest.raises(ValueError, match="flow kind"):
        Flows.create("nope")


def test_json_lines() -> None:
    logger, stream = capture(JsonFormatter())
    log = MailLog("smtp-server", Flows.create("srv"), logger=logger).child("session")
    log.info("accepted", sender="<a@example.com>", recipients=["b@example.org"], message_size=12)
    line = json.loads(stream.getvalue())
    assert line["message"] == "accepted" and line["level"] == "info"
    assert line["component"] == "smtp-server/session"
    assert line["flows"][0].startswith("srv##")
    assert line["recipients"] == ["b@example.org"] and line["message_size"] == 12


def test_plain_lines_and_levels() -> None:
    logger, stream = capture(PlainFormatter())
    logger.setLevel(logging.INFO)
    log = MailLog("spool", Flows.create("out"), logger=logger)
    log.debug("hidden")
    log.info("deferred", reply="451 4.3.0 try later", recipients=["a@b.example", "c@d.example"])
    text = stream.getvalue()
    assert "hidden" not in text
    assert 'reply="451 4.3.0 try later"' in text and "recipients=a@b.example,c@d.example" in text
    assert text.rstrip().endswith("]") and "out##" in text


def test_redaction() -> None:
    assert redact_address("alice@example.org") == "a***@example.org"
    assert redact_address("<bob@example.org>") == "<b***@example.org>"
    logger, stream = capture(JsonFormatter())
    MailLog("x", logger=logger, redact=True).info(
        "m", sender="alice@example.org", recipients=["bob@x.example"]
    )
    line = json.loads(stream.getvalue())
    assert line["sender"] == "a***@example.org" and line["recipients"] == ["b***@x.example"]


def test_one_story_from_spool_to_delivery(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smtpx.mail")
    network = MemoryNetwork()
    arrived = Flows.create("srv").extend("in")

    async def router(message: object) -> Hops:
        return Hops((MX,), "mx")

    async def scenario() -> None:
        async with make_spool(tmp_path, network, router=router) as spool:
            await spool.add([delivery(1, next_hops=(), flows=arrived)])
            await settle()

    virtual(scenario)
    (record,) = [r for r in caplog.records if r.getMessage() == "delivered"]
    fields = record.mail  # type: ignore[attr-defined]
    assert Flows(tuple(fields["flows"])).are_related(arrived)
    assert any(flow.startswith("out##") for flow in fields["flows"])
    assert fields["relay"] == "mx.test" and fields["recipients"] == ["r1@example.org"]


def test_plain_lines_leave_out_empty_fields_and_quote_what_a_client_chose() -> None:
    logger, stream = capture(PlainFormatter())
    log = MailLog("spool", logger=logger)
    log.info("deferred", relay=None, reply="451 try later", user='x\nremote_ip=6.6.6.6 "a"')
    (line,) = stream.getvalue().splitlines()  # the newline did not end the line
    assert "relay" not in line and "None" not in line
    assert 'user="x\\nremote_ip=6.6.6.6 \\"a\\""' in line


@pytest.mark.parametrize(
    "value",
    ["", "plain", "two words", 'a "quote"', "back\\slash", "tab\there", "é ü", "\u2028", "\x7f"],
)
def test_plain_values_are_bare_or_exactly_json_quoted(value: str) -> None:
    shown = _plain(value)
    bare = value and value.isprintable() and not any(c.isspace() or c == '"' for c in value)
    assert shown == (value if bare else json.dumps(value, ensure_ascii=False))

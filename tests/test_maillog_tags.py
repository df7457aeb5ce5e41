"""Reading the mail log back (F114) and remapping levels per component (F116)."""

from __future__ import annotations

import datetime
import io
import ipaddress
import logging
from collections.abc import Iterator

import pytest

from smtpx import simplemail as sm
from smtpx.client import ClientConfig
from smtpx.envelope import EnvelopeId
from smtpx.errors import ParseError
from smtpx.fingerprint import fingerprint
from smtpx.maillog import (
    QUIET,
    Flows,
    JsonFormatter,
    LevelRemap,
    MailLog,
    PlainFormatter,
    RemapFilter,
    remapped,
)
from smtpx.maillog.tags import (
    COMMAND,
    DELAY,
    FINGERPRINT,
    LOCAL_ID,
    MESSAGE_SIZE,
    NEXT_ATTEMPT,
    RECIPIENTS,
    REMOTE_IP,
    REPLY,
    SENDER,
    SESSION_MARKER,
    SessionMarker,
    parse_line,
    read_log,
)
from smtpx.protocol import Address, Reply, Sender
from smtpx.protocol.commands import Command, Quit
from smtpx.testing import Handler, ScriptedServer

ID = EnvelopeId.create()
PRINT = fingerprint([b"Subject: a b} c=d\r\n\r\nhi\r\n"])


def lines(fmt: logging.Formatter, *, redact: bool = False) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(fmt)
    logger = logging.getLogger(f"test.tags.{id(stream)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    log = MailLog("smtp-server/session", Flows.create("srv").extend("in"), logger=logger)
    log = MailLog(log.component, log.flows, logger=logger, redact=redact)
    log.info(
        "accepted",
        session_marker="data",
        remote_ip="2001:db8::1",
        sender='<"a b"@example.com>',
        recipients=["r@example.org", "Postmaster"],
        message_size=1234,
        local_id=str(ID),
        reply="250 2.0.0 Ok: queued as X",
        fingerprint=PRINT.to_json(),
    )
    log.info("deferred", session_marker="deferred", reply="451-4.3.0 one\n451 4.3.0 two",
             delay=1.5, next_attempt="2026-11-24T04:30:00Z", command="DATA")  # fmt: skip
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("fmt", [JsonFormatter(), PlainFormatter()], ids=["json", "plain"])
def test_every_standard_tag_reads_back_to_its_type(fmt: logging.Formatter) -> None:
    accepted, deferred = read_log(lines(fmt))
    assert accepted.component == "smtp-server/session" and accepted.message == "accepted"
    assert accepted.level == "info" and len(accepted.flows.ids) == 2
    assert accepted.get(SESSION_MARKER) is SessionMarker.DATA
    assert accepted.get(REMOTE_IP) == ipaddress.ip_address("2001:db8::1")
    assert accepted.get(SENDER) == Sender(Address("a b", "example.com"))
    assert accepted.get(RECIPIENTS) == (Address("r", "example.org"), Address.postmaster())
    assert accepted.get(MESSAGE_SIZE) == 1234
    local_id = accepted.get(LOCAL_ID)
    assert isinstance(local_id, EnvelopeId) and local_id == ID
    assert accepted.get(REPLY) == Reply.of(250, "Ok: queued as X", "2.0.0")
    assert accepted.get(FINGERPRINT) == PRINT
    assert accepted.get(COMMAND) is None
    assert deferred.get(REPLY) == Reply.of(451, "one\ntwo", "4.3.0")
    assert deferred.get(DELAY) == 1.5 and deferred.get(COMMAND) == "DATA"
    assert deferred.get(NEXT_ATTEMPT) == datetime.datetime(2026, 11, 24, 4, 30, tzinfo=datetime.UTC)
    assert deferred.typed()["session_marker"] is SessionMarker.DEFERRED


def test_redacted_addresses_still_read_back() -> None:
    (accepted, _) = read_log(lines(JsonFormatter(), redact=True))
    assert accepted.get(RECIPIENTS) == (Address("r***", "example.org"), Address("P***", ""))


def test_a_bad_value_names_its_tag_and_other_lines_are_skipped() -> None:
    line = parse_line('{"level": "info", "message": "x", "component": "c", "reply": "hello"}')
    with pytest.raises(ParseError, match="tag reply"):
        line.get(REPLY)
    with pytest.raises(ParseError):
        parse_line("Traceback (most recent call last):")
    assert list(read_log(["Traceback (most recent call last):", "", "{}"])) == []


# --- F116 ------------------------------------------------------------------------------


def test_a_remap_changes_levels_and_drops_what_falls_below() -> None:
    remap = LevelRemap(minimum=logging.INFO, info_to=logging.DEBUG, error_to=logging.WARNING)
    assert remap.apply(logging.INFO) == logging.DEBUG
    assert remap.apply(logging.ERROR) == logging.WARNING
    assert remap.apply(logging.CRITICAL) == logging.CRITICAL


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("test.levels")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    yield logger, stream, handler
    logger.handlers = []


def test_remaps_by_logger_name_and_by_mail_log_component(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured
    handler.addFilter(
        RemapFilter(
            {"test.levels.client": QUIET, "spool": LevelRemap(warning_to=logging.ERROR)},
            threshold=logging.INFO,
        )
    )
    logging.getLogger("test.levels.client").info("hidden: remapped to debug")
    logging.getLogger("test.levels.client.cache").warning("kept")
    logging.getLogger("test.levels.clientele").info("kept, not a child")
    MailLog("spool", logger=logger).warning("louder")
    MailLog("spooler", logger=logger).warning("same")
    assert stream.getvalue().splitlines() == [
        "WARNING test.levels.client.cache kept",
        "INFO test.levels.clientele kept, not a child",
        "ERROR test.levels louder",
        "WARNING test.levels same",
    ]


async def test_remapped_covers_the_block_and_its_tasks(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    import asyncio

    logger, stream, handler = captured
    handler.addFilter(RemapFilter(threshold=logging.INFO))

    async def inner() -> None:
        logger.info("quiet in a task")

    with remapped(QUIET):
        logger.info("quiet")
        await asyncio.get_running_loop().create_task(inner())
    logger.info("loud again")
    assert stream.getvalue().splitlines() == ["INFO test.levels loud again"]


class OddQuit(Handler):
    def other(self, command: Command) -> Reply:
        if isinstance(command, Quit):
            return Reply.of(421, "closing oddly")
        return super().other(command)


async def test_simplemail_logs_the_clients_info_lines_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "smtpx.client")
    caplog.handler.addFilter(RemapFilter(threshold=logging.DEBUG))
    async with ScriptedServer(OddQuit) as server:
        await sm.send(
            host="127.0.0.1",
            port=server.port,
            config=ClientConfig.for_testing(),
            from_="a@example.com",
            to=["b@example.org"],
            subject="hi",
            content="hi",
        )
    (record,) = [r for r in caplog.records if "answered QUIT" in r.getMessage()]
    assert record.levelno == logging.DEBUG  # info, quieter (F116)

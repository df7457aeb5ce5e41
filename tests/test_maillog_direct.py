"""Mail log lines written straight to the handler ``configure_logging`` installed: the
same lines as through the stdlib's loggers (formats, remaps, redaction), and the stdlib's
path again as soon as anything else would see them."""

from __future__ import annotations

import io
import logging
import time

import pytest

from smtpx import maillog
from smtpx.maillog import (
    QUIET,
    FieldsFilter,
    Flows,
    LevelRemap,
    MailLog,
    configure_logging,
    remapped,
)


class Collecting(logging.Handler):
    """A handler that keeps the records it gets."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def some_lines() -> None:
    log = MailLog("smtp-server/session", Flows(("srv##1", "in##2")))
    log.info("accepted", sender="<a@example.com>", recipients=["b@x.org"], reply=None, size=42)
    log.warning("odd", text="two words", quote='say "hi"')
    log.child("tls").error("failed", reason="handshake\nbroken")
    MailLog("spool").info("spooled", spool_id="m1")  # remapped to debug below: dropped
    MailLog("spool").warning("deferred", spool_id="m1")
    MailLog("relay", redact=True).info("sent", recipients=["alice@example.org"])
    with remapped(QUIET):
        MailLog("simplemail").info("quiet")  # debug: dropped
        MailLog("simplemail").warning("still shown")


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("worker", [False, True], ids=["", "worker"])
@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_the_lines_are_those_of_the_stdlib_path(
    fmt: str, worker: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.25)
    stream = io.StringIO()
    configure_logging("info", fmt, stream, levels={"spool": LevelRemap(info_to=logging.DEBUG)})
    if worker:  # as a worker of smtpx serve has it
        logging.getLogger().handlers[0].addFilter(FieldsFilter({"worker": 1}))
    direct = maillog._DIRECT[0]
    assert direct is not None
    assert [f.fields for f in direct.alone(logging.INFO) or []] == (
        [{"worker": 1}] if worker else []
    )
    some_lines()
    fast = stream.getvalue()
    stream.seek(0)
    stream.truncate()
    logging.getLogger().addHandler(logging.NullHandler())  # someone else listens
    assert direct.alone(logging.INFO) is None
    some_lines()
    assert fast == stream.getvalue()
    assert len(fast.splitlines()) == 6
    assert "spooled" not in fast and "quiet" not in fast and "a***@example.org" in fast
    assert fast.count("worker") == (6 if worker else 0)


@pytest.mark.usefixtures("restore_logging")
def test_no_record_is_made_while_the_handler_is_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    configure_logging("info", "plain", stream)

    def no_record(*args: object) -> logging.LogRecord:
        raise AssertionError("a record was made")

    monkeypatch.setattr(maillog, "make_record", no_record)
    MailLog("spool").info("spooled", spool_id="m1")
    assert " info spool spooled spool_id=m1" in stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_a_handler_added_on_the_way_gets_the_records() -> None:
    stream = io.StringIO()
    configure_logging("info", "plain", stream)
    keep = Collecting()
    seen = keep.records
    logging.getLogger("smtpx").addHandler(keep)
    try:
        MailLog("spool").info("spooled", spool_id="m1")
    finally:
        logging.getLogger("smtpx").removeHandler(keep)
    MailLog("spool").info("spooled", spool_id="m2")
    assert [r.mail["spool_id"] for r in seen] == ["m1"]  # type: ignore[attr-defined]
    assert stream.getvalue().count(" spooled spool_id=") == 2  # both reached the stream


@pytest.mark.usefixtures("restore_logging")
def test_a_stream_that_fails_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(32, "Broken pipe")

    configure_logging("info", "plain", Broken())
    MailLog("spool").info("spooled", spool_id="m1")  # does not raise
    assert "Broken pipe" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_errors_also_reach_a_handler_that_takes_only_errors() -> None:
    """The control plane's error stream (level ERROR) is on the root too: info lines
    still go straight to the stream; an error line goes through the loggers, to both."""
    stream = io.StringIO()
    configure_logging("info", "plain", stream)
    errors = Collecting(logging.ERROR)
    logging.getLogger().addHandler(errors)
    direct = maillog._DIRECT[0]
    assert direct is not None
    assert direct.alone(logging.INFO) == [] and direct.alone(logging.ERROR) is None
    MailLog("spool").info("spooled", spool_id="m1")
    MailLog("spool").error("lost", spool_id="m2")
    assert [r.getMessage() for r in errors.records] == ["lost"]
    assert stream.getvalue().count(" spool_id=") == 2


@pytest.mark.usefixtures("restore_logging")
def test_a_field_that_cannot_be_shown_is_reported_not_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Unshowable:
        def __str__(self) -> str:
            raise ValueError("no text for this")

    configure_logging("info", "plain", io.StringIO())
    MailLog("spool").info("spooled", odd=Unshowable())  # does not raise
    assert "no text for this" in capsys.readouterr().err

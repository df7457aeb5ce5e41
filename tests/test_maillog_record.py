"""MailRecord: a mail log line's record has every field a LogRecord has, with its meaning."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import smtpx.maillog
from smtpx.maillog import MailLog
from smtpx.maillog.record import MailRecord, make_record


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[tuple[logging.Logger, Keep]]:
    logger = logging.getLogger("test.maillog.record")
    handler = Keep()
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler
    logger.handlers = []


def test_same_fields_as_the_stdlib_record(kept: tuple[logging.Logger, Keep]) -> None:
    logger, handler = kept
    MailLog("spool", logger=logger).warning("deferred", spool_id="x1")
    ours = handler.records[0]
    assert type(ours) is MailRecord
    # MailLog.log's source file (compiled, the module's __file__ is the extension)
    source = os.path.join(os.path.dirname(smtpx.maillog.__file__), "__init__.py")
    theirs = logger.makeRecord(logger.name, logging.WARNING, source, 0, "deferred", (), None)
    assert set(vars(theirs)) <= set(dir(ours))  # every attribute, instance or class
    for name in vars(theirs):
        if name not in {"created", "msecs", "relativeCreated"}:
            assert getattr(ours, name) == getattr(theirs, name), name
    assert abs(ours.created - theirs.created) < 5 and ours.relativeCreated > 0
    assert ours.getMessage() == "deferred" and ours.mail["spool_id"] == "x1"


def test_a_format_string_of_stdlib_fields_works(kept: tuple[logging.Logger, Keep]) -> None:
    logger, _ = kept
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(processName)s %(thread)d "
            "%(threadName)s %(filename)s %(module)s %(funcName)s %(lineno)d %(message)s"
        )
    )
    logger.handlers = [handler]
    MailLog("spool", logger=logger).info("spooled")
    words = stream.getvalue().split()
    assert words[2:] == [
        "INFO",
        logger.name,
        str(os.getpid()),
        "MainProcess",
        str(threading.get_ident()),
        threading.current_thread().name,
        "__init__.py",
        "__init__",
        "None",
        "0",
        "spooled",
    ]


def test_a_record_factory_of_ones_own_is_used(kept: tuple[logging.Logger, Keep]) -> None:
    logger, handler = kept
    base = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        record.tagged = True
        return record

    logging.setLogRecordFactory(tagged)
    try:
        MailLog("spool", logger=logger).info("spooled", spool_id="y")
    finally:
        logging.setLogRecordFactory(base)
    record = handler.records[0]
    assert type(record) is not MailRecord and record.tagged  # type: ignore[attr-defined]
    assert record.mail["spool_id"] == "y"  # type: ignore[attr-defined]


def test_a_forked_child_logs_its_own_process_id() -> None:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        record = make_record(logging.getLogger("x"), logging.INFO, "m", {})
        os.write(write, str(record.process).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        assert pipe.read() == str(child)

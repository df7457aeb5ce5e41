"""The log record of a mail log line, made for a fraction of :class:`logging.LogRecord`'s cost.

The stdlib's record splits its source path with :mod:`os.path` twice, asks the kernel for
the process id (``getpid`` is a system call since glibc 2.25) and looks up the
multiprocessing module, for every line. A mail log line always comes from the same place
(:meth:`smtpx.maillog.MailLog.log`), so those fields are the same for every line: they are
computed once here, and the process id is refreshed in a forked child. Every attribute
a :class:`logging.LogRecord` has, a :class:`MailRecord` has, with the same meaning, so any
handler, filter or formatter works as before. A record factory set with
:func:`logging.setLogRecordFactory` still wins: :func:`make_record` uses it when one is set.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

__all__ = ["MailRecord", "make_record"]

_FIRST = logging.LogRecord("", 0, "", 0, "", (), None)
_START = _FIRST.created - _FIRST.relativeCreated / 1000  # when logging was loaded
_PID = [os.getpid()]  # this process's id, refreshed in a forked child
_PATH = os.path.join(os.path.dirname(__file__), "__init__.py")  # MailLog.log's file


# The attributes every mail log record has with the same value. funcName is None, as the
# stdlib's record has it when given no function.
_FIXED: dict[str, Any] = {
    "args": (),
    "pathname": _PATH,
    "filename": "__init__.py",
    "module": "__init__",
    "lineno": 0,
    "funcName": None,
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
}


def _forked() -> None:
    _PID[0] = os.getpid()


os.register_at_fork(after_in_child=_forked)


class MailRecord(logging.LogRecord):
    """A :class:`logging.LogRecord` of a mail log line (``msg`` has no ``%`` arguments)."""

    def __init__(self, name: str, level: int, msg: str, mail: dict[str, Any]) -> None:
        now = time.time()
        # Instance attributes all (formatters read the record's __dict__); those that are
        # the same for every line are copied in at once.
        self.__dict__.update(_FIXED)
        self.name = name
        self.msg = msg
        self.levelname = logging.getLevelName(level)
        self.levelno = level
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0
        self.relativeCreated = (now - _START) * 1000
        if logging.logThreads:
            self.thread = threading.get_ident()
            self.threadName = threading.current_thread().name
        else:
            self.thread = None
            self.threadName = None
        self.processName = _process_name() if logging.logMultiprocessing else None
        self.process = _PID[0] if logging.logProcesses else None
        if sys.version_info >= (3, 12):
            self.taskName = _task_name()
        self.mail = mail


def _process_name() -> str:
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:
        return "MainProcess"
    try:
        return str(multiprocessing.current_process().name)
    except Exception:  # as the stdlib: a half-imported module
        return "MainProcess"


def _task_name() -> str | None:
    if not getattr(logging, "logAsyncioTasks", True):
        return None
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return None
    return None if task is None else str(task.get_name())


def make_record(
    logger: logging.Logger, level: int, msg: str, mail: dict[str, Any]
) -> logging.LogRecord:
    """The record of one mail log line for ``logger``, with ``mail`` as its fields."""
    factory = logging.getLogRecordFactory()
    if factory is logging.LogRecord:
        return MailRecord(logger.name, level, msg, mail)
    # Someone's own factory: the stdlib's way, caller search aside.
    return logger.makeRecord(logger.name, level, __file__, 0, msg, (), None, extra={"mail": mail})

"""The mail log: structured log lines with flows, components and standard tags (F112-F116).

A **flow** is a set of causal ids, each ``kind##id``: ``srv`` (a server session), ``in``
(an inbound envelope, from MAIL FROM), ``out`` (a spooled message), ``cli`` (a client
session), ``conn`` (a pooled connection). Lines that share an id belong to one story:
follow a message from the session that received it to the attempts that delivered it.

A **component** is a path such as ``smtp-server/session``. **Tags** are the standard fields
below (anything else is allowed too). Lines go through the stdlib :mod:`logging` (logger
``smtpx.mail``), so any handler works; :class:`JsonFormatter` writes one JSON object per
line, :class:`PlainFormatter` a readable ``key=value`` line. When the handler
:func:`configure_logging` installed is the only one a line would reach (``smtpx serve``),
the line is written to it directly, the same line for less CPU (:class:`_Direct`); its info
and debug lines made in an event loop are written together at the loop's next pass
(:mod:`smtpx.maillog.batching`).

Standard tags: ``session_marker`` (connected, mail_from, rcpt_to, data, sending,
delivered, deferred, bounced, frozen), ``local_ip``, ``remote_ip``, ``remote_address``,
``rfc822_id`` (Message-ID), ``local_id`` (envelope id), ``spool_id``, ``message_size``,
``sender``, ``recipients``, ``command``, ``reply``, ``relay``, ``delay``, ``fingerprint``
(F115, :mod:`smtpx.fingerprint`: on the ``accepted`` line when the server's
``fingerprints`` is on).

With ``redact=True`` the local parts of addresses are masked (``a***@example.org``).
Credentials never appear in the mail log: nothing passes AUTH payloads to it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from smtpx.maillog.batching import BatchingHandler
from smtpx.maillog.levels import QUIET, LevelRemap, RemapFilter, remapped
from smtpx.maillog.record import make_record
from smtpx.units import iso_time

__all__ = [
    "QUIET",
    "FieldsFilter",
    "Flows",
    "JsonFormatter",
    "LevelRemap",
    "MailLog",
    "PlainFormatter",
    "RemapFilter",
    "configure_logging",
    "redact_address",
    "remapped",
]

KINDS = ("srv", "in", "out", "cli", "conn")
_MAIL = logging.getLogger("smtpx.mail")  # looked up once: getLogger takes a lock
_ADDRESS_TAGS = frozenset({"sender", "recipient", "recipients"})


@dataclass(frozen=True, slots=True, init=False)
class Flows:
    """A set of flow ids, newest first."""

    ids: tuple[str, ...] = ()

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (ten times the cost; docs/performance.md, "Writing code that compiles").
    def __init__(self, ids: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "ids", ids)

    @classmethod
    def create(cls, kind: str) -> Flows:
        return cls((_new_id(kind),))

    def extend(self, kind: str) -> Flows:
        """These flows plus a new id of ``kind``."""
        return Flows((_new_id(kind), *self.ids))

    def union(self, other: Flows) -> Flows:
        return Flows(tuple(dict.fromkeys((*self.ids, *other.ids))))

    def are_related(self, other: Flows) -> bool:
        return not set(self.ids).isdisjoint(other.ids)

    def of_kind(self, kind: str) -> list[str]:
        return [i for i in self.ids if i.startswith(kind + "##")]

    def __str__(self) -> str:
        return " ".join(self.ids)


def _new_id(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"flow kind must be one of {KINDS}, not {kind!r}")
    # Unique, not secret: the random module (reseeded in forked children) needs no
    # system call per id, unlike secrets. Twelve hex digits: the bit above them is set
    # and cut off with "0x1" (a format spec costs twice as much, compiled).
    return f"{kind}##{hex(random.getrandbits(48) | _ID_TOP)[3:]}"


_ID_TOP = 1 << 48


def redact_address(address: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at:
        return address[:1] + "***"
    prefix = "<" if local.startswith("<") else ""
    bare = local.removeprefix("<")
    return f"{prefix}{bare[:1]}***@{domain}"


class MailLog:
    """Where one component writes mail log lines, with its flows."""

    __slots__ = ("component", "flows", "logger", "redact")

    def __init__(
        self,
        component: str = "",
        flows: Flows = Flows(),
        *,
        logger: logging.Logger | None = None,
        redact: bool = False,
    ) -> None:
        self.logger = logger or _MAIL
        self.component = component
        self.flows = flows
        self.redact = redact

    def child(self, component: str) -> MailLog:
        path = f"{self.component}/{component}" if self.component else component
        return MailLog(path, self.flows, logger=self.logger, redact=self.redact)

    def with_flows(self, flows: Flows) -> MailLog:
        return MailLog(self.component, flows, logger=self.logger, redact=self.redact)

    def enabled(self, level: int = logging.INFO) -> bool:
        return self.logger.isEnabledFor(level)

    def log(self, level: int, message: str, **tags: Any) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        if self.redact:
            tags = {k: _redacted(k, v) for k, v in tags.items()}
        fields = {"component": self.component, "flows": list(self.flows.ids), **tags}
        direct = _DIRECT[0]
        if direct is not None and logger is _MAIL and direct.write(level, message, fields):
            return
        # The record is made here, not by Logger.log: its search of the stack for the
        # caller (which would always find this method) was a third of a line's cost, and
        # a MailRecord costs a third of a LogRecord (smtpx.maillog.record).
        logger.handle(make_record(logger, level, message, fields))

    def debug(self, message: str, **tags: Any) -> None:
        self.log(logging.DEBUG, message, **tags)

    def info(self, message: str, **tags: Any) -> None:
        self.log(logging.INFO, message, **tags)

    def warning(self, message: str, **tags: Any) -> None:
        self.log(logging.WARNING, message, **tags)

    def error(self, message: str, **tags: Any) -> None:
        self.log(logging.ERROR, message, **tags)


def _redacted(key: str, value: Any) -> Any:
    if key == "fingerprint" and isinstance(value, Mapping):
        return _names_only(value)
    if key not in _ADDRESS_TAGS:
        return value
    if isinstance(value, str):
        return redact_address(value)
    if isinstance(value, Iterable):
        return [redact_address(str(v)) for v in value]
    return value


def _names_only(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """A fingerprint without header values (they hold addresses): names and MD5s stay."""
    return {
        "headers": [[name, "***"] for name, _ in fingerprint.get("headers", [])],
        "md5": fingerprint.get("md5"),
        "parts": [_names_only(p) for p in fingerprint.get("parts", [])],
    }


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "mail", None)
    if type(fields) is dict:  # what MailLog gives: no slower check of the ABC
        return fields
    return fields if isinstance(fields, Mapping) else {}


class _LineFormatter(logging.Formatter):
    """A formatter whose line can be made without a record (:class:`_Direct`)."""

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created, record.levelname, record.name, record.getMessage(), _fields(record),
            exception=exception,
        )  # fmt: skip

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[str, Any],
        *,
        exception: str | None = None,
    ) -> str:
        """The line of a record with these attributes (``fields``: its mail fields)."""
        raise NotImplementedError


class JsonFormatter(_LineFormatter):
    """One JSON object per line: time, level, logger, message, and the mail fields."""

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[str, Any],
        *,
        exception: str | None = None,
    ) -> str:
        line: dict[str, Any] = {
            "time": round(created, 6),
            "level": levelname.lower(),
            "logger": name,
            "message": message,
        }
        line.update(fields)
        if exception is not None:
            line["exception"] = exception
        return json.dumps(line, default=str, ensure_ascii=False)


_HEAD = frozenset({"component", "flows"})  # the fields a plain line shows first and last


class PlainFormatter(_LineFormatter):
    """``2026-11-24T04:30:00Z info component message key=value ... [flows]``."""

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[str, Any],
        *,
        exception: str | None = None,
    ) -> str:
        component = fields.get("component") or name
        flows = fields.get("flows")
        parts = [iso_time(created), levelname.lower(), component, message]
        # A field without a value (None: no relay yet, no reply) is left out. (A loop,
        # not a generator: this is the mail log's hottest line.)
        for key, value in fields.items():
            if value is not None and key not in _HEAD:
                parts.append(f"{key}={_plain(value)}")
        if flows:
            parts.append("[" + " ".join(flows) + "]")
        text = " ".join(parts)
        if exception is not None:
            text += "\n" + exception
        return text


def _plain(value: Any) -> str:
    """A field's value in a plain line: as it is, or quoted (JSON string escapes) when it
    is empty or holds a space, a quote or anything unprintable: a value a client chose
    (a user name, a HELO name) never ends the line or passes for another field."""
    kind = type(value)
    text: str
    if kind is str:
        text = value
    elif kind is int:  # digits and a sign (bool and enums are not of this exact type)
        return str(value)
    elif isinstance(value, (list, tuple)):
        text = ",".join(map(str, value))
    elif isinstance(value, Mapping):  # a fingerprint: compact JSON
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    # A printable text's only white space is the ASCII space (every other is a separator
    # or a control character, which isprintable() refuses): no pattern needed.
    if text.isprintable():
        if text and " " not in text and '"' not in text:
            return text
        if '"' not in text and "\\" not in text:
            return f'"{text}"'  # what json.dumps gives for it, without its cost
    return json.dumps(text, ensure_ascii=False)


class FieldsFilter(logging.Filter):
    """A handler filter that adds ``fields`` to every record's mail fields (a worker's
    ``worker: I``), lines of other loggers included."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__()
        self.fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        record.mail = {**_fields(record), **self.fields}
        return True


class _Direct:
    """Mail log lines written straight to the handler :func:`configure_logging` set up,
    as long as it is the only place they would go: no record, no trip through the
    loggers, the same line (its remaps, its format, the fields of its
    :class:`FieldsFilter`) for less CPU (measured: 3% a message on ``smtpx serve``
    intake with kept connections, docs/performance.md). When
    anything else would see the line (another handler on the way that takes its level:
    the control plane's error stream for errors, a test's log capture; a filter on the
    mail logger or the handler; a record factory), it takes the stdlib's path."""

    def __init__(
        self,
        handler: BatchingHandler,
        formatter: _LineFormatter,
        remap: RemapFilter,
    ) -> None:
        self.handler = handler
        self.formatter = formatter
        self.remap = remap

    def write(self, level: int, message: str, fields: dict[str, Any]) -> bool:
        """Write what the handler would for this line (nothing if it drops it); False,
        having written nothing, when another handler would see it too."""
        handler = self.handler
        got = self.remap.level_for(_MAIL.name, fields["component"], level)
        added = self.alone(level if got is None else max(level, got))
        if added is None:
            return False
        if got is None or got < handler.level:
            return True
        for extra in added:
            fields.update(extra.fields)
        lock = handler.lock  # (held as ``acquire`` would, without two interpreted calls)
        assert lock is not None  # (``Handler.__init__`` made it)
        with lock:
            try:
                name = logging.getLevelName(got)
                text = self.formatter.line(time.time(), name, _MAIL.name, message, fields)
                handler.add_line(text, urgent=got >= logging.WARNING)
            except Exception:  # as StreamHandler.emit: reported, never raised into mail
                handler.handleError(make_record(_MAIL, got, message, fields))
        return True

    def alone(self, level: int) -> list[FieldsFilter] | None:
        """The handler's :class:`FieldsFilter` filters when a mail log line at ``level``
        would reach this handler only, through the remap and those filters only (as
        configured, with a worker's field); None otherwise."""
        mail, handler = _MAIL, self.handler
        if mail.filters or mail.disabled or logging.getLogRecordFactory() is not logging.LogRecord:
            return None
        filters = handler.filters
        if not filters or filters[0] is not self.remap or handler.formatter is not self.formatter:
            return None
        added = [f for f in filters[1:] if type(f) is FieldsFilter] if len(filters) > 1 else []
        if len(added) != len(filters) - 1:
            return None
        found = False
        node: logging.Logger | None = mail
        while node is not None:
            for other in node.handlers:
                if other is handler:
                    found = True
                elif level >= other.level:
                    return None
            node = node.parent if node.propagate else None
        return added if found else None


_DIRECT: list[_Direct | None] = [None]  # set by configure_logging


def configure_logging(
    level: str = "info",
    fmt: str = "plain",
    stream: Any = None,
    *,
    levels: Mapping[str, LevelRemap] | None = None,
) -> None:
    """Send every log line (the mail log included) to ``stream`` (stderr by default), as
    ``plain`` text or ``json`` lines, from ``level`` up. ``levels``: remaps by logger
    name or mail log component (:mod:`smtpx.maillog.levels`, F116); the remaps set with
    :func:`~smtpx.maillog.levels.remapped` apply too."""
    import sys  # noqa: PLC0415 - only the CLI calls this

    handler = BatchingHandler(stream or sys.stderr)
    formatter = JsonFormatter() if fmt == "json" else PlainFormatter()
    remap = RemapFilter(levels, logging.getLevelName(level.upper()))
    handler.setFormatter(formatter)
    handler.addFilter(remap)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _DIRECT[0] = _Direct(handler, formatter, remap)

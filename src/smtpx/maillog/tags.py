"""Reading the mail log back (F114): each standard tag parses to its type.

:func:`parse_line` takes one line in either format (:class:`~smtpx.maillog.JsonFormatter`
or :class:`~smtpx.maillog.PlainFormatter`) and gives a :class:`MailLine`;
``line.get(REPLY)`` is then a :class:`~smtpx.protocol.Reply`, ``line.get(RECIPIENTS)``
a tuple of :class:`~smtpx.protocol.Address`, and so on. A tag the line does not have is
None; a tag whose text is not of its type raises :class:`~smtpx.errors.ParseError`
naming the tag. Redacted addresses (``a***@example.org``) still parse: ``*`` is atext.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from smtpx.envelope import EnvelopeId
from smtpx.errors import ParseError
from smtpx.fingerprint import Fingerprint
from smtpx.maillog import Flows
from smtpx.protocol.addresses import Address, Sender, parse_path
from smtpx.protocol.replies import Reply

__all__ = [
    "COMMAND",
    "DELAY",
    "FINGERPRINT",
    "LOCAL_ID",
    "LOCAL_IP",
    "MESSAGE_SIZE",
    "NEXT_ATTEMPT",
    "RECIPIENTS",
    "RELAY",
    "REMOTE_IP",
    "REPLY",
    "RFC822_ID",
    "SENDER",
    "SESSION_MARKER",
    "SPOOL_ID",
    "TAGS",
    "MailLine",
    "SessionMarker",
    "Tag",
    "parse_line",
    "read_log",
]

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SessionMarker(enum.StrEnum):
    """Where in a message's story a line is (async_smtp's ``Session_marker``, extended)."""

    CONNECTED = "connected"
    MAIL_FROM = "mail_from"
    RCPT_TO = "rcpt_to"
    DATA = "data"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FROZEN = "frozen"
    PURGED = "purged"


@dataclass(frozen=True, slots=True)
class Tag(Generic[T]):
    """A standard tag: its name in the log and how its value reads back."""

    name: str
    read: Callable[[Any], T] = field(repr=False, compare=False)

    def of(self, value: Any) -> T:
        try:
            return self.read(value)
        except (ParseError, ValueError, TypeError, KeyError) as exc:
            raise ParseError(
                f"mail log tag {self.name}: {value!r} does not read back: {exc}"
            ) from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value


def _items(value: Any) -> list[str]:
    # JSON keeps the list; a plain line joins it with commas (quoted when it has spaces).
    if isinstance(value, list):
        return [_text(item) for item in value]
    text = _text(value)
    return text.split(",") if text else []


def _recipient(text: str) -> Address:
    text = text.strip()
    if "@" not in text:
        return Address(text, "")  # only Postmaster has no domain (maybe redacted: P***)
    address = parse_path(text, allow_postmaster=True)
    assert address is not None
    return address


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a number")
    return float(value)


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("not an integer")
    return int(value)


def _moment(value: Any) -> datetime.datetime:
    return datetime.datetime.fromisoformat(_text(value))


def _fingerprint(value: Any) -> Fingerprint:
    data = json.loads(value) if isinstance(value, str) else value
    return Fingerprint(
        headers=[(name, text) for name, text in data["headers"]],
        md5=data.get("md5"),
        parts=[_fingerprint(part) for part in data.get("parts", [])],
    )


SESSION_MARKER = Tag("session_marker", lambda v: SessionMarker(_text(v)))
LOCAL_IP: Tag[IPAddress] = Tag("local_ip", lambda v: ipaddress.ip_address(_text(v)))
REMOTE_IP: Tag[IPAddress] = Tag("remote_ip", lambda v: ipaddress.ip_address(_text(v)))
RFC822_ID = Tag("rfc822_id", _text)
LOCAL_ID = Tag("local_id", lambda v: EnvelopeId.parse(_text(v)))
SPOOL_ID = Tag("spool_id", _text)
MESSAGE_SIZE = Tag("message_size", _size)
SENDER = Tag("sender", lambda v: Sender.parse(_text(v)))
RECIPIENTS = Tag("recipients", lambda v: tuple(_recipient(r) for r in _items(v)))
COMMAND = Tag("command", _text)
REPLY = Tag("reply", lambda v: Reply.parse(_text(v)))
RELAY = Tag("relay", _text)
DELAY = Tag("delay", _number)
NEXT_ATTEMPT = Tag("next_attempt", _moment)
FINGERPRINT = Tag("fingerprint", _fingerprint)

TAGS: tuple[Tag[Any], ...] = (
    SESSION_MARKER,
    LOCAL_IP,
    REMOTE_IP,
    RFC822_ID,
    LOCAL_ID,
    SPOOL_ID,
    MESSAGE_SIZE,
    SENDER,
    RECIPIENTS,
    COMMAND,
    REPLY,
    RELAY,
    DELAY,
    NEXT_ATTEMPT,
    FINGERPRINT,
)


@dataclass(frozen=True, slots=True)
class MailLine:
    """One mail log line: its time (None in a plain line: it has only its second, see
    ``stamp``), level, component, message, flows, and every tag as written."""

    level: str
    component: str
    message: str
    flows: Flows
    tags: Mapping[str, Any]
    time: float | None = None
    stamp: datetime.datetime | None = None

    def get(self, tag: Tag[T]) -> T | None:
        """The tag's value read back to its type, or None when the line has none."""
        value = self.tags.get(tag.name)
        return None if value is None else tag.of(value)

    def typed(self) -> dict[str, Any]:
        """Every standard tag the line has, read back (other tags as written)."""
        standard = {tag.name: tag for tag in TAGS}
        return {
            name: standard[name].of(value) if name in standard else value
            for name, value in self.tags.items()
        }


_JSON_KEYS = frozenset({"time", "level", "logger", "message", "component", "flows"})
_PLAIN_HEAD = re.compile(r"(\S+Z) (\w+) (\S+) ")
_PLAIN_KEY = re.compile(r" (\w+)=")
_PLAIN_FLOWS = re.compile(r" \[((?:\w+##\w+ ?)+)\]$")
_DECODER = json.JSONDecoder()


def parse_line(text: str) -> MailLine:
    """One line of the mail log, JSON or plain; ParseError if it is neither."""
    text = text.rstrip("\r\n")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ParseError(f"not a mail log line: {exc}") from None
        if isinstance(data, dict):
            return _of_json(data)
    return _of_plain(text)


def _of_json(data: dict[str, Any]) -> MailLine:
    return MailLine(
        level=str(data.get("level", "")),
        component=str(data.get("component", data.get("logger", ""))),
        message=str(data.get("message", "")),
        flows=Flows(tuple(data.get("flows", ()))),
        tags={k: v for k, v in data.items() if k not in _JSON_KEYS},
        time=data.get("time"),
    )


def _of_plain(text: str) -> MailLine:
    head = _PLAIN_HEAD.match(text)
    if head is None:
        raise ParseError(f"not a mail log line: {text[:80]!r}")
    rest = " " + text[head.end() :]
    flows: tuple[str, ...] = ()
    if (found := _PLAIN_FLOWS.search(rest)) is not None:
        flows = tuple(found[1].split())
        rest = rest[: found.start()]
    first = _PLAIN_KEY.search(rest)
    message = rest if first is None else rest[: first.start()]
    stamp = datetime.datetime.strptime(head[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return MailLine(
        level=head[2],
        component=head[3],
        message=message.strip(),
        flows=Flows(flows),
        tags=_plain_tags(rest, len(message)),
        stamp=stamp,
    )


def _plain_tags(text: str, at: int) -> dict[str, Any]:
    """``key=value`` pairs from ``at`` on: a value is JSON when it starts with a quote or
    a brace (as :class:`~smtpx.maillog.PlainFormatter` writes it), else runs to a space."""
    tags: dict[str, Any] = {}
    while (key := _PLAIN_KEY.match(text, at)) is not None:
        at = key.end()
        value: Any
        if text.startswith(('"', "{"), at):
            try:
                value, at = _DECODER.raw_decode(text, at)
            except ValueError as exc:
                raise ParseError(f"tag {key[1]}: {exc}") from None
        else:
            end = text.find(" ", at)
            end = len(text) if end < 0 else end
            value, at = text[at:end], end
        tags[key[1]] = value
    if at != len(text):
        raise ParseError(f"not a key=value pair: {text[at : at + 40]!r}")
    return tags


def read_log(lines: Iterable[str]) -> Iterator[MailLine]:
    """Every mail log line of ``lines`` (other lines, such as tracebacks, are skipped)."""
    for text in lines:
        try:
            line = parse_line(text)
        except ParseError:
            continue
        if line.flows.ids or "session_marker" in line.tags or line.component:
            yield line

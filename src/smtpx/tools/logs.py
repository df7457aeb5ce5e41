"""Reading the mail log back (F129): sessions rebuilt from the JSON lines, and a selector
that finds the stories of given mail.

The mail log (``[log] format = "json"``) writes one object per line with ``flows``: an
``accepted`` line carries its transaction's ``in##`` id and its session's ``srv##`` id;
each line about a spooled message (``delivered``, ``deferred``, ``bounced``, ``frozen``)
carries the message's ``out##`` id and those two. :func:`sessions` follows them::

    session srv##...  (the SMTP connection: remote IP, first and last time)
      inbound in##...  (one transaction: sender, recipients, Message-ID, size, and with
                        [log] fingerprints the header fields: Subject, From, To, Cc)
        outbound out##... (one spool message: spool id, then each attempt's outcome)

:class:`LogQuery` picks inbound messages by envelope sender, envelope recipient, header
recipient (To/Cc), subject, Message-ID (regular expressions, any case) and flow id, and
:func:`select_lines` gives every line of the stories it picks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = [
    "Inbound",
    "LogQuery",
    "Outbound",
    "SessionStory",
    "read_lines",
    "select_lines",
    "sessions",
]

Line = dict[str, Any]


def read_lines(source: IO[str] | Iterable[str]) -> Iterator[Line]:
    """The mail log's JSON objects (lines that are not JSON objects are skipped)."""
    for text in source:
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict):
            yield line


def _flow(line: Line, kind: str) -> str | None:
    flows = line.get("flows")
    if not isinstance(flows, list):
        return None
    return next((f for f in flows if isinstance(f, str) and f.startswith(kind + "##")), None)


@dataclass
class Outbound:
    """One spooled message made from an inbound one: its lines, oldest first."""

    flow: str
    spool_id: str | None = None
    events: list[Line] = field(default_factory=list)

    def summary(self) -> str:
        """``delivered b@x.org relay=mx.example; deferred ...``."""
        parts = []
        for event in self.events:
            recipients = ",".join(map(str, event.get("recipients") or []))
            relay = f" relay={event['relay']}" if event.get("relay") else ""
            parts.append(f"{event.get('message')} {recipients}{relay}".strip())
        return "; ".join(parts)


@dataclass
class Inbound:
    """One accepted transaction and what became of it."""

    flow: str
    accepted: Line | None = None
    outbound: dict[str, Outbound] = field(default_factory=dict)

    def header(self, name: str) -> list[str]:
        """The values of header field ``name`` (from the fingerprint; [] without one)."""
        fingerprint = (self.accepted or {}).get("fingerprint")
        fields = fingerprint.get("headers", []) if isinstance(fingerprint, dict) else []
        return [str(v) for n, v in fields if str(n).lower() == name.lower()]

    @property
    def sender(self) -> str:
        return str((self.accepted or {}).get("sender", ""))

    @property
    def recipients(self) -> list[str]:
        return [str(r) for r in (self.accepted or {}).get("recipients") or []]

    @property
    def message_id(self) -> str:
        return str((self.accepted or {}).get("rfc822_id") or "")

    def summary(self) -> dict[str, Any]:
        """What a person asks first: subject, from, to, cc, Message-ID, where it went."""
        return {
            "flow": self.flow,
            "local_id": (self.accepted or {}).get("local_id"),
            "sender": self.sender,
            "recipients": self.recipients,
            "message_id": self.message_id or None,
            "size": (self.accepted or {}).get("message_size"),
            "subject": next(iter(self.header("Subject")), None),
            "from": self.header("From"),
            "to": self.header("To"),
            "cc": self.header("Cc"),
            "outbound": [
                {"flow": o.flow, "spool_id": o.spool_id, "outcome": o.summary()}
                for o in self.outbound.values()
            ],
        }


@dataclass
class SessionStory:
    """One SMTP session (``srv##``) and the transactions it brought."""

    flow: str
    remote_ip: str | None = None
    first: float | None = None
    last: float | None = None
    inbound: dict[str, Inbound] = field(default_factory=dict)

    def saw(self, line: Line) -> None:
        when = line.get("time")
        if isinstance(when, int | float):
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
        self.remote_ip = self.remote_ip or line.get("remote_ip")


def sessions(lines: Iterable[Line]) -> list[SessionStory]:
    """The sessions of the log, in the order they first appear (lines without a session
    flow, such as delay warnings, are left out)."""
    found: dict[str, SessionStory] = {}
    for line in lines:
        srv = _flow(line, "srv")
        if srv is None:
            continue
        story = found.setdefault(srv, SessionStory(srv))
        story.saw(line)
        inbound_flow = _flow(line, "in")
        if inbound_flow is None:
            continue
        inbound = story.inbound.setdefault(inbound_flow, Inbound(inbound_flow))
        out = _flow(line, "out")
        if out is None:
            if line.get("message") == "accepted":
                inbound.accepted = line
            continue
        outbound = inbound.outbound.setdefault(out, Outbound(out))
        outbound.spool_id = outbound.spool_id or line.get("spool_id")
        if line.get("message") != "spooled":
            outbound.events.append(line)
    return list(found.values())


def _regex(pattern: str | None) -> re.Pattern[str] | None:
    return None if pattern is None else re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class LogQuery:
    """Which inbound messages to pick (the criteria given, ANDed; a multi-valued one
    matches when any value does)."""

    sender: str | None = None
    recipient: str | None = None  # an envelope recipient
    header_recipient: str | None = None  # in To or Cc (needs fingerprints)
    subject: str | None = None  # needs fingerprints
    message_id: str | None = None
    flow: str | None = None  # any flow id of the story (srv##, in## or out##)

    def __post_init__(self) -> None:
        for name in ("sender", "recipient", "header_recipient", "subject", "message_id"):
            try:
                _regex(getattr(self, name))
            except re.error as exc:
                raise ValueError(f"{name}: not a regular expression: {exc}") from None

    def __call__(self, story: SessionStory, inbound: Inbound) -> bool:
        checks = [
            (self.sender, [inbound.sender]),
            (self.recipient, inbound.recipients),
            (self.header_recipient, inbound.header("To") + inbound.header("Cc")),
            (self.subject, inbound.header("Subject")),
            (self.message_id, [inbound.message_id]),
        ]
        for pattern, values in checks:
            regex = _regex(pattern)
            if regex is not None and not any(regex.search(v) for v in values):
                return False
        flows = {story.flow, inbound.flow, *inbound.outbound}
        return self.flow is None or self.flow in flows


def select_lines(lines: list[Line], query: LogQuery) -> list[Line]:
    """Every line of the stories ``query`` picks, in the log's order: the session's own
    lines, and those of each picked transaction and of the messages made from it."""
    wanted: set[str] = set()
    for story in sessions(lines):
        for inbound in story.inbound.values():
            if query(story, inbound):
                wanted |= {inbound.flow, *inbound.outbound}
                wanted.add(story.flow)
    # A line belongs to its most specific flow: the session's own lines (connected,
    # refused) to srv##, a transaction's to in##, a spool message's to out##.
    return [line for line in lines if _own(line) in wanted]


def _own(line: Line) -> str | None:
    return _flow(line, "out") or _flow(line, "in") or _flow(line, "srv")

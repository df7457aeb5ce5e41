"""A spooled message: its state in memory, and its versioned metadata on disk (F81, F98).

Metadata is JSON with a version number ``v``; :meth:`SpooledMessage.from_meta` reads every
version so far (old spools keep loading). The body never lives in memory: the entry knows
its :class:`~smtpx.spool.journal.Location` in the journal.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from sys import intern
from types import MappingProxyType
from typing import Any

from smtpx.envelope import Envelope, EnvelopeInfo, HostPort, RetryInterval
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.params import MailParams, RcptParams
from smtpx.spool.journal import Location

__all__ = [
    "META_VERSION",
    "QuarantineReason",
    "SpooledMessage",
    "Status",
    "destination_key",
]

# 1: the first; 2: "rparams", each recipient's RCPT parameters (NOTIFY, ORCPT; RFC 3461)
META_VERSION = 2
MAX_ATTEMPTS_KEPT = 5
_NO_RCPT_PARAMS = RcptParams()
# Most messages have no recipient parameters: they share this one empty mapping (100,000
# queued messages, not 100,000 empty dicts).
NO_RCPT_PARAMS: Mapping[str, str] = MappingProxyType({})


class Status(enum.Enum):
    """Where a message stands (F98). ``queue`` groups them the way an operator thinks."""

    SEND_NOW = "send_now"
    SEND_AT = "send_at"
    SENDING = "sending"
    FROZEN = "frozen"
    REMOVED = "removed"
    QUARANTINED = "quarantined"
    DELIVERED = "delivered"

    @property
    def queue(self) -> str:
        return _QUEUES[self.value]


_QUEUES = {  # (one dict, not one per call: every event asks)
    "send_now": "active",
    "send_at": "active",
    "sending": "active",
    "frozen": "frozen",
    "removed": "removed",
    "quarantined": "quarantine",
    "delivered": "delivered",
}


@dataclass(frozen=True, slots=True)
class QuarantineReason:
    """Why a message is held in quarantine (F13, async_smtp's ``Quarantine_reason``):
    what decided it, the envelope sender, and the message's From fields (joined by
    ``", "``), so that an operator sees at once whose mail it is."""

    description: str
    envelope_sender: str = ""
    from_headers: str = ""

    @classmethod
    def of_envelope(cls, description: str, envelope: Envelope) -> QuarantineReason:
        return cls(
            description, envelope.sender.path(), ", ".join(envelope.find_all_headers("From"))
        )

    def to_json(self) -> dict[str, str]:
        return {
            "description": self.description,
            "envelope_sender": self.envelope_sender,
            "from_headers": self.from_headers,
        }

    def __str__(self) -> str:
        return f"{self.description} (sender {self.envelope_sender}, From: {self.from_headers})"


@dataclass(slots=True, eq=False, init=False)
class SpooledMessage:
    """One message in the spool, for one destination (a batch makes several)."""

    id: str
    parent_id: str
    spool_date: float
    status: Status
    sender: str  # the reverse-path as written: "<a@b.example>" or "<>"
    recipients: list[str]  # still to deliver
    location: Location
    sender_args: str = ""  # MAIL FROM parameters as written (SIZE=... BODY=...)
    next_attempt: float | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)  # (recipient, reply text)
    next_hops: tuple[str, ...] = ()  # "host:port" choices; empty: route by ``route``
    route: str | None = None  # the destination domain (or another route key)
    retry_intervals: list[str] = field(default_factory=list)  # the ones left, as text
    attempts: list[tuple[float, str]] = field(default_factory=list)  # newest last
    attempt_count: int = 0
    quarantine_reason: str | None = None  # the description of :attr:`quarantine`
    quarantine_from: str | None = None  # its From header fields, joined by ", "
    related: tuple[str, ...] = ()  # the other messages of the same batch
    warned: bool = False  # a delay warning went to the sender
    # RCPT parameters (DSN NOTIFY, ORCPT) of the recipients that gave any, as written
    rcpt_params: Mapping[str, str] = field(default_factory=lambda: NO_RCPT_PARAMS)
    flows: tuple[str, ...] = ()  # mail log flow ids (the session's, the envelope's, ours)
    message_id: str | None = None  # the Message-ID header field's value, for finding it

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (docs/performance.md, "Writing code that compiles"). A list left out is a new one.
    def __init__(  # noqa: PLR0917 - the fields, in their order
        self,
        id: str,
        parent_id: str,
        spool_date: float,
        status: Status,
        sender: str,
        recipients: list[str],
        location: Location,
        sender_args: str = "",
        next_attempt: float | None = None,
        failed: list[tuple[str, str]] | None = None,
        next_hops: tuple[str, ...] = (),
        route: str | None = None,
        retry_intervals: list[str] | None = None,
        attempts: list[tuple[float, str]] | None = None,
        attempt_count: int = 0,
        quarantine_reason: str | None = None,
        quarantine_from: str | None = None,
        related: tuple[str, ...] = (),
        warned: bool = False,
        rcpt_params: Mapping[str, str] = NO_RCPT_PARAMS,
        flows: tuple[str, ...] = (),
        message_id: str | None = None,
    ) -> None:
        self.id = id
        self.parent_id = parent_id
        self.spool_date = spool_date
        self.status = status
        self.sender = sender
        self.recipients = recipients
        self.location = location
        self.sender_args = sender_args
        self.next_attempt = next_attempt
        self.failed = [] if failed is None else failed
        self.next_hops = next_hops
        self.route = route
        self.retry_intervals = [] if retry_intervals is None else retry_intervals
        self.attempts = [] if attempts is None else attempts
        self.attempt_count = attempt_count
        self.quarantine_reason = quarantine_reason
        self.quarantine_from = quarantine_from
        self.related = related
        self.warned = warned
        self.rcpt_params = rcpt_params
        self.flows = flows
        self.message_id = message_id

    # -- typed views ------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.location.length

    @property
    def queue(self) -> str:
        return self.status.queue

    @property
    def quarantine(self) -> QuarantineReason | None:
        """Why the message is in quarantine (F13); None when it is not there."""
        if self.status is not Status.QUARANTINED or self.quarantine_reason is None:
            return None
        return QuarantineReason(self.quarantine_reason, self.sender, self.quarantine_from or "")

    def info(self) -> EnvelopeInfo:
        """The envelope still to deliver (remaining recipients, with their DSN parameters)."""
        recipients = tuple(Address.parse(r) for r in self.recipients)
        return EnvelopeInfo(
            sender=Sender.parse(self.sender),
            sender_args=MailParams.parse(self.sender_args),
            recipients=recipients,
            recipient_params=tuple(
                (address, RcptParams.parse(self.rcpt_params[text]))
                for text, address in zip(self.recipients, recipients, strict=True)
                if text in self.rcpt_params
            ),
        )

    def params_of(self, recipient: str) -> RcptParams:
        """The RCPT parameters ``recipient`` was given (NOTIFY, ORCPT)."""
        text = self.rcpt_params.get(recipient)
        return _NO_RCPT_PARAMS if text is None else RcptParams.parse(text)

    def hops(self) -> tuple[HostPort, ...]:
        return tuple(HostPort.parse(h) for h in self.next_hops)

    def intervals(self) -> list[RetryInterval]:
        return [RetryInterval.parse(text) for text in self.retry_intervals]

    @property
    def last_attempt(self) -> tuple[float, str] | None:
        return self.attempts[-1] if self.attempts else None

    def record_attempt(self, when: float, error: str) -> None:
        self.attempts.append((when, error))
        del self.attempts[:-MAX_ATTEMPTS_KEPT]
        self.attempt_count += 1

    # -- metadata ---------------------------------------------------------------------

    def to_meta(self) -> dict[str, Any]:
        """Everything but the body location, for a MESSAGE record."""
        meta = {
            "id": self.id,
            "parent": self.parent_id,
            "date": self.spool_date,
            "sender": self.sender,
            "args": self.sender_args,
            "related": list(self.related),
            "flows": list(self.flows),
            **({} if self.message_id is None else {"msgid": self.message_id}),
            **({"rparams": dict(self.rcpt_params)} if self.rcpt_params else {}),
            **self.state_meta(),
        }
        # Version 2 only where it matters: an older smtpx keeps such a message on disk
        # (unread) rather than deliver it without its recipients' DSN requests.
        meta["v"] = META_VERSION if self.rcpt_params else 1
        return meta

    def state_meta(self) -> dict[str, Any]:
        """The fields that change over a message's life, for an UPDATE record."""
        return {
            "v": 1,  # (version 2 changed MESSAGE records only)
            "id": self.id,
            "status": self.status.value if self.status is not Status.SENDING else "send_now",
            "at": self.next_attempt,
            "rcpts": self.recipients,
            "failed": [list(pair) for pair in self.failed],
            "hops": list(self.next_hops),
            "route": self.route,
            "retry": self.retry_intervals,
            "attempts": [list(pair) for pair in self.attempts],
            "tries": self.attempt_count,
            "quarantine": self.quarantine_reason,
            **({"qfrom": self.quarantine_from} if self.quarantine_from is not None else {}),
            "warned": self.warned,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], location: Location) -> SpooledMessage:
        _check_version(meta)
        entry = SpooledMessage(  # (not ``cls``: a compiled call, with no keyword matching)
            id=meta["id"],
            parent_id=meta.get("parent", meta["id"]),
            spool_date=float(meta["date"]),
            status=Status(meta["status"]),
            sender=intern(meta["sender"]),
            sender_args=intern(meta.get("args", "")),
            recipients=list(meta["rcpts"]),
            location=location,
            related=tuple(meta.get("related", ())),
            flows=tuple(meta.get("flows", ())),
            message_id=meta.get("msgid"),
            rcpt_params=dict(meta["rparams"]) if meta.get("rparams") else NO_RCPT_PARAMS,
        )
        entry.apply_state(meta)
        return entry

    def apply_state(self, meta: dict[str, Any]) -> None:
        """Take the state fields of ``meta`` (an UPDATE record's, or a whole message's);
        the ones it lacks keep their value. Repeated texts (routes, retry intervals) are
        interned: 100,000 queued messages share one copy of each."""
        _check_version(meta)
        if "status" in meta:
            self.status = Status(meta["status"])
        if "at" in meta:
            self.next_attempt = meta["at"]
        if "rcpts" in meta:
            self.recipients = list(meta["rcpts"])
        if "failed" in meta:
            self.failed = [(r, text) for r, text in meta["failed"]]
        if "hops" in meta:
            self.next_hops = tuple(intern(h) for h in meta["hops"])
        if "route" in meta:
            route = meta["route"]
            self.route = None if route is None else intern(route)
        if "retry" in meta:
            self.retry_intervals = [intern(text) for text in meta["retry"]]
        if "attempts" in meta:
            self.attempts = [(float(t), text) for t, text in meta["attempts"]]
        if "tries" in meta:
            self.attempt_count = int(meta["tries"])
        if "quarantine" in meta:
            self.quarantine_reason = meta["quarantine"]
            # An older record has no From fields: a reason without them.
            self.quarantine_from = meta.get("qfrom")
        if "warned" in meta:
            self.warned = bool(meta["warned"])


def _check_version(meta: dict[str, Any]) -> None:
    version = meta.get("v", 1)
    if not isinstance(version, int) or version > META_VERSION:
        raise ValueError(f"metadata version {version} is newer than this smtpx knows")


def destination_key(entry: SpooledMessage) -> str:
    """What the per-destination limit counts: explicit next hops, else the route."""
    if entry.next_hops:
        return "hops:" + ",".join(entry.next_hops)
    if entry.route:
        return "route:" + entry.route.lower()
    domains = {r.rpartition("@")[2].lower() for r in entry.recipients}
    return "route:" + ",".join(sorted(domains))

"""Selecting and showing spooled messages: the filters and the JSON shape that the control
plane, the CLI and offline tools share (kept free of HTTP so offline commands load fast).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from smtpx.envelope import Envelope, RetryInterval
from smtpx.errors import ParseError
from smtpx.selector import Fields, Selector
from smtpx.selector import parse as parse_selector
from smtpx.spool.message import SpooledMessage, Status

__all__ = ["STATUS_WORDS", "MessageFilter", "message_json", "read_selector", "selector_fields"]


def message_json(message: SpooledMessage) -> dict[str, Any]:
    """A spooled message for the API (no content: status never shows what mail says)."""
    return {
        "id": message.id,
        "parent_id": message.parent_id,
        "message_id": message.message_id,
        "status": message.status.value,
        "queue": message.queue,
        "sender": message.sender,
        "recipients": list(message.recipients),
        "failed": [{"recipient": r, "reply": reply} for r, reply in message.failed],
        "next_hops": list(message.next_hops),
        "route": message.route,
        "spool_date": message.spool_date,
        "next_attempt": message.next_attempt,
        "attempts": [{"time": t, "error": e} for t, e in message.attempts],
        "attempt_count": message.attempt_count,
        "size": message.size,
        "related": list(message.related),
        "quarantine_reason": message.quarantine_reason,
        "quarantine": None if (held := message.quarantine) is None else held.to_json(),
    }


class MessageFilter:
    """The ``status`` filters of the API and the CLI (ANDed; within a field, any value).

    ``id`` finds messages by any id they go by: their spool id; their parent id, which
    is the id of the SMTP transaction that brought them (the ``250 ... queued as`` reply
    and the ``Received:`` field name it; a transaction for several domains made one
    spool message per domain, all with that parent); or their Message-ID, with or
    without the angle brackets.
    """

    def __init__(
        self,
        *,
        id: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        next_hop: str | None = None,
        status: str | None = None,
        older: float | None = None,
        younger: float | None = None,
    ) -> None:
        self.id = None if id is None else id.strip()
        self.sender = _regex(sender, "sender")
        self.recipient = _regex(recipient, "recipient")
        self.next_hop = _regex(next_hop, "next_hop")
        if status is not None and status not in STATUS_WORDS:
            raise ValueError(f"status: one of {', '.join(sorted(STATUS_WORDS))}")
        self.status = status
        self.older = older
        self.younger = younger

    @classmethod
    def from_query(cls, query: Any) -> MessageFilter:
        def duration(name: str) -> float | None:
            text = query.get(name)
            if text is None:
                return None
            try:
                return RetryInterval.parse(text).span
            except ParseError:
                raise ValueError(f"{name}: not a duration: {text!r}") from None

        return cls(
            id=query.get("id"),
            sender=query.get("sender"),
            recipient=query.get("recipient"),
            next_hop=query.get("next_hop"),
            status=query.get("status"),
            older=duration("older"),
            younger=duration("younger"),
        )

    def __call__(self, message: SpooledMessage, now: float) -> bool:
        if self.id is not None and not _goes_by(message, self.id):
            return False
        if self.sender and not self.sender.search(message.sender):
            return False
        if self.recipient and not any(
            self.recipient.search(r) for r in (*message.recipients, *(f for f, _ in message.failed))
        ):
            return False
        if self.next_hop and not any(
            self.next_hop.search(h) for h in (*message.next_hops, message.route or "")
        ):
            return False
        if self.status and self.status not in (message.status.value, message.queue):
            return False
        age = now - message.spool_date
        if self.older is not None and age < self.older:
            return False
        return not (self.younger is not None and age > self.younger)

    def select(self, messages: Iterable[SpooledMessage], now: float) -> list[SpooledMessage]:
        return [m for m in messages if self(m, now)]


STATUS_WORDS = {s.value for s in Status} | {s.queue for s in Status}


def _goes_by(message: SpooledMessage, key: str) -> bool:
    """Whether ``key`` is the message's spool id, parent id or Message-ID."""
    if key in (message.id, message.parent_id):
        return True
    found = message.message_id
    return found is not None and _bare(found) == _bare(key) != ""


def _bare(message_id: str) -> str:
    """A Message-ID without the angle brackets around it."""
    text = message_id.strip()
    return text[1:-1] if text.startswith("<") and text.endswith(">") else text


def _regex(pattern: str | None, name: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{name}: not a regular expression: {exc}") from None


# -- envelope selectors (F12) ---------------------------------------------------------------


def read_selector(text: str | None) -> Selector | None:
    """The ``select`` filter: an envelope selector (:mod:`smtpx.selector`), or None."""
    if text is None:
        return None
    try:
        return parse_selector(text)
    except ParseError as exc:
        raise ValueError(f"select: {exc}") from None


def selector_fields(message: SpooledMessage, content: bytes | None = None) -> Fields:
    """What a selector sees of a spooled message: its sender, its recipients (still to
    deliver, or failed), and the header fields of ``content`` (the message as stored;
    None when the selector looks at no header: nothing is read then)."""
    headers = (
        []
        if content is None
        else Envelope.create(sender="<>", recipients=[], message=content).header_list()
    )
    return Fields(
        sender=message.sender,
        recipients=[*message.recipients, *(r for r, _ in message.failed)],
        headers=headers,
    )

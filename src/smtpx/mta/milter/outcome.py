"""What the milters decided at the end of a message, applied: the header and body
changes to the message (:func:`apply_changes`) and the envelope changes to the
transaction (:func:`apply_envelope`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from smtpx.content import SpilledMessage
from smtpx.envelope import Envelope
from smtpx.errors import ParseError
from smtpx.mta.milter import edit
from smtpx.mta.milter.protocol import Modification
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.params import RcptParams
from smtpx.server import Transaction

__all__ = ["Message", "Outcome", "apply_changes", "apply_envelope", "split"]

log = logging.getLogger("smtpx.mta")

HEAD_LIMIT = 1 << 20  # a header section longer than this is sent to milters as body
Message = bytes | SpilledMessage


@dataclass
class Outcome:
    """What the milters decided at the end of the message: the message with their
    header and body changes; the envelope changes (CHGFROM, ADDRCPT, DELRCPT, as the
    milters wrote the addresses); a quarantine reason; or a discard (its milter)."""

    message: Message
    sender: str | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    quarantine: str | None = None
    discarded_by: str | None = None


def split(message: Message) -> tuple[bytes, Message]:
    """The header section (with its blank line) and the body."""
    if isinstance(message, bytes):
        start = message[:HEAD_LIMIT]
    else:
        start = message.read_until(b"\r\n\r\n", HEAD_LIMIT)
    end = start.find(b"\r\n\r\n")
    if start.startswith(b"\r\n"):
        length = 2  # no header fields
    elif end >= 0:
        length = end + 4
    elif len(message) <= HEAD_LIMIT:
        length = len(message)  # no body
    else:
        length = 0  # no header section within the limit: all of it is body
    body = message[length:] if isinstance(message, bytes) else message.skip(length)
    return start[:length], body


def apply_changes(
    outcome: Outcome, name: str, spaced: bool, changes: Sequence[Modification]
) -> None:
    """One milter's changes (``name``; ``spaced``: it negotiated HDR_LEADSPC), onto what
    the milters before it changed."""
    headers = [c for c in changes if c.kind in (b"h", b"i", b"m")]
    replaced = [c.body for c in changes if c.kind == b"b"]
    if headers or replaced:
        current_head, current_body = split(outcome.message)
        fields = edit.apply_headers(edit.parse_head(current_head), headers, spaced)
        new_head = edit.render_head(fields) + b"\r\n"
        if replaced:
            outcome.message = new_head + edit.crlf(b"".join(replaced))
        elif isinstance(current_body, bytes):
            outcome.message = new_head + current_body
        else:
            outcome.message = current_body.prepend(new_head)
    for change in changes:
        if change.kind == b"e":
            outcome.sender = change.args[0]
        elif change.kind in (b"+", b"2"):
            outcome.added.append(change.args[0])
        elif change.kind == b"-":
            outcome.removed.append(change.args[0])
        elif change.kind == b"q":
            outcome.quarantine = f"milter {name}: {change.args[0]}"


def _address(text: str) -> Address:
    return Address.parse(text.strip().removeprefix("<").removesuffix(">"))


def apply_envelope(
    transaction: Transaction,
    envelope: Envelope,
    outcome: Outcome,
    admit: Callable[[Transaction, Address], bool],
) -> Envelope:
    """The envelope with the milters' CHGFROM, DELRCPT and ADDRCPT (each added
    recipient only if ``admit`` takes it); ``transaction.recipients`` follows. An
    address that does not parse is logged and left out."""
    info = envelope.info
    sender = info.sender
    if outcome.sender is not None:
        try:
            sender = Sender.parse(outcome.sender)
        except ParseError as exc:
            log.warning("milter: new sender %r ignored: %s", outcome.sender, exc)
    pairs = list(zip(transaction.recipients, transaction.recipient_params, strict=True))
    for text in outcome.removed:
        gone = text.strip().removeprefix("<").removesuffix(">").lower()
        pairs = [(a, p) for a, p in pairs if str(a).lower() != gone]
    for text in outcome.added:
        try:
            added = _address(text)
        except ParseError as exc:
            log.warning("milter: added recipient %r ignored: %s", text, exc)
            continue
        if added not in (a for a, _ in pairs) and admit(transaction, added):
            pairs.append((added, RcptParams()))
    transaction.recipients[:] = [a for a, _ in pairs]
    transaction.recipient_params[:] = [p for _, p in pairs]
    changed = replace(
        info, sender=sender, recipients=tuple(a for a, _ in pairs), recipient_params=tuple(pairs)
    )
    return Envelope(info=changed, content=envelope.content)

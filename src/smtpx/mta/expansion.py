"""Alias expansion at intake: a transaction's recipients as the spool gets them.

The recipient table answers at RCPT (:meth:`RecipientTable.resolve`); its answer is kept
with the transaction (:func:`remember`) and used once the message has arrived
(:func:`expand`), so one table answers both, even if the table is reloaded between the
two. The spool then holds final recipients only: local mailboxes and remote addresses,
each once, split by domain like any other message (an alias to a remote address is
relayed).

DSN (RFC 3461 6.2.7): a recipient replaced by one target passes its NOTIFY on, and its
address becomes the target's ORCPT (unless it had one). An alias of several targets whose
NOTIFY asks for SUCCESS gets an ``expanded`` notice now, and its targets get its NOTIFY
without SUCCESS (NEVER when nothing is left), as Postfix does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from smtpx.envelope import Envelope, EnvelopeInfo
from smtpx.protocol.addresses import Address
from smtpx.protocol.params import RcptParams
from smtpx.server import Transaction
from smtpx.spool.bounce import RecipientFailure, build_bounce

__all__ = ["Expansion", "expand", "expanded_notice", "remember", "targets_of"]

_KEY = "smtpx.recipients"


def remember(transaction: Transaction, given: Address, targets: tuple[Address, ...]) -> None:
    """Keep the table's answer for ``given`` (a local recipient) until :func:`expand`."""
    found = transaction.data.setdefault(_KEY, {})
    assert isinstance(found, dict)
    found[given] = targets


@dataclass
class Expansion:
    """The recipients to spool, each with its RCPT parameters; and the aliases of several
    targets that asked NOTIFY=SUCCESS (with their own parameters), for the notice."""

    recipients: list[tuple[Address, RcptParams]] = field(default_factory=list)
    expanded: list[tuple[Address, RcptParams, int]] = field(default_factory=list)


def expand(transaction: Transaction, info: EnvelopeInfo) -> Expansion:
    """The final recipients of ``transaction``: its recipients, each replaced by what the
    table said at RCPT (a recipient it was not asked about, a relayed one, stays)."""
    found = transaction.data.get(_KEY)
    table: dict[Address, tuple[Address, ...]] = found if isinstance(found, dict) else {}
    expansion = Expansion()
    chosen = expansion.recipients
    for given in transaction.recipients:
        params = info.params_of(given)
        targets = table.get(given, (given,))
        if targets == (given,):
            chosen.append((given, params))  # as the client gave it
            continue
        params = _passed_on(given, params, len(targets), expansion)
        index = {address: n for n, (address, _) in enumerate(chosen)}
        for target in targets:
            n = index.get(target)
            if n is None:
                chosen.append((target, params))
                continue
            # A mailbox reached twice (alice, and bob = ["alice"]) gets one copy, and
            # every notice either way asked for (its first ORCPT names it).
            first = chosen[n][1]
            chosen[n] = (target, dataclasses.replace(first, notify=_union(first, params)))
    return expansion


def _union(one: RcptParams, other: RcptParams) -> tuple[str, ...] | None:
    if one.notify is None and other.notify is None:
        return None
    default = ("FAILURE", "DELAY")  # RFC 3461 4.1: what no NOTIFY means
    asked = (one.notify or default) + (other.notify or default)
    merged = tuple(n for n in ("SUCCESS", "FAILURE", "DELAY") if n in asked)
    return merged or ("NEVER",)


def _passed_on(given: Address, params: RcptParams, count: int, expansion: Expansion) -> RcptParams:
    orcpt = params.orcpt
    if orcpt is None and not given.is_postmaster:  # <Postmaster> is no address to report
        orcpt = ("utf-8" if given.is_utf8 else "rfc822", str(given))
    notify = params.notify
    if count > 1 and notify is not None and "SUCCESS" in notify:
        expansion.expanded.append((given, params, count))
        notify = tuple(n for n in notify if n != "SUCCESS") or ("NEVER",)
    return dataclasses.replace(params, notify=notify, orcpt=orcpt)


def expanded_notice(
    envelope: Envelope, expansion: Expansion, reporting_mta: str
) -> Envelope | None:
    """The ``expanded`` notice (RFC 3464) for the aliases of ``expansion`` that asked
    for one, or None. It returns the message's header section only."""
    if not expansion.expanded:
        return None
    original = Envelope(info=envelope.info, message=envelope.start())
    reported = [
        RecipientFailure(
            given,
            None,
            action="expanded",
            status="2.0.0",
            notify=params.notify,
            orcpt=params.orcpt,
            diagnostic=f"expanded to {count} addresses",
        )
        for given, params, count in expansion.expanded
    ]
    return build_bounce(original, reported, reporting_mta=reporting_mta)


def targets_of(transaction: Transaction, given: Address) -> tuple[Address, ...]:
    """What the table said at RCPT about ``given`` (itself when it was not asked)."""
    found = transaction.data.get(_KEY)
    if isinstance(found, dict):
        targets = found.get(given)
        if isinstance(targets, tuple):
            return targets
    return (given,)

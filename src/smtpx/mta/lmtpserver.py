"""LMTP server mode (RFC 2033): smtpx as the final delivery step behind another MTA.

The MTA in front (Postfix's ``lmtp`` transport, say) keeps the queue and sends the
notices; smtpx answers each recipient once its fate is known, so that the client retries
or bounces exactly the ones that need it. A recipient that is a local mailbox is
delivered at once by the local agent (maildir, or LMTP onwards to Dovecot) and gets that
delivery's reply: 250, a 4xx the client retries for it alone, or a 5xx it bounces. The
others (aliases, relayed addresses) are spooled and answered ``250 ... queued``: the
spool delivers them and notifies as for SMTP. Nothing is answered 250 before it is
delivered or durably spooled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from smtpx.envelope import Envelope
from smtpx.mta.expansion import Expansion, targets_of
from smtpx.protocol import replies
from smtpx.protocol.addresses import Address
from smtpx.protocol.params import RcptParams
from smtpx.protocol.replies import Reply
from smtpx.server import Reject, Transaction
from smtpx.spool.journal_store import NOWHERE
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.types import LocalAgent, deliver_locally

__all__ = ["deliver_at_once"]

log = logging.getLogger("smtpx.mta")

Spooler = Callable[[list[tuple[Address, RcptParams]]], Awaitable[None]]


async def deliver_at_once(
    transaction: Transaction,
    envelope: Envelope,
    expansion: Expansion,
    *,
    local: Callable[[Address], bool],
    agent: LocalAgent,
    spool: Spooler,
) -> list[Reply]:
    """One reply per recipient of ``transaction``, in order: local mailboxes delivered
    now by ``agent`` (``envelope`` holds the message as it is delivered), the rest
    handed to ``spool`` (which raises :class:`Reject` when it cannot keep them)."""
    given = transaction.recipients
    now = [
        g for g in given if not g.is_postmaster and local(g) and targets_of(transaction, g) == (g,)
    ]
    later = [g for g in given if g not in now]
    answers: dict[Address, Reply] = {}
    if later:
        answers.update(
            dict.fromkeys(later, await _spooled(transaction, envelope, expansion, later, spool))
        )
    if now:
        answers.update(await _delivered(envelope, expansion, now, agent))
    return [answers[g] for g in given]


async def _spooled(
    transaction: Transaction,
    envelope: Envelope,
    expansion: Expansion,
    later: list[Address],
    spool: Spooler,
) -> Reply:
    params = dict(expansion.recipients)
    wanted = {t for g in later for t in targets_of(transaction, g)}
    try:
        await spool([(a, p) for a, p in params.items() if a in wanted])
    except Reject as reject:
        return reject.reply
    return replies.queued(str(envelope.id))


async def _delivered(
    envelope: Envelope, expansion: Expansion, now: list[Address], agent: LocalAgent
) -> dict[Address, Reply]:
    params = dict(expansion.recipients)
    message = SpooledMessage(
        id=str(envelope.id),
        parent_id=str(envelope.id),
        spool_date=time.time(),
        status=Status.SENDING,
        sender=envelope.sender.path(),
        sender_args=str(envelope.info.sender_args),
        recipients=[str(g) for g in now],
        location=NOWHERE,
        rcpt_params={str(g): str(params[g]) for g in now if str(params.get(g, ""))},
    )
    try:
        results = dict(await deliver_locally(agent, message, envelope.content))
    except Exception as exc:
        log.exception("LMTP: local delivery of %s failed", envelope.id)
        failed = replies.local_error(f"Local delivery failed, try later: {type(exc).__name__}")
        return dict.fromkeys(now, failed)
    missing = replies.local_error("Local delivery gave no answer for this recipient")
    return {g: results.get(str(g), missing) for g in now}

"""The relay policy plugin: who may send where, and where accepted mail goes (the spool).

Rules (never an open relay):

* mail for a local domain is taken from anyone;
* mail for elsewhere is taken from trusted networks, and from authenticated users
  (``relay.relay_for_authenticated``); anyone else gets ``550 5.7.1``;
* on a submission listener, STARTTLS and AUTH come before anything else (``530 5.7.0``;
  the listener requires them, see :meth:`MtaConfig.listeners`).

Accepted mail gets a ``Received:`` trace header (RFC 5321 4.4) and is split by
destination domain, one spool message per domain, all written durably before the 250.
Mail from trusted networks and authenticated users is DKIM-signed first, when its From
domain has a ``[[dkim.sign]]`` key (:mod:`smtpx.mta.dkim`: where and why). Mail from
anyone else on an ``[inbound]`` listener is judged instead (:mod:`smtpx.mta.inbound`):
SPF at MAIL FROM, DKIM, ARC and DMARC before the 250, the results in an
Authentication-Results field; the policy may refuse it, or have it quarantined.
The ``[[milters]]`` (:mod:`smtpx.mta.milter`) see each session after the relay's own
checks and its guards; at the end of the data they get the message with its trace and
Authentication-Results fields (after DKIM verification, so that the result describes
what the sender sent and a milter can read it), and their changes apply before DKIM
signing (so that the signature covers the message as it leaves).

One id names the transaction everywhere: the ``Received:`` field's ``id``, the
``250 2.0.0 Ok: queued as ID`` reply and the mail log's ``local_id`` are the envelope id,
and every spool message made from it has that id as its parent id (its own spool id is
in the spool's log lines). ``smtpx spool show ID`` finds them all.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from smtpx.content import SpilledMessage
from smtpx.envelope import Envelope, EnvelopeInfo
from smtpx.mta.config import ListenerKind, MtaConfig, a_label, listener_kind
from smtpx.mta.dkim import DkimSigner
from smtpx.mta.expansion import expand, expanded_notice, remember
from smtpx.mta.guards import Guard
from smtpx.mta.inbound import InboundJudge
from smtpx.mta.inbound.policy import Quarantine
from smtpx.mta.lmtpserver import deliver_at_once
from smtpx.mta.milter import ClientNames, Milters, MilterStats, apply_envelope
from smtpx.mta.recipients import Deliver, RecipientTable
from smtpx.mta.users import Users
from smtpx.protocol import replies
from smtpx.protocol.addresses import Address
from smtpx.protocol.data import prepend_head
from smtpx.protocol.params import RcptParams
from smtpx.protocol.replies import Reply
from smtpx.server import Offer, Plugin, Reject, Session, Transaction, password_mechanisms
from smtpx.spool.records import StoreWriteError
from smtpx.spool.spool import Delivery, Spool
from smtpx.spool.types import LocalAgent

if TYPE_CHECKING:
    from aiohttp.web import AbstractRouteDef

__all__ = ["RelayPlugin", "received_header"]

log = logging.getLogger("smtpx.mta")


class RelayPlugin(Plugin):
    def __init__(
        self,
        config: MtaConfig,
        spool: Spool,
        users: Users | None = None,
        *,
        dkim: DkimSigner | None = None,
        inbound: InboundJudge | None = None,
        recipients: RecipientTable | None = None,
        local: LocalAgent | None = None,
        guards: Sequence[Guard] = (),
        milters: Milters | None = None,
        milter_stats: MilterStats | None = None,
        client_names: ClientNames | None = None,
    ) -> None:
        self.config = config
        self.recipients = recipients or RecipientTable.from_config(config)
        self.local = local  # delivers local mail at once in LMTP server mode
        self.guards = tuple(guards)  # DNS lists, rate limits, greylisting: after our checks
        if milters is None and config.milters:
            milters = Milters(
                config.milters, config.hostname, stats=milter_stats, names=client_names
            )
        self.milters = milters  # after the guards
        self.spool = spool
        self.users = users
        self.dkim = dkim
        self.inbound = inbound
        self.hostname = config.hostname
        local_domains = config.relay.local_domains
        self._postmaster_domain = local_domains[0] if local_domains else "localhost"
        self._mechanisms = password_mechanisms(self._check) if users is not None else []

    async def _check(self, session: Session, username: str, password: str) -> bool:
        assert self.users is not None
        return await self.users.check_async(username, password)

    def greeting(self, session: Session) -> str:
        return "ESMTP smtpx"

    def greeting_delay(self, session: Session) -> float:
        """``[server] greeting_delay`` on the ``listen`` listeners, for untrusted clients."""
        delay = self.config.server.greeting_delay
        return delay if delay > 0 and _from_outside(session) else 0.0

    def enforce_sync(self, session: Session) -> bool:
        """``[server] reject_unauth_pipelining``, as ``greeting_delay`` applies."""
        return self.config.server.reject_unauth_pipelining and _from_outside(session)

    def control_routes(self) -> Sequence[AbstractRouteDef]:
        """The guards' control endpoints (the configured guards have none)."""
        return [route for guard in self.guards for route in guard.control_routes()]

    async def connect(self, session: Session) -> None:
        if not self.spool.store.ready:
            # The shared queue's database is out of reach (it is tried again and again).
            raise Reject(Reply.of(421, "Spool database unavailable, try later", "4.3.0"))
        ip = session.remote_ip
        session.data["trusted"] = ip is not None and self.config.relay.is_trusted(ip)
        for guard in self.guards:
            await guard.connect(session)
        if self.milters is not None:
            await self.milters.connect(session)

    async def helo(self, session: Session, name: str) -> None:
        if self.milters is not None:
            await self.milters.helo(session, name)

    async def unknown_command(self, session: Session, line: str) -> None:
        if self.milters is not None:
            await self.milters.unknown(session, line)

    async def disconnect(self, session: Session) -> None:
        if self.milters is not None:
            await self.milters.disconnect(session)

    def extensions(self, session: Session) -> Offer:
        return Offer(starttls=True, auth=self._mechanisms)

    async def mail_from(self, session: Session, transaction: Transaction) -> None:
        if self.spool.store.refusing():
            # The spool's disk failed a moment ago: say so before the client sends DATA.
            raise Reject(replies.insufficient_storage("Insufficient system storage, try later"))
        if self.inbound is not None and self.inbound.applies(session):
            await self.inbound.at_mail(session, transaction)  # SPF; Reject when refused
        for guard in self.guards:
            await guard.mail_from(session, transaction)
        if self.milters is not None:
            await self.milters.mail_from(session, transaction)

    async def rcpt_to(
        self, session: Session, transaction: Transaction, recipient: Address, params: RcptParams
    ) -> None:
        if recipient.is_postmaster or self._is_local(recipient):
            self._check_local(transaction, recipient)  # 550 5.1.1 for an unknown user
        elif not self._may_relay(session):
            raise Reject(replies.relay_denied())
        for guard in self.guards:
            await guard.rcpt_to(session, transaction, recipient)
        if self.milters is not None:
            await self.milters.rcpt_to(session, transaction, recipient)

    def _may_relay(self, session: Session) -> bool:
        relay = self.config.relay
        return bool(session.data.get("trusted")) or (
            session.authenticated and relay.relay_for_authenticated
        )

    async def accept_data(self, session: Session, transaction: Transaction) -> None:
        for guard in self.guards:
            await guard.accept_data(session, transaction)
        if self.milters is not None:
            await self.milters.accept_data(session, transaction)

    def _check_local(self, transaction: Transaction, recipient: Address) -> None:
        """A local recipient the table knows (``550 5.1.1`` otherwise), with its targets
        kept for :meth:`process`."""
        address = self._postmaster() if recipient.is_postmaster else recipient
        found = self.recipients.resolve(address)
        if not isinstance(found, Deliver):
            raise Reject(found.reply)
        remember(transaction, recipient, found.targets)

    def _postmaster(self) -> Address:
        # RFC 5321 4.5.1: <Postmaster> is this host's postmaster. Give it a domain so the
        # spool, the maildir and any bounce see an ordinary mailbox.
        return Address("postmaster", self._postmaster_domain)

    def _is_local(self, recipient: Address) -> bool:
        if recipient.domain.startswith("["):
            return False
        try:
            return self.config.relay.is_local(a_label(recipient.domain))
        except ValueError:
            return False

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        composed = await self._compose(session, transaction, envelope)
        if composed is None:  # a milter discarded it (logged)
            return f"Ok: queued as {envelope.id}"
        message, quarantine, envelope = composed
        quarantine = quarantine or await self._intake(session, transaction, envelope)
        expansion = expand(transaction, envelope.info)  # aliases, <Postmaster>
        notice = None if quarantine else expanded_notice(envelope, expansion, self.hostname)
        await self._spool(transaction, envelope, message, expansion.recipients, quarantine, notice)
        return f"Ok: queued as {envelope.id}"  # the id of the Received: field

    async def process_lmtp(
        self, session: Session, transaction: Transaction, envelope: Envelope
    ) -> list[Reply]:
        """LMTP server mode (:mod:`smtpx.mta.lmtpserver`): local mailboxes are delivered
        now, each with its own reply; the rest is spooled."""
        composed = await self._compose(session, transaction, envelope)
        if composed is None:  # a milter discarded it (logged)
            return [replies.queued(str(envelope.id))] * len(transaction.recipients)
        message, quarantine, envelope = composed
        quarantine = quarantine or await self._intake(session, transaction, envelope)
        expansion = expand(transaction, envelope.info)
        if quarantine is not None or self.local is None:
            await self._spool(transaction, envelope, message, expansion.recipients, quarantine)
            return [replies.queued(str(envelope.id))] * len(transaction.recipients)
        return await deliver_at_once(
            transaction,
            Envelope(info=envelope.info, content=message),
            expansion,
            local=self._is_local,
            agent=self.local,
            spool=lambda recipients: self._spool(transaction, envelope, message, recipients),
        )

    async def _intake(
        self, session: Session, transaction: Transaction, envelope: Envelope
    ) -> str | None:
        """The reason of the first guard that has the message quarantined, if any."""
        for guard in self.guards:
            outcome = await guard.intake(session, transaction, envelope)
            if isinstance(outcome, Quarantine):
                return outcome.reason
        return None

    async def _compose(
        self, session: Session, transaction: Transaction, envelope: Envelope
    ) -> tuple[bytes | SpilledMessage, str | None, Envelope] | None:
        """The message with its new head (trace, DKIM signature or the inbound verdict)
        and the milters' changes, the quarantine reason (inbound policy or milter), if
        any, and the envelope (milters may change it); None when a milter discarded it."""
        trace = received_header(
            session,
            self.hostname,
            str(envelope.id),
            envelope.recipients,
            utf8=transaction.params.smtputf8,
        )
        content = envelope.content
        quarantine = None
        judged = self.inbound is not None and self.inbound.applies(session)
        if self.inbound is not None and judged:
            verdict = await self.inbound.at_data(session, transaction, content, trace)
            head, content, quarantine = verdict.head, verdict.content, verdict.quarantine
        else:
            head = trace
        # A spilled message keeps its file: the new head goes in front, nothing is copied.
        message = _prepend(head, content)
        if self.milters is not None:
            outcome = await self.milters.end_of_message(session, transaction, message)
            if outcome.discarded_by is not None:
                log.info("milter %s discarded %s", outcome.discarded_by, envelope.id)
                return None
            message, quarantine = outcome.message, quarantine or outcome.quarantine
            envelope = apply_envelope(transaction, envelope, outcome, self._admit)
            if not envelope.recipients:
                log.info("milters removed every recipient of %s: dropped", envelope.id)
                return None
        if not judged:
            message = _prepend(await self._signature(session, message), message)
        return message, quarantine, envelope

    def _admit(self, transaction: Transaction, recipient: Address) -> bool:
        """A recipient a milter adds: a local one must be known (logged when not)."""
        if not (recipient.is_postmaster or self._is_local(recipient)):
            return True
        try:
            self._check_local(transaction, recipient)
        except Reject as exc:
            log.warning("milter added %s, refused: %s", recipient, exc.reply)
            return False
        return True

    async def _spool(  # noqa: PLR0917 - private; the parts of one message
        self,
        transaction: Transaction,
        envelope: Envelope,
        message: bytes | SpilledMessage,
        params: list[tuple[Address, RcptParams]],
        quarantine: str | None = None,
        notice: Envelope | None = None,
    ) -> None:
        """Spool ``message`` for the recipients of ``params``, one spool message per
        domain, durably (``451`` when it cannot be kept)."""
        groups: dict[str, list[Address]] = defaultdict(list)
        for recipient, _ in params:
            groups[_route_key(recipient)].append(recipient)
        deliveries = [
            Delivery(
                Envelope(
                    info=EnvelopeInfo(
                        sender=envelope.sender,
                        sender_args=envelope.info.sender_args,
                        recipients=tuple(recipients),
                        id=envelope.id,
                        # NOTIFY and ORCPT (RFC 3461) go with their recipient.
                        recipient_params=tuple((a, p) for a, p in params if a in recipients),
                    ),
                    content=message,
                ),
                route=route,
                flows=transaction.flows,
            )
            for route, recipients in groups.items()
        ]
        try:
            if quarantine is not None:  # the inbound policy's decision: held, not sent
                await self.spool.quarantine(deliveries, quarantine)
            else:
                if notice is not None:  # RFC 3461 6.2.7.3: alias expanded, as asked
                    deliveries.append(Delivery(notice, route=_route_key(notice.recipients[0])))
                await self.spool.add(deliveries, set_related=len(deliveries) > 1)
        except StoreWriteError:
            # Logged by the store; nothing of this message was kept.
            raise Reject(replies.local_error("Could not store the message, try later")) from None

    async def _signature(self, session: Session, content: bytes | SpilledMessage) -> bytes:
        """DKIM-Signature fields for mail from our own senders (empty for the rest)."""
        if self.dkim is None or not (session.data.get("trusted") or session.authenticated):
            return b""
        try:
            return await self.dkim.signature(content)
        except OSError as exc:  # the spilled file could not be read: keep nothing
            log.error("dkim: cannot read the message to sign it: %s", exc)
            raise Reject(replies.local_error("Could not sign the message, try later")) from None


def _prepend(head: bytes, content: bytes | SpilledMessage) -> bytes | SpilledMessage:
    # (Content the server took as it came stays a WireForm: the spool stores it as is.)
    return prepend_head(head, content) if isinstance(content, bytes) else content.prepend(head)


def _route_key(recipient: Address) -> str:
    """The spool's route for a recipient: its domain as an A-label (one spool message
    per domain)."""
    domain = recipient.domain
    if domain.startswith("["):
        return domain
    try:
        return a_label(domain)
    except ValueError:
        return domain.lower()


def _from_outside(session: Session) -> bool:
    """A client of a ``listen`` listener outside ``relay.trusted_networks`` (known once
    :meth:`RelayPlugin.connect` has run): the one the edge's protocol checks apply to."""
    trusted = session.data.get("trusted")
    return not trusted and listener_kind(session.listener) is ListenerKind.SMTP


def received_header(
    session: Session,
    hostname: str,
    queue_id: str,
    recipients: Sequence[Address],
    *,
    utf8: bool = False,
) -> bytes:
    """``Received:`` (RFC 5321 4.4, RFC 5322 3.6.7); the protocol name per RFC 3848
    (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 (UTF8SMTP... for SMTPUTF8 mail)."""
    protocol = "UTF8SMTP" if utf8 else "ESMTP" if session.esmtp else "SMTP"
    if session.lmtp:
        protocol = "UTF8LMTP" if utf8 else "LMTP"  # RFC 3848, RFC 6531
    if session.esmtp:
        protocol += ("S" if session.tls else "") + ("A" if session.authenticated else "")
    ip = session.remote_ip or "unknown"
    literal = f"IPv6:{ip}" if ":" in ip else ip
    helo = session.helo or "unknown"
    lines = [
        f"Received: from {helo} ([{literal}])",
        f"\tby {hostname} (smtpx) with {protocol} id {queue_id}",
    ]
    if len(recipients) == 1:
        lines[-1] += f"\r\n\tfor <{recipients[0]}>"
    lines[-1] += ";"
    lines.append("\t" + _date(int(time.time())))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


@functools.lru_cache(maxsize=4)
def _date(second: int) -> str:
    """RFC 5322 date-time of ``second`` (UTC): made once a second, not once a message."""
    return email.utils.formatdate(second, usegmt=True)

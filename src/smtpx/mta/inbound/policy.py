"""What to do with judged mail: the verdict, the decisions, and the policy hooks.

:class:`InboundPolicy` is the do-what-the-configuration-says policy; subclass it and
override :meth:`~InboundPolicy.after_spf` or :meth:`~InboundPolicy.after_checks` to
decide otherwise, and give it to the MTA (``Mta(config, inbound_policy=MyPolicy(...))``)::

    class NoSoftfail(InboundPolicy):
        async def after_spf(self, session, transaction, spf):
            if spf.mailfrom.result == "softfail" and spf.mailfrom.domain == "example.com":
                return Refuse(Reply.of(550, "We know example.com better", "5.7.23"))
            return await super().after_spf(session, transaction, spf)

A hook answers with a closed outcome: :class:`Accept`, :class:`Quarantine` (accepted,
and held in the spool's quarantine until an operator releases it) or :class:`Refuse`
(the SMTP reply to give).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from smtpx.mta.config import DmarcAction, InboundSettings
from smtpx.mta.inbound.dkimverify import ArcResult, DkimResult
from smtpx.mta.inbound.dmarc import DmarcResult
from smtpx.mta.inbound.results import MethodResult
from smtpx.mta.inbound.spf import SpfResults
from smtpx.protocol.replies import Reply
from smtpx.server import Session, Transaction

__all__ = [
    "ACCEPT",
    "Accept",
    "Disposition",
    "InboundPolicy",
    "Quarantine",
    "Refuse",
    "Verdict",
]

log = logging.getLogger("smtpx.mta")


@dataclass(frozen=True, slots=True)
class Accept:
    """Take the message (250), with the results in Authentication-Results."""


ACCEPT = Accept()


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Take the message (250) and hold it in the spool's quarantine, with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse with ``reply`` (at MAIL FROM, or at the end of the data)."""

    reply: Reply


Disposition = Accept | Quarantine | Refuse


@dataclass(frozen=True, slots=True)
class Verdict:
    """Everything judged about a message, in the order of its Authentication-Results."""

    spf: SpfResults | None
    dkim: tuple[DkimResult, ...]
    arc: ArcResult
    dmarc: tuple[DmarcResult, ...]

    def method_results(self) -> list[MethodResult]:
        results = self.spf.method_results() if self.spf is not None else []
        results += [r.method_result() for r in self.dkim] or [MethodResult("dkim", "none")]
        results.append(self.arc.method_result())
        results += [r.method_result() for r in self.dmarc]
        return results

    def summary(self) -> str:
        """One line for the mail log."""
        parts = []
        if self.spf is not None:
            parts.append(f"spf={self.spf.mailfrom.result}")
        parts.append("dkim=" + (",".join(r.result for r in self.dkim) or "none"))
        parts.append(f"arc={self.arc.result}")
        parts += [
            f"dmarc={r.result}({r.author_domain or '-'}:{r.policy or '-'})" for r in self.dmarc
        ]
        return " ".join(parts)


class InboundPolicy:
    """The decisions ``[inbound]`` asks for; override the hooks to decide otherwise."""

    def __init__(self, settings: InboundSettings) -> None:
        self.settings = settings

    async def after_spf(
        self, session: Session, transaction: Transaction, spf: SpfResults
    ) -> Accept | Refuse:
        """At MAIL FROM, once SPF is known: with ``spf_reject_fail``, refuse an SPF
        ``fail`` of MAIL FROM or HELO (``550 5.7.23``, RFC 7372); else accept."""
        if not (self.settings.spf_reject_fail and spf.failed):
            return ACCEPT
        failed = spf.mailfrom if spf.mailfrom.result == "fail" else spf.helo
        text = (
            f"SPF fail: {failed.domain} does not designate {session.remote_ip} as permitted sender"
        )
        return Refuse(Reply.of(550, text, "5.7.23"))

    async def after_checks(
        self, session: Session, transaction: Transaction, verdict: Verdict
    ) -> Disposition:
        """At the end of the data, before the reply: DMARC failures are handled as
        ``dmarc_reject`` / ``dmarc_quarantine`` say for their policy, unless a sealer of
        ``arc_trusted_sealers`` vouches for the message (a passing ARC chain whose newest
        seal is theirs and whose results said dmarc=pass)."""
        decided: Disposition = ACCEPT
        for result in verdict.dmarc:
            action = self._action(result)
            if action is DmarcAction.REJECT:
                text = f"Email rejected per DMARC policy for {result.author_domain}"
                return self._unless_vouched(verdict, Refuse(Reply.of(550, text, "5.7.1")))
            if action is DmarcAction.QUARANTINE:
                policy_domain = result.policy_domain or result.author_domain
                decided = Quarantine(f"DMARC policy {result.policy} for {policy_domain}")
        return self._unless_vouched(verdict, decided)

    def _action(self, result: DmarcResult) -> DmarcAction:
        if result.result != "fail":
            return DmarcAction.ACCEPT
        if result.policy == "reject":
            return self.settings.dmarc_reject
        if result.policy == "quarantine":
            return self.settings.dmarc_quarantine
        return DmarcAction.ACCEPT

    def _unless_vouched(self, verdict: Verdict, disposition: Disposition) -> Disposition:
        arc = verdict.arc
        trusted = self.settings.arc_trusted_sealers
        if isinstance(disposition, Accept) or arc.result != "pass" or not arc.sealers:
            return disposition
        if arc.sealers[0] in trusted and arc.vouched:
            log.info("inbound: DMARC failure let through: ARC sealed by %s", arc.sealers[0])
            return ACCEPT
        return disposition

"""Judging inbound mail: the steps, where they run, and what comes out.

* **At MAIL FROM** (client address, HELO and MAIL FROM known): SPF for both identities;
  the policy's :meth:`~smtpx.mta.inbound.policy.InboundPolicy.after_spf` may refuse.
* **At the end of the data, before the reply**: the header block is read; the keys of
  every DKIM and ARC signature are fetched at once; the signatures are verified in a
  worker thread; DMARC is evaluated (its DNS on the event loop); the policy's
  :meth:`~smtpx.mta.inbound.policy.InboundPolicy.after_checks` accepts, quarantines or
  refuses (``550 5.7.1`` for a DMARC ``p=reject`` failure, by default). Accepted mail
  loses the Authentication-Results fields that claim our authserv-id (RFC 8601 section
  5), gains ours (one field: spf, dkim, arc, dmarc) above its Received field, and an ARC
  set above that when ``[inbound.arc_seal]`` is set.

A message the server spilled to a file is read in the worker thread, and such messages
are verified (and sealed) one at a time, as DKIM signing does (:mod:`smtpx.mta.dkim`): the
event loop never holds a big message, and at most one is in memory for judging at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from smtpx.content import SpilledMessage, header_block
from smtpx.envelope import MAX_HEADER_BLOCK
from smtpx.mta.config import InboundSettings
from smtpx.mta.inbound.arc import ArcSealer
from smtpx.mta.inbound.dkimverify import (
    ArcResult,
    DkimResult,
    Fields,
    KeyRing,
    fetch_keys,
    header_fields,
    key_names,
    verify_arc,
    verify_dkim,
)
from smtpx.mta.inbound.dmarc import DmarcEvaluator, DmarcResult, author_domains
from smtpx.mta.inbound.lookup import AuthDns
from smtpx.mta.inbound.policy import InboundPolicy, Quarantine, Refuse, Verdict
from smtpx.mta.inbound.results import authentication_results, without_our_results
from smtpx.mta.inbound.spf import SpfChecker, SpfResults
from smtpx.protocol.replies import Reply
from smtpx.server import Reject, Session, Transaction

__all__ = ["InboundJudge", "Judged"]

log = logging.getLogger("smtpx.mta")
T = TypeVar("T")
Content = bytes | SpilledMessage
_SPF_KEY = "inbound.spf"


@dataclass(frozen=True, slots=True)
class Judged:
    """An accepted message: ``head`` to put in front of ``content`` (which lost the
    fields claiming our authserv-id); ``quarantine`` is the reason to hold it, if any."""

    head: bytes
    content: Content
    verdict: Verdict
    quarantine: str | None = None


class InboundJudge:
    """Judges mail on the listeners ``settings`` names from clients that are neither
    trusted nor authenticated (see the module docstring)."""

    def __init__(
        self,
        settings: InboundSettings,
        dns_: AuthDns,
        *,
        authserv_id: str,
        policy: InboundPolicy | None = None,
        sealer: ArcSealer | None = None,
    ) -> None:
        self.settings = settings
        self.dns = dns_
        self.authserv_id = authserv_id.lower()
        self.policy = policy if policy is not None else InboundPolicy(settings)
        self.sealer = sealer
        self.spf = SpfChecker(dns_)
        self._one_big = asyncio.Lock()  # spilled messages are read one at a time
        self._threads = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="inbound")

    def applies(self, session: Session) -> bool:
        return (
            self.settings.judges(session.listener)
            and not session.data.get("trusted")
            and not session.authenticated
        )

    def close(self) -> None:
        self.spf.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- MAIL FROM -------------------------------------------------------------------------

    async def at_mail(self, session: Session, transaction: Transaction) -> SpfResults:
        """SPF for the transaction; raises Reject when the policy refuses."""
        sender = transaction.sender.address
        results = await self.spf.check(
            session.remote_ip, session.helo, None if sender is None else str(sender)
        )
        transaction.data[_SPF_KEY] = results
        decided = await self.policy.after_spf(session, transaction, results)
        if isinstance(decided, Refuse):
            log.info("inbound: MAIL FROM %s refused: %s", transaction.sender, decided.reply)
            raise Reject(decided.reply)
        return results

    # -- end of data -----------------------------------------------------------------------

    async def at_data(
        self, session: Session, transaction: Transaction, content: Content, trace: bytes
    ) -> Judged:
        """Judge the message ``content``, whose ``Received:`` field is ``trace``; raises
        Reject when the policy refuses (or a spilled file cannot be read)."""
        spf = transaction.data.get(_SPF_KEY)
        if not isinstance(spf, SpfResults):
            spf = await self.at_mail(session, transaction)
        try:
            head = await self._head(content)
            fields = header_fields(head)
            keys = await fetch_keys(self.dns, key_names(fields))
            dkim, arc = await self._verify(content, keys)
        except OSError as exc:  # the spilled file could not be read: keep nothing
            log.error("inbound: cannot read the message to judge it: %s", exc)
            raise Reject(_local_error()) from None
        verdict = Verdict(spf, tuple(dkim), arc, tuple(await self._dmarc(fields, spf, dkim)))
        decided = await self.policy.after_checks(session, transaction, verdict)
        log.info("inbound %s: %s", transaction.id, verdict.summary())
        if isinstance(decided, Refuse):
            log.info("inbound %s: refused: %s", transaction.id, decided.reply)
            raise Reject(decided.reply)
        kept, removed = without_our_results(head, self.authserv_id)
        if removed:
            log.info(
                "inbound %s: removed %d forged Authentication-Results", transaction.id, removed
            )
            content = _replace_head(content, head, kept)
        results = authentication_results(self.authserv_id, verdict.method_results())
        new_head = results + trace
        if self.sealer is not None:
            new_head = await self._seal(new_head, content) + new_head
        quarantine = decided.reason if isinstance(decided, Quarantine) else None
        return Judged(new_head, content, verdict, quarantine)

    async def _head(self, content: Content) -> bytes:
        if isinstance(content, bytes):
            return header_block(content)
        start = await self._in_thread(lambda: content.read_until(b"\r\n\r\n", MAX_HEADER_BLOCK))
        return header_block(start)

    async def _verify(self, content: Content, keys: KeyRing) -> tuple[list[DkimResult], ArcResult]:
        def verify(message: bytes) -> tuple[list[DkimResult], ArcResult]:
            return verify_dkim(message, keys), verify_arc(message, keys)

        if isinstance(content, bytes):
            return await self._in_thread(lambda: verify(content))
        async with self._one_big:
            return await self._in_thread(lambda: verify(content.read()))

    async def _dmarc(
        self, fields: Fields | None, spf: SpfResults, dkim: list[DkimResult]
    ) -> list[DmarcResult]:
        authors = author_domains(fields)
        if isinstance(authors, str):
            return [DmarcResult("permerror", reason=authors)]
        evaluator = DmarcEvaluator(self.dns)
        spf_domain = spf.mailfrom.domain if spf.mailfrom.result == "pass" else None
        passing = [r.domain for r in dkim if r.result == "pass"]
        return [await evaluator.evaluate(a, spf_domain, passing) for a in authors]

    async def _seal(self, new_head: bytes, content: Content) -> bytes:
        sealer = self.sealer
        assert sealer is not None
        if isinstance(content, bytes):
            message = new_head + content
            return await self._in_thread(lambda: sealer.seal(message, self.authserv_id))
        spilled = content.prepend(new_head)
        async with self._one_big:
            return await self._in_thread(lambda: sealer.seal(spilled.read(), self.authserv_id))

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, work)


def _replace_head(content: Content, old: bytes, new: bytes) -> Content:
    if isinstance(content, bytes):
        return new + content[len(old) :]
    return content.skip(len(old)).prepend(new)


def _local_error() -> Reply:
    return Reply.of(451, "Could not judge the message, try later", "4.3.0")

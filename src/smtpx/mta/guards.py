"""Checks at the edge of the relay: typed hooks with a do-nothing default.

A :class:`Guard` sees a session at connect, MAIL, each RCPT the relay policy accepted,
DATA, and the whole message (where it may have it quarantined); it refuses by raising
:class:`~smtpx.server.Reject`. The relay
(:class:`~smtpx.mta.relay.RelayPlugin`) calls its guards in order after its own checks:
DNS lists (:mod:`smtpx.mta.dnsbl`), rate limits (:mod:`smtpx.mta.ratelimit`) and
greylisting (:mod:`smtpx.mta.greylist`) are guards, built from the configuration by
:func:`smtpx.mta.edge.build_guards`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from smtpx.envelope import Envelope
from smtpx.mta.inbound.policy import ACCEPT, Accept, Quarantine
from smtpx.protocol.addresses import Address
from smtpx.server import Session, Transaction

if TYPE_CHECKING:
    from aiohttp.web import AbstractRouteDef

__all__ = ["Guard", "is_own"]


def is_own(session: Session) -> bool:
    """A client of ours: in ``relay.trusted_networks``, or authenticated."""
    return bool(session.data.get("trusted")) or session.authenticated


class Guard:
    """The do-nothing guard. ``stats`` counts what it did, for the metrics."""

    name = "guard"

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    async def connect(self, session: Session) -> None:
        """A client connected (``session.data["trusted"]`` is set)."""

    async def mail_from(self, session: Session, transaction: Transaction) -> None:
        """MAIL FROM."""

    async def rcpt_to(self, session: Session, transaction: Transaction, recipient: Address) -> None:
        """RCPT TO, once the relay policy has accepted the recipient."""

    async def accept_data(self, session: Session, transaction: Transaction) -> None:
        """DATA (or the first BDAT)."""

    async def intake(
        self, session: Session, transaction: Transaction, envelope: Envelope
    ) -> Accept | Quarantine:
        """The whole message is in, before its ``250``: :data:`ACCEPT` spools it,
        ``Quarantine(reason)`` holds it in the spool's quarantine instead (F13; the
        client still gets its ``250``: nothing tells a sender its mail was held).
        ``envelope`` is the message as received, without the relay's new header fields.
        The first guard that quarantines decides; refuse by raising ``Reject``."""
        return ACCEPT

    def metrics(self) -> Iterable[object]:
        """Prometheus metric families (read at scrape time)."""
        return ()

    def control_routes(self) -> Sequence[AbstractRouteDef]:
        """The guard's own control endpoints, served under ``/v1/plugin/`` (F35; see
        :meth:`smtpx.server.Plugin.control_routes`)."""
        return ()

    async def close(self) -> None:
        """The MTA is stopping."""

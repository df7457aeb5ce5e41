"""Milters: the Sendmail/Postfix milter protocol (version 6), from the MTA's side.

:mod:`~smtpx.mta.milter.protocol` is the wire format (no I/O),
:mod:`~smtpx.mta.milter.client` one asyncio connection, :mod:`~smtpx.mta.milter.edit`
the header changes, :mod:`~smtpx.mta.milter.outcome` the verdict's changes applied, and
:mod:`~smtpx.mta.milter.chain` the ``[[milters]]`` of the configuration driven by the
relay (:class:`~smtpx.mta.relay.RelayPlugin`).
"""

from smtpx.mta.milter.chain import ClientNames, Milters, MilterStats
from smtpx.mta.milter.outcome import Outcome, apply_envelope

__all__ = ["ClientNames", "MilterStats", "Milters", "Outcome", "apply_envelope"]

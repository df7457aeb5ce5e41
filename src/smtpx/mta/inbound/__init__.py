"""Judging inbound mail: SPF (RFC 7208), DKIM (RFC 6376) and ARC (RFC 8617) verification,
DMARC (RFC 9989), one Authentication-Results field (RFC 8601), ARC sealing, and the
policy hooks that decide (see :mod:`smtpx.mta.inbound.judge` for the steps)."""

from smtpx.mta.inbound.judge import InboundJudge, Judged
from smtpx.mta.inbound.lookup import AuthDns, make_resolver
from smtpx.mta.inbound.policy import (
    ACCEPT,
    Accept,
    Disposition,
    InboundPolicy,
    Quarantine,
    Refuse,
    Verdict,
)

__all__ = [
    "ACCEPT",
    "Accept",
    "AuthDns",
    "Disposition",
    "InboundJudge",
    "InboundPolicy",
    "Judged",
    "Quarantine",
    "Refuse",
    "Verdict",
    "make_resolver",
]

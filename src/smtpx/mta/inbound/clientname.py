"""A client's verified host name (forward-confirmed reverse DNS), as Postfix finds it.

The PTR records of the client's address give names; a name counts only if one of its A
(or AAAA, for an IPv6 client) records is that address again. ``status`` says how it
went, with the values of Postfix's ``{client_resolve}`` milter macro: ``OK`` (``name``
is verified), ``FAIL`` (no PTR record), ``FORGED`` (no PTR name leads back to the
address; ``ptr`` is the first of them), ``TEMP`` (the DNS did not answer). The name is
``unknown`` unless ``OK``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.reversename

from smtpx.mta.inbound.lookup import AuthDns, Outcome

__all__ = ["UNKNOWN", "ClientName", "client_name"]

UNKNOWN = "unknown"
MAX_NAMES = 10  # PTR names checked, as Postfix's


@dataclass(frozen=True, slots=True)
class ClientName:
    name: str  # verified, or "unknown"
    ptr: str  # the PTR name found (verified or not), or "unknown"
    status: str  # OK, FAIL, FORGED, TEMP


async def client_name(lookup: AuthDns, ip: str) -> ClientName:
    """The verified name of the client at ``ip`` (see the module docstring)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ClientName(UNKNOWN, UNKNOWN, "FAIL")
    reverse = dns.reversename.from_address(str(address)).to_text(omit_final_dot=True)
    answer = await lookup.query(reverse, "PTR")
    if answer.outcome is Outcome.TEMPERROR:
        return ClientName(UNKNOWN, UNKNOWN, "TEMP")
    names = [
        text.rstrip(".").lower()
        for record in answer.records[:MAX_NAMES]
        if (text := record.decode("ascii", "replace"))
    ]
    if not names:
        return ClientName(UNKNOWN, UNKNOWN, "FAIL")
    rdtype = "A" if address.version == 4 else "AAAA"
    temporary = False
    for name in names:
        forward = await lookup.query(name, rdtype)
        temporary = temporary or forward.outcome is Outcome.TEMPERROR
        if any(_same(record, address) for record in forward.records):
            return ClientName(name, name, "OK")
    return ClientName(UNKNOWN, names[0], "TEMP" if temporary else "FORGED")


def _same(record: bytes, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(record.decode("ascii")) == address
    except (ValueError, UnicodeDecodeError):
        return False

"""ARC sealing (RFC 8617) of judged mail, with dkimpy.

When ``[inbound.arc_seal]`` is set, every judged message that is accepted gets an ARC
set in front: ARC-Authentication-Results (a copy of our Authentication-Results, which
dkimpy finds by our authserv-id), ARC-Message-Signature over the message as we pass it
on, and ARC-Seal over the chain, with ``cv=`` our verdict on the chain that arrived
(``none``, ``pass`` or ``fail``: the ``arc=`` result in our header). A next hop that
trusts us can then rely on what we saw even when a change downstream (a list footer, a
rewritten Subject) breaks the original DKIM signatures. ARC signs with RSA-SHA256 only
(``dkim.ARC_HASH_ALGORITHMS``), so the key must be RSA; signatures are made through
OpenSSL by the same path as DKIM signing (:mod:`smtpx.mta.dkim`).
"""

from __future__ import annotations

import logging
from collections import Counter

import dkim

from smtpx.errors import ConfigError
from smtpx.mta.config import DKIM_HEADERS, ArcSealSettings
from smtpx.mta.dkim import DkimKey, load_key

__all__ = ["ArcSealer"]

log = logging.getLogger("smtpx.mta")


class ArcSealer:
    """Seals messages as ``d=domain``, ``s=selector`` with an RSA ``key``."""

    def __init__(
        self, domain: str, selector: str, key: DkimKey, headers: tuple[str, ...] = DKIM_HEADERS
    ) -> None:
        if key.algorithm != "rsa":
            raise ValueError("ARC signs with RSA keys only (RFC 8617 uses rsa-sha256)")
        self.domain = domain
        self.selector = selector
        self.key = key
        self.headers = headers

    @classmethod
    def from_settings(cls, settings: ArcSealSettings) -> ArcSealer:
        """Load the key of ``[inbound.arc_seal]``; ConfigError names what is wrong."""
        try:
            return cls(
                settings.domain, settings.selector, load_key(settings.key_file), settings.headers
            )
        except ValueError as exc:
            raise ConfigError(str(exc), key="inbound.arc_seal.key_file") from None

    def seal(self, message: bytes, authserv_id: str) -> bytes:
        """The three ARC fields to put in front of ``message``, which must carry our
        Authentication-Results (blocking: run it in a thread); empty when dkimpy finds
        nothing to seal (no such field) or the message cannot be signed."""
        try:
            sealer = dkim.ARC(message, linesep=b"\r\n")
            present = Counter(name.decode("ascii", "replace").lower() for name, _ in sealer.headers)
            fields = sealer.sign(
                self.selector.encode(),
                self.domain.encode(),
                self.key.private,
                authserv_id.encode(),
                include_headers=[h.encode() for h in self.headers if present[h]],
            )
        except dkim.DKIMException as exc:
            log.warning("arc: message not sealed: %s", exc)
            return b""
        return b"".join(fields)

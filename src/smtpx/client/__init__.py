"""The SMTP client: sessions, TLS policy, AUTH, envelope status, a connection cache.

::

    from smtpx.client import connect

    async with connect("mx.example.org") as client:
        status = await client.send(envelope)
"""

from smtpx.client.bsmtp import bsmtp_bytes, write_bsmtp
from smtpx.client.cache import CacheConfig, CacheKey, ConnectionCache
from smtpx.client.config import (
    CertificateCheck,
    ClientConfig,
    PeerTls,
    TlsCheck,
    TlsConfig,
    TlsMode,
)
from smtpx.client.session import Client, WireFile, connect
from smtpx.client.status import (
    Accepted,
    DeliveryError,
    EnvelopeStatus,
    RejectedAllRecipients,
    RejectedBody,
    RejectedSender,
    RejectedSenderAndRecipients,
    Unsendable,
)

__all__ = [
    "Accepted",
    "CacheConfig",
    "CacheKey",
    "CertificateCheck",
    "Client",
    "ClientConfig",
    "ConnectionCache",
    "DeliveryError",
    "EnvelopeStatus",
    "PeerTls",
    "RejectedAllRecipients",
    "RejectedBody",
    "RejectedSender",
    "RejectedSenderAndRecipients",
    "TlsCheck",
    "TlsConfig",
    "TlsMode",
    "Unsendable",
    "WireFile",
    "bsmtp_bytes",
    "connect",
    "write_bsmtp",
]

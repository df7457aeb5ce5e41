"""Client configuration: greeting name, TLS policy per destination, timeouts."""

from __future__ import annotations

import contextlib
import enum
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

from smtpx.errors import ClientError, ParseError
from smtpx.io.tls import client_context
from smtpx.protocol.domains import domain_to_ascii

__all__ = [
    "CertificateCheck",
    "Chunking",
    "ClientConfig",
    "PeerTls",
    "TlsCheck",
    "TlsConfig",
    "TlsMode",
]

# When to send with BDAT (RFC 3030) rather than DATA, if the server offers CHUNKING.
Chunking: TypeAlias = bool | Literal["auto"]


class TlsMode(enum.Enum):
    """When the client uses TLS with a destination."""

    NONE = "none"  # never (a server that offers STARTTLS is not asked)
    IF_AVAILABLE = "if_available"  # STARTTLS when the EHLO reply offers it
    ALWAYS_TRY = "always_try"  # send STARTTLS even unadvertised; go on in plaintext if refused
    REQUIRED = "required"  # STARTTLS must succeed, or the session ends (QUIT) with an error
    IMPLICIT = "implicit"  # TLS from the first byte (port 465, RFC 8314)


class CertificateCheck(enum.Enum):
    VERIFY = "verify"  # chain to a trusted CA and a host name match (SAN, wildcards)
    IGNORE = "ignore"  # encrypt, but trust any certificate (opportunistic TLS, RFC 7435)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerTls:
    """What a :class:`TlsCheck` is shown of a session once its STARTTLS step is over.

    ``host`` is the name the client connected to (an MX host, say), ``chain`` the
    certificates the server presented (DER, its own first, unverified; empty when the
    session is not encrypted), ``version`` the TLS version (None without TLS).
    """

    host: str
    remote: tuple[str, int] | None
    local: tuple[str, int] | None
    chain: tuple[bytes, ...]
    version: str | None

    @property
    def encrypted(self) -> bool:
        return self.version is not None


class TlsCheck(Protocol):
    """A certificate check of one's own, after the handshake (DANE, MTA-STS): set it as
    :attr:`TlsConfig.check`, usually with ``certificate=IGNORE`` so that the handshake
    itself accepts any certificate and this check decides."""

    def verify(self, peer: PeerTls) -> None:
        """Called once the STARTTLS step is over, encrypted or not (``peer.chain`` is
        then empty). Raise :class:`~smtpx.errors.TlsPolicyError` to end the session."""
        ...

    def failed(self, peer: PeerTls, error: ClientError) -> None:
        """TLS could not be set up (STARTTLS missing or refused where required, a failed
        handshake): the session ends with ``error`` anyway. For reports (TLS-RPT)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    """TLS towards one destination.

    ``server_name`` overrides the name the certificate must match (and SNI); by default it
    is the host the client connects to. ``check`` runs after the STARTTLS step (see
    :class:`TlsCheck`).
    """

    mode: TlsMode = TlsMode.IF_AVAILABLE
    certificate: CertificateCheck = CertificateCheck.IGNORE
    ca_file: str | None = None
    ca_path: str | None = None
    min_version: str | None = None
    ciphers: str | None = None
    server_name: str | None = None
    cert_file: str | None = None  # a client certificate, if the server asks for one
    key_file: str | None = None
    check: TlsCheck | None = None

    def context(self) -> ssl.SSLContext:
        return client_context(
            verify=self.certificate is CertificateCheck.VERIFY,
            ca_file=self.ca_file,
            ca_path=self.ca_path,
            min_version=self.min_version,
            ciphers=self.ciphers,
            cert_file=self.cert_file,
            key_file=self.key_file,
        )


def _name(text: str) -> str:
    """A host name or suffix as compared: A-labels (IDNA 2008), lower case, no final dot,
    so that a U-label policy matches an A-label host and the other way round."""
    text = text.strip().rstrip(".")
    dot = "." if text.startswith(".") else ""
    with contextlib.suppress(ParseError):  # if not a domain, compared as written
        text = dot + domain_to_ascii(text.removeprefix(dot))
    return text.lower()


def _matches(host: str, suffix: str) -> bool:
    """Domain-suffix match: "example.com" matches itself and its subdomains (not
    "badexample.com"); ".example.com" only subdomains; "" everything."""
    suffix = _name(suffix)
    if not suffix:
        return True
    if suffix.startswith("."):
        return host.endswith(suffix)
    return host == suffix or host.endswith("." + suffix)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """How the client behaves. Every timeout is in seconds (RFC 5321 4.5.3.2 defaults).
    A reply timeout is for the whole reply (a server that trickles it does not extend it);
    ``data_block_timeout`` is for each 256 KiB of content sent from a file. A timeout
    closes the connection without QUIT.

    ``tls`` maps destination domain suffixes to TLS settings: the first entry whose suffix
    matches the destination host name wins ("" matches every host); a host no entry
    matches gets ``TlsConfig(mode=NONE)``. The default is opportunistic TLS without
    verification, what MTAs do between themselves (RFC 7435) and the reference's default;
    a submission client should say ``REQUIRED`` and ``VERIFY``.
    """

    helo_name: str = field(default_factory=socket.getfqdn)
    tls: Sequence[tuple[str, TlsConfig]] = (("", TlsConfig()),)
    connect_timeout: float = 10.0  # each address's attempt
    # Happy Eyeballs (RFC 8305): the next address is tried when the one before has not
    # connected after this many seconds (its section 5 recommends 250 ms), families
    # alternating; None tries one address after another.
    happy_eyeballs_delay: float | None = 0.25
    greeting_timeout: float = 300.0  # 4.5.3.2.1: 5 minutes
    command_timeout: float = 300.0  # 4.5.3.2.2-3: MAIL and RCPT, 5 minutes
    data_start_timeout: float = 120.0  # 4.5.3.2.4: DATA, 2 minutes
    data_block_timeout: float = 180.0  # 4.5.3.2.5: each block of content, 3 minutes
    final_reply_timeout: float = 600.0  # 4.5.3.2.6: after the terminator, 10 minutes
    pipelining: bool = True  # use PIPELINING when the server offers it (RFC 2920)
    # BDAT when the server offers CHUNKING (RFC 3030): True for every message; "auto" for
    # every message but a wire-ready file (the spool's) over 256 KB, which goes with DATA
    # and sendfile; False never (DATA only: a BODY=BINARYMIME message then goes only if
    # its content fits 8bit). docs/operators-guide.md has the measurements.
    chunking: Chunking = "auto"

    def tls_for(self, host: str) -> TlsConfig:
        """The TLS settings for ``host`` (see the class docstring)."""
        name = _name(host)
        for suffix, settings in self.tls:
            if _matches(name, suffix):
                return settings
        return TlsConfig(mode=TlsMode.NONE)

    @classmethod
    def for_testing(cls, **overrides: object) -> ClientConfig:
        """Short timeouts and a fixed greeting name."""
        values: dict[str, object] = {
            "helo_name": "client.test",
            "connect_timeout": 5.0,
            "greeting_timeout": 10.0,
            "command_timeout": 10.0,
            "data_start_timeout": 10.0,
            "data_block_timeout": 10.0,
            "final_reply_timeout": 10.0,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

"""The relay MTA's configuration: immutable records with defaults, loaded from TOML.

:class:`MtaConfig` holds one record per TOML section (``[server]``, ``[tls]``,
``[relay]``, ``[auth]``, ``[spool]``, ``[local]``, ``[routing]``, ``[dkim]``,
``[inbound]``, ``[dns]``, ``[dnsbl]``, ``[rate_limits]``, ``[greylist]``, ``[redis]``,
``[control]``, ``[log]``) plus the top-level ``hostname`` and ``[[milters]]``.
:data:`DEFAULT_TOML` is a documented file holding every default; it loads to the same
config as :meth:`MtaConfig.default`.

Loading validates everything up front. Every problem raises
:class:`~smtpx.errors.ConfigError` whose message starts with the key path, for example
``spool.retry_intervals[2]: not a duration: '5q' ...`` or
``routing.routes."example.com"[0]: not a host:port: ...``; an unknown key is an error
too, with a "did you mean" suggestion. Value forms:

* sizes: ``"35M"``, ``"512K"``, ``"1G"`` (binary multiples) or a number of bytes;
* durations: ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` or a number of seconds; retry
  intervals may add a jitter, ``"5m~30s"`` (:class:`~smtpx.envelope.RetryInterval`);
* addresses: ``"host:port"``, IPv6 as ``"[::1]:2525"``;
* paths: relative ones are relative to the config file's directory (or to the current
  directory for :meth:`MtaConfig.default` and text without a file), and are stored
  absolute.

Domains (local domains, route keys) are stored in their A-label form, lower case
(IDNA 2008, see :func:`a_label`), so that lookups match whatever form a recipient used.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import functools
import ipaddress
import math
import os
import re
import socket
import ssl
import tomllib
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from smtpx.auth.credentials import Credentials
from smtpx.client.cache import CacheConfig, CacheKey
from smtpx.client.config import CertificateCheck, Chunking, ClientConfig, TlsConfig, TlsMode
from smtpx.envelope import HostPort, RetryInterval
from smtpx.errors import ConfigError, ParseError
from smtpx.protocol.addresses import Address
from smtpx.protocol.data import BareNewlines
from smtpx.protocol.domains import domain_to_ascii
from smtpx.protocol.lenient import AddressGrammar
from smtpx.server.config import Listener, ServerConfig, ServerTls
from smtpx.server.limits import ClientLimits, client_ip
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.types import PostgresSettings
from smtpx.units import parse_duration, parse_size

__all__ = [
    "DEFAULT_TOML",
    "ArcSealSettings",
    "AuthSettings",
    "ControlSettings",
    "DaneSettings",
    "DkimSettings",
    "DkimSign",
    "DmarcAction",
    "DnsSettings",
    "DnsblSettings",
    "DnsblZone",
    "FsyncPolicy",
    "GreylistSettings",
    "HostCredentials",
    "InboundSettings",
    "ListenAddress",
    "ListenerKind",
    "LocalSettings",
    "LogSettings",
    "MilterSettings",
    "MtaConfig",
    "MtaStsSettings",
    "RateLimitSettings",
    "RateRule",
    "RedisSettings",
    "RelaySettings",
    "RoutingSettings",
    "ServerSettings",
    "SpoolSettings",
    "TlsRptSettings",
    "TlsSettings",
    "a_label",
    "listener_kind",
    "on_listener",
]


# ---------------------------------------------------------------------------------------
# Domains


# RFC 1035 2.3.4: labels of 63 octets at most, names of 255 octets on the wire, which is
# 253 characters of text without the final dot. Underscores are tolerated (they occur in
# real host names even though the LDH rule of RFC 5321 4.1.2 leaves them out).
_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_MAX_DOMAIN = 253
# IDNA (RFC 3490 3.1) treats these as label separators too.
_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


@functools.lru_cache(maxsize=4096)
def a_label(domain: str) -> str:
    """``domain`` in lower-case A-label form, without a final dot (cached: the relay asks
    for every recipient).

    U-labels are converted by :func:`~smtpx.protocol.domains.domain_to_ascii` (IDNA 2008
    with UTS 46 mapping), the one conversion addresses, the client and maildirs use too:
    the form the DNS holds, so routing and lookups agree with what goes on the wire.
    Raises :class:`ValueError` when ``domain`` is not a domain name.
    """
    text = domain.translate(_IDNA_DOTS).removesuffix(".")
    if not text:
        raise ValueError("empty domain name")
    name = domain_to_ascii(text).lower()
    for label in name.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"bad label {label!r}")
    if len(name) > _MAX_DOMAIN:
        raise ValueError(f"longer than {_MAX_DOMAIN} characters")
    return name


@functools.lru_cache(maxsize=4096)  # (asked per recipient: domains repeat)
def _host_key(host: str) -> str:
    """A host name or IP address as a lookup key: lower case, A-labels, no brackets."""
    text = host.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return a_label(text)
    except ValueError:
        return text.lower().rstrip(".")


# ---------------------------------------------------------------------------------------
# Records


class ListenerKind(enum.Enum):
    """What a listener of :meth:`MtaConfig.server_config` is for (see :func:`listener_kind`)."""

    SMTP = "smtp"  # relay and inbound mail; STARTTLS offered when a certificate is set
    SMTPS = "smtps"  # implicit TLS (RFC 8314)
    SUBMISSION = "submission"  # STARTTLS, then AUTH, before anything else (RFC 6409)
    LMTP = "lmtp"  # LMTP server mode (RFC 2033), behind another MTA


def listener_kind(name: str) -> ListenerKind | None:
    """The kind of listener a session arrived on, from
    :attr:`smtpx.server.Session.listener` (the listener names that
    :meth:`MtaConfig.server_config` sets), or None for a listener it did not make."""
    kind, _, _ = name.partition(" ")
    try:
        return ListenerKind(kind)
    except ValueError:
        return None


_LISTEN_PORT_RE = re.compile(r"[0-9]{1,5}")
_LISTEN_HOST_RE = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenAddress:
    """An address to listen on. Port 0 lets the operating system choose (tests)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if ":" in self.host:
            ipaddress.IPv6Address(self.host)  # raises ValueError
        elif not _LISTEN_HOST_RE.fullmatch(self.host):
            raise ValueError(f"not a host name or address: {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an int, not {type(self.port).__name__}")
        if not 0 <= self.port <= 65_535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")

    @classmethod
    def parse(cls, text: str, *, default_port: int) -> ListenAddress:
        """Read ``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port``."""
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"bad bracketed IPv6 address in {text!r}")
            port_text: str | None = rest[1:] if rest else None
        elif ":" in text:
            host, _, port_text = text.rpartition(":")
            if ":" in host:
                raise ValueError("write an IPv6 address in brackets")
        else:
            host, port_text = text, None
        if port_text is not None and not _LISTEN_PORT_RE.fullmatch(port_text):
            raise ValueError(f"bad port {port_text!r}")
        port = default_port if port_text is None else int(port_text)
        return cls(host=host, port=port)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _default_listen() -> tuple[ListenAddress, ...]:
    return (ListenAddress(host="127.0.0.1", port=2525),)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """``[server]``: listeners, limits and timeouts of the receiving side.

    * ``listen``: plain SMTP listeners (STARTTLS offered when ``[tls]`` has a certificate).
    * ``smtps``: implicit-TLS listeners (RFC 8314).
    * ``submission``: listeners where STARTTLS and then AUTH are required: until then
      every other command gets ``530 5.7.0`` (RFC 6409 section 4.3 lets a submission
      server require authentication; RFC 3207 section 4 and RFC 4954 section 6).
    * ``lmtp``: LMTP listeners (RFC 2033; never port 25), for an MTA in front that
      delivers to smtpx: local mailboxes are delivered at once, one reply each.
    * ``max_message_size``: advertised with SIZE and enforced (RFC 1870).
    * ``max_recipients``: per transaction; RFC 5321 4.5.3.1.8 asks for at least 100.
    * ``command_timeout`` / ``data_timeout``: seconds (RFC 5321 4.5.3.2.7: at least 5 and
      3 minutes). A command must be complete within ``command_timeout`` of the moment the
      server waits for it; ``data_timeout`` is the longest wait for more message content.
    * ``min_data_rate``: octets a second message content must average once
      ``data_rate_grace`` has passed (0: no minimum).
    * ``max_sessions_per_client`` / ``max_connection_rate_per_client``: concurrent
      sessions, and new connections a minute, per IPv4 address or IPv6 /64 (0: no limit);
      with ``exempt_trusted_networks``, ``relay.trusted_networks`` are not limited.
    * ``spill_threshold``: octets of a message a session keeps in memory; the rest goes to
      an unnamed file in the spool's directory until the message is spooled.
      ``max_buffered``: octets all sessions together keep in memory; ``max_spilled``:
      octets they keep in those files, past which a transaction gets ``452 4.3.1``.
    * ``dsn``: offer DSN (RFC 3461): NOTIFY, ORCPT, RET and ENVID are kept with the
      message, honoured in our notices, and passed on to a next hop that offers DSN.
    * ``proxied``: addresses of ``listen`` or ``submission`` behind a load balancer:
      each connection there must start with a PROXY protocol header (v1 or v2) and come
      from ``proxy_from``; everything then sees the client it names. ``proxy_timeout``:
      the longest wait for that header.
    * ``workers``: processes that accept on the same listeners under one supervisor (its
      listening sockets, which a worker takes a connection from when it is free), each
      with its own shard of the journal (or the shared PostgreSQL queue); ``"auto"`` is
      the number of cores, resolved when the file is read. 1: one process, no supervisor.
      ``worker``, ``listen_fds`` and ``balance_fd`` are not keys of the file: the
      supervisor sets them in each worker's config (its index, the listening sockets
      and the shared counts of sessions it inherits; none in a single process).
      ``worker_scheduling``: the workers' CPU scheduling policy on Linux, ``"batch"``
      (``SCHED_BATCH``: a worker woken by a packet does not preempt the one running, so
      workers that share the cores switch less: 10% less CPU a message with a new
      connection each, two workers on two cores; docs/performance.md) or ``"normal"``.
    * ``default_domain``: a MAIL or RCPT address without a domain gets it (None: such an
      address is refused, ``501 5.1.3``). ``lenient_addresses``: also take async_smtp's
      forms (display names, quoted addresses, any local part; F10).
    * ``client_names``: look up each client's verified host name (forward-confirmed
      reverse DNS, :mod:`smtpx.mta.inbound.clientname`) for the milters' CONNECT and
      their ``{client_name}``, ``{client_ptr}`` and ``{client_resolve}`` macros (off:
      "unknown"); a PTR and an address query per connection, with ``[[milters]]`` only.
    * ``greeting_delay``: on ``listen`` listeners, a pause before the greeting for clients
      outside ``relay.trusted_networks`` (0: none). A client that talks during it (spam
      software that does not wait, RFC 5321 section 3.1; Postfix's postscreen pregreet
      test) gets ``554`` and the connection is closed.
    * ``reject_unauth_pipelining``: on the same listeners for the same clients, a client
      that sends more before the reply to EHLO, HELO or DATA (RFC 2920 section 3.1; the
      message without waiting for the 354, say) gets ``554 5.5.0`` and is disconnected.
    """

    listen: tuple[ListenAddress, ...] = field(default_factory=_default_listen)
    smtps: tuple[ListenAddress, ...] = ()
    submission: tuple[ListenAddress, ...] = ()
    lmtp: tuple[ListenAddress, ...] = ()
    max_message_size: int = 35 * 1024 * 1024
    max_recipients: int = 1000
    max_sessions_per_listener: int = 1000
    max_sessions_per_client: int = 20
    max_connection_rate_per_client: int = 60
    exempt_trusted_networks: bool = True
    command_timeout: float = 300.0
    data_timeout: float = 300.0
    min_data_rate: int = 500
    data_rate_grace: float = 60.0
    bare_newlines: BareNewlines = BareNewlines.REJECT
    spill_threshold: int = 256 * 1024
    max_buffered: int = 64 * 1024 * 1024
    max_spilled: int = 4 * 1024 * 1024 * 1024
    dsn: bool = True
    proxied: tuple[ListenAddress, ...] = ()
    proxy_from: tuple[IPNetwork, ...] = ()
    proxy_timeout: float = 5.0
    workers: int = 1
    worker: int | None = field(default=None, metadata={"toml": False})
    # A worker's: the supervisor's listening sockets, one per listener (LISTEN_KINDS order),
    # and the memory where the workers keep their counts of sessions (smtpx.io.balance).
    listen_fds: tuple[int, ...] = field(default=(), metadata={"toml": False})
    balance_fd: int | None = field(default=None, metadata={"toml": False})
    worker_scheduling: str = "batch"
    default_domain: str | None = None
    lenient_addresses: bool = False
    client_names: bool = False
    greeting_delay: float = 0.0
    reject_unauth_pipelining: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """``[tls]``: the server's certificate. With ``cert_file`` set, STARTTLS is offered
    and ``smtps``/``submission`` listeners may be used. ``key_file`` may be left out when
    the key is in ``cert_file``."""

    cert_file: Path | None = None
    key_file: Path | None = None
    min_version: str | None = None  # "TLSv1.2" (the default) or "TLSv1.3"

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    def check_pair(self) -> None:
        """Load the certificate and key into a scratch context: ValueError (naming the
        files) when they are unreadable, not PEM, or do not match."""
        if self.cert_file is None:
            raise ValueError("TLS is not configured ([tls] cert_file)")
        cert_file = str(self.cert_file)
        key_file = None if self.key_file is None else str(self.key_file)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"cannot load the certificate {cert_file} with the key {key_file or cert_file}:"
                f" {exc}"
            ) from None


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _default_networks() -> tuple[IPNetwork, ...]:
    return (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, slots=True, kw_only=True)
class RelaySettings:
    """``[relay]``: whose mail is accepted for which recipients.

    Mail for ``local_domains`` is always accepted (and delivered to the maildir). Mail for
    any other domain is relayed only for clients in ``trusted_networks`` or, with
    ``relay_for_authenticated``, clients that authenticated; everyone else gets
    ``550 5.7.1`` (never an open relay).
    """

    local_domains: tuple[str, ...] = ("localhost",)
    trusted_networks: tuple[IPNetwork, ...] = field(default_factory=_default_networks)
    relay_for_authenticated: bool = True

    def is_local(self, domain: str) -> bool:
        """Whether ``domain`` (any case, U- or A-labels) is one of the local domains."""
        return _host_key(domain) in self.local_domains

    def is_trusted(self, address: str) -> bool:
        """Whether the client IP ``address`` is inside a trusted network."""
        return _inside(address, self.trusted_networks)


# What _inside found per address, with the tuple of networks it was asked against (by
# identity): asked per connection, and clients come back. Not an lru_cache over both: it
# hashed every network of the tuple, in Python, each time.
_INSIDE: dict[str, tuple[tuple[IPNetwork, ...], bool]] = {}
_INSIDE_MAX = 4096  # addresses remembered (then forgotten all at once)


def _inside(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    known = _INSIDE.get(address)
    if known is not None and known[0] is networks:
        return known[1]
    ip = client_ip(address)
    found = ip is not None and any(ip in network for network in networks)
    if len(_INSIDE) >= _INSIDE_MAX:
        _INSIDE.clear()
    _INSIDE[address] = (networks, found)
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """``[auth]``: submission users (see :mod:`smtpx.mta.users`).

    ``allow_plaintext`` offers AUTH on connections without TLS (RFC 4954 section 4: a
    server SHOULD NOT accept plaintext passwords without TLS).
    """

    users_file: Path | None = None
    allow_plaintext: bool = False


def _default_retry_intervals() -> tuple[RetryInterval, ...]:
    return tuple(
        RetryInterval.parse(text)
        for text in ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "16h")
    )


class SpoolBackend(enum.Enum):
    JOURNAL = "journal"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolSettings:
    """``[spool]``: the durable queue and its delivery.

    * ``retry_intervals``: the waits between attempts; when they run out the message is
      frozen and, with ``bounce``, a bounce goes to the sender.
    * ``max_deliveries``: concurrent delivery attempts overall; ``max_per_destination``:
      per recipient domain (each domain's messages are spooled apart), even when several
      domains share a route or the smarthost.
    * ``delay_warning_after``: seconds after which the sender is told that the message is
      still queued (None: never).
    * ``unreachable_backoff``: seconds a destination none of whose next hops could be
      reached is suspended (its mail deferred without a connection; None: the first
      retry interval; 0: never; see :mod:`smtpx.spool.unreachable`).
    * ``failed_retention``: seconds a message whose recipients all failed or expired stays
      frozen after its last attempt before it is removed and purged (None, ``"never"``
      in TOML: kept until an operator acts; see :mod:`smtpx.spool.retention`).
    * ``backend``: ``journal`` (the local journal in ``dir``, the default) or
      ``postgresql`` (``[spool.postgresql]``: a queue shared by several nodes).
    * ``monitor_every``: seconds between checks of the journal by the spool monitor
      (:mod:`smtpx.mta.spoolwatch`; 0: no monitor); a problem found by
      ``monitor_alert_after`` checks in a row is logged and counted in
      ``smtpx_spool_problems``; ``monitor_max_frozen_age``: mail frozen longer counts.
    """

    dir: Path = Path("var/spool")
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    retry_intervals: tuple[RetryInterval, ...] = field(default_factory=_default_retry_intervals)
    max_deliveries: int = 100
    max_per_destination: int = 10
    bounce: bool = True
    delay_warning_after: float | None = None
    unreachable_backoff: float | None = None
    failed_retention: float | None = 7 * 86_400.0
    backend: SpoolBackend = SpoolBackend.JOURNAL
    postgresql: PostgresSettings | None = None
    monitor_every: float = 0.0
    monitor_alert_after: int = 2
    monitor_max_frozen_age: float | None = None


def _empty_mapping() -> Mapping[str, Any]:
    return types.MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSettings:
    """``[local]``: who receives mail for the local domains, and where it is delivered.

    * ``maildir``: the maildirs' root (``<domain>/<local part>/``), unless ``lmtp`` is set.
    * ``lmtp``: deliver to this LMTP server instead (RFC 2033; Dovecot, Cyrus): a unix
      socket's path, or ``host:port``.
    * ``mailboxes``, ``aliases``, ``catch_all``, ``recipients_file``,
      ``subaddress_delimiter``: the recipient table (:mod:`smtpx.mta.recipients`). With
      no entry at all, every local part is accepted.
    """

    maildir: Path = Path("var/mail")
    lmtp: HostPort | Path | None = None
    mailboxes: tuple[str, ...] = ()
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_mapping)
    catch_all: tuple[str, ...] = ()
    recipients_file: Path | None = None
    subaddress_delimiter: str = "+"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class HostCredentials:
    """A username and password for one outbound host (``[routing.credentials]``).

    The repr hides the password.
    """

    username: str
    password: str

    def credentials(self) -> Credentials:
        return Credentials.login(self.username, self.password)

    def __repr__(self) -> str:
        return f"HostCredentials(username={self.username!r}, password=<hidden>)"


def _default_client_tls() -> tuple[tuple[str, TlsConfig], ...]:
    return (("", TlsConfig(mode=TlsMode.IF_AVAILABLE, certificate=CertificateCheck.IGNORE)),)


@dataclass(frozen=True, slots=True, kw_only=True)
class MtaStsSettings:
    """``[routing.mta_sts]``: MTA-STS (RFC 8461) for mail delivered by MX.
    ``ca_file`` replaces the system's trust store for the policy fetches and for the MX
    certificates checked under a policy (and TLS-RPT uploads)."""

    enabled: bool = False
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DaneSettings:
    """``[routing.dane]``: DANE (RFC 7672) for mail delivered by MX; needs
    ``routing.resolver``, a DNSSEC-validating resolver this host trusts (its AD bit)."""

    enabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsRptSettings:
    """``[routing.tlsrpt]``: daily TLS reports (RFC 8460) to the domains that publish
    ``_smtp._tls`` records, about deliveries under their MTA-STS or DANE policies.
    ``organization`` (the report's organization-name) defaults to the host name,
    ``contact`` (contact-info, and the sender of mailed reports) to
    ``postmaster@<hostname>``."""

    enabled: bool = False
    organization: str | None = None
    contact: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingSettings:
    """``[routing]``: where outbound mail goes (see :class:`smtpx.mta.routing.Router`).

    * ``smarthost``: every non-local domain without an explicit route goes there.
    * ``routes``: domain (A-label) -> next hops, tried in order; a route also covers the
      domain's subdomains, the longest match winning.
    * ``tls``: (host suffix, settings) pairs, the first match winning, as in
      :attr:`smtpx.client.ClientConfig.tls`. The default is opportunistic TLS without
      certificate checks (RFC 7435).
    * ``credentials``: host (lower case, A-labels) -> the login to use with it.
    * ``chunking``: BDAT to servers that offer CHUNKING: true, false or "auto", as
      :attr:`smtpx.client.ClientConfig.chunking`.
    * ``resolver``: the DNS resolver (an IP address and port) for MX, MTA-STS, TLSA and
      MX host address lookups; None: the system's (``/etc/resolv.conf``).
    * ``mta_sts``, ``dane``, ``tlsrpt``: outbound TLS policies (:mod:`smtpx.mta.tlspolicy`).
    * ``warm_connections``: sessions kept open at all times to the smarthost and to the
      first next hop of every explicit route (F78; 0: none), reopened when they drop.
    """

    smarthost: HostPort | None = None
    routes: Mapping[str, tuple[HostPort, ...]] = field(default_factory=_empty_mapping)
    tls: tuple[tuple[str, TlsConfig], ...] = field(default_factory=_default_client_tls)
    credentials: Mapping[str, HostCredentials] = field(default_factory=_empty_mapping)
    chunking: Chunking = "auto"
    resolver: ListenAddress | None = None
    mta_sts: MtaStsSettings = field(default_factory=MtaStsSettings)
    dane: DaneSettings = field(default_factory=DaneSettings)
    tlsrpt: TlsRptSettings = field(default_factory=TlsRptSettings)
    warm_connections: int = 0


# The header fields a DKIM signature covers by default: RFC 6376 5.4.1's list, the MIME
# fields, and RFC 8058's List-Unsubscribe-Post; and those signed once more than present.
DKIM_HEADERS = (
    "from", "reply-to", "subject", "date", "to", "cc", "message-id", "in-reply-to",
    "references", "sender", "mime-version", "content-type", "content-transfer-encoding",
    "content-id", "content-description", "resent-date", "resent-from", "resent-sender",
    "resent-to", "resent-cc", "resent-message-id", "list-id", "list-help",
    "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post",
    "list-owner", "list-archive",
)  # fmt: skip
DKIM_OVERSIGN = ("from", "reply-to", "subject", "date", "to", "cc")
# RFC 6376 5.4: never signed (trace fields, fields others add or remove).
DKIM_NOT_SIGNED = frozenset(
    ("return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DkimSign:
    """One ``[[dkim.sign]]`` entry: mail whose From domain is ``domain`` (A-label) or a
    subdomain of it is signed with ``d=domain``, ``s=selector`` and the key in
    ``key_file``; ``headers`` and ``oversign`` are lower-case field names (see
    :mod:`smtpx.mta.dkim`)."""

    domain: str
    selector: str
    key_file: Path
    headers: tuple[str, ...] = DKIM_HEADERS
    oversign: tuple[str, ...] = DKIM_OVERSIGN


@dataclass(frozen=True, slots=True, kw_only=True)
class DkimSettings:
    """``[dkim]``: the signing keys (``[[dkim.sign]]``), none by default."""

    sign: tuple[DkimSign, ...] = ()


class DmarcAction(enum.Enum):
    """What to do with a message that fails DMARC under a given policy."""

    REJECT = "reject"  # 550 5.7.1 at the end of DATA
    QUARANTINE = "quarantine"  # accepted, and held in the spool's quarantine
    ACCEPT = "accept"  # delivered, the result in Authentication-Results


@dataclass(frozen=True, slots=True, kw_only=True)
class ArcSealSettings:
    """``[inbound.arc_seal]``: seal judged mail with an ARC set (RFC 8617) signed by the
    RSA key in ``key_file`` as ``d=domain``, ``s=selector``."""

    domain: str
    selector: str
    key_file: Path
    headers: tuple[str, ...] = DKIM_HEADERS


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundSettings:
    """``[inbound]``: judging mail from other hosts (see :mod:`smtpx.mta.inbound`).

    ``listeners`` holds listener kinds (``"smtp"``, ``"smtps"``, ``"submission"``) and
    addresses (``"0.0.0.0:25"``, one of ``[server]``'s); mail arriving there from clients
    neither in ``relay.trusted_networks`` nor authenticated is judged. Empty: none is.
    ``authserv_id`` (default: ``hostname``) names us in Authentication-Results.
    """

    listeners: tuple[str, ...] = ()
    authserv_id: str | None = None
    spf_reject_fail: bool = False
    dmarc_reject: DmarcAction = DmarcAction.REJECT
    dmarc_quarantine: DmarcAction = DmarcAction.ACCEPT
    arc_trusted_sealers: tuple[str, ...] = ()
    arc_seal: ArcSealSettings | None = None

    def judges(self, listener: str) -> bool:
        """Whether mail arriving on the listener named ``listener`` (a
        :attr:`smtpx.server.Session.listener`, like ``"smtp 0.0.0.0:25"``) is judged."""
        kind, _, address = listener.partition(" ")
        return kind in self.listeners or (bool(address) and address in self.listeners)


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsSettings:
    """``[dns]``: the name servers smtpx asks (MX routing and inbound judging): the
    system's (``/etc/resolv.conf``) when ``nameservers`` is empty; ``timeout`` bounds
    each lookup."""

    nameservers: tuple[ListenAddress, ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlSettings:
    """``[control]``: the admin control plane: a unix socket, and optionally HTTP on a
    loopback address; ``token_file`` holds the bearer token HTTP clients must present."""

    socket: Path = Path("var/control.sock")
    http: ListenAddress | None = None
    token_file: Path | None = None


def on_listener(listeners: Sequence[str], listener: str) -> bool:
    """Whether the listener named ``listener`` (a :attr:`smtpx.server.Session.listener`,
    like ``"smtp 0.0.0.0:25"``) is one of ``listeners`` (kinds or addresses)."""
    kind, _, address = listener.partition(" ")
    return kind in listeners or (bool(address) and address in listeners)


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsblZone:
    """One ``[[dnsbl.zones]]`` entry: a DNS list (RFC 5782) and what a listing weighs.
    ``codes`` maps answers (``"127.0.0.2"``) to their own weights; when set, answers it
    does not name weigh nothing. A negative weight makes it an allow list (DNSWL)."""

    zone: str
    weight: float = 1.0
    codes: Mapping[str, float] = field(default_factory=_empty_mapping)


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsblSettings:
    """``[dnsbl]``: DNS block and allow lists asked when a client connects (see
    :mod:`smtpx.mta.dnsbl`): the weights of the lists that name the client are added up,
    and at ``threshold`` or more it gets ``554 5.7.1`` with the list's text."""

    zones: tuple[DnsblZone, ...] = ()
    threshold: float = 1.0
    listeners: tuple[str, ...] = ("smtp",)
    timeout: float = 2.0


RATE_KEYS = ("client", "network", "user", "sender_domain")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateRule:
    """One ``[[rate_limits.rules]]`` entry: at most ``messages`` messages and
    ``recipients`` recipients (None: not limited) per ``by`` key over ``window``
    seconds. ``by``: "client" (an IPv4 address or IPv6 /64), "network" (the client's
    ``ipv4_prefix`` / ``ipv6_prefix``), "user" (who authenticated) or "sender_domain"."""

    by: str
    messages: int | None = None
    recipients: int | None = None
    window: float = 3600.0
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSettings:
    """``[rate_limits]``: messages and recipients per client, network, user and sender
    domain (see :mod:`smtpx.mta.ratelimit`); shared through ``[redis]`` when it is set."""

    rules: tuple[RateRule, ...] = ()
    listeners: tuple[str, ...] = ("smtp", "smtps", "submission")
    exempt_trusted_networks: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class GreylistSettings:
    """``[greylist]``: refuse the first delivery of an unknown (client network, sender,
    recipient) triplet with ``451 4.7.1``; a retry after ``delay`` and within
    ``retry_window`` passes it for ``expire`` (see :mod:`smtpx.mta.greylist`)."""

    enabled: bool = False
    listeners: tuple[str, ...] = ("smtp",)
    delay: float = 300.0
    retry_window: float = 2 * 86400.0
    expire: float = 35 * 86400.0
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSettings:
    """``[redis]``: the Redis server several smtpx nodes share rate limits and
    greylisting through (``url`` unset: each node keeps its own, in memory)."""

    url: str | None = None
    timeout: float = 0.5
    key_prefix: str = "smtpx:"


MAX_WORKERS = 256  # [server] workers
WORKER_SCHEDULING = ("batch", "normal")  # [server] worker_scheduling
MILTER_DEFAULT_ACTIONS = ("tempfail", "accept", "reject", "quarantine")


@dataclass(frozen=True, slots=True, kw_only=True)
class MilterSettings:
    """One ``[[milters]]`` entry (see :mod:`smtpx.mta.milter`): a milter at ``address``
    (``inet:host:port`` or ``unix:/path``), what to answer when it is down or breaks the
    protocol (``default_action``), and how long to wait for it."""

    name: str
    address: str
    default_action: str = "tempfail"
    connect_timeout: float = 30.0
    command_timeout: float = 30.0
    content_timeout: float = 300.0


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("plain", "json")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    """``[log]``: ``level`` is one of debug, info, warning, error, critical; ``format`` is
    plain (human-readable lines) or json (one object per line); ``fingerprints`` adds each
    message's fingerprint (header fields, an MD5 per MIME part; F115) to its ``accepted``
    line."""

    level: str = "info"
    format: str = "plain"
    fingerprints: bool = False


# ---------------------------------------------------------------------------------------
# The default file


DEFAULT_TOML = """\
# smtpx relay MTA configuration (smtpx serve --config FILE.toml).
#
# Every key is optional: the values below are the defaults, which `smtpx serve` uses
# when it is given no file. Relative paths are relative to this file's directory.
# Sizes: "35M", "512K", "1G" or a number of bytes. Durations: "30s", "5m", "2h", "1d",
# "1h30m" or a number of seconds.

# The name this MTA uses in its greeting, in EHLO and in Received: headers.
# Default: the machine's fully qualified name.
# hostname = "mx.example.com"

[server]
# Plain SMTP listeners, "host:port" (IPv6 as "[::1]:2525"). STARTTLS is offered when
# [tls] has a certificate.
listen = ["127.0.0.1:2525"]
# Implicit-TLS listeners (RFC 8314, usually port 465). They need tls.cert_file.
smtps = []
# Submission listeners (RFC 6409, usually port 587): STARTTLS and then AUTH are required
# before any other command (530 5.7.0). They need tls.cert_file and auth.users_file.
submission = []
# LMTP listeners (RFC 2033; never port 25) for an MTA in front of smtpx (Postfix's lmtp
# transport): local mailboxes are delivered at once, with one reply per recipient.
lmtp = []
max_message_size = "35M"
max_recipients = 1000
max_sessions_per_listener = 1000
# Per client (an IPv4 address or an IPv6 /64): sessions at once, and new connections a
# minute; more get 421 4.7.0. 0: no limit. With exempt_trusted_networks, clients in
# relay.trusted_networks are not limited.
max_sessions_per_client = 20
max_connection_rate_per_client = 60
exempt_trusted_networks = true
# A command must be complete within command_timeout of the moment the server waits for
# it, however slowly its bytes come. data_timeout: the longest wait for more content.
command_timeout = "5m"
data_timeout = "5m"
# Message content must average min_data_rate octets a second once data_rate_grace has
# passed (0: no minimum); slower transfers get 421 4.4.2.
min_data_rate = 500
data_rate_grace = "1m"
# A bare CR or LF inside a message: "reject" it (500 5.5.2) or "normalize" it to CRLF.
bare_newlines = "reject"
# A session keeps up to spill_threshold of a message in memory, the rest in an unnamed
# file in the spool directory; all sessions together keep at most max_buffered in memory,
# and at most max_spilled in those files (more: 452 4.3.1, try later).
spill_threshold = "256K"
max_buffered = "64M"
max_spilled = "4G"
# Offer DSN (RFC 3461): NOTIFY=SUCCESS/FAILURE/DELAY/NEVER, ORCPT, RET, ENVID.
dsn = true
# Listeners behind a load balancer (addresses of listen or submission): each connection
# must start with a PROXY protocol header (v1 or v2, HAProxy's send-proxy and
# send-proxy-v2) and come from proxy_from; anything else gets 421 4.7.0 before the
# greeting. The client the header names is the one relay policy, Received:, the logs and
# the limits see. proxy_timeout: the longest wait for the header.
proxied = []
proxy_from = []
proxy_timeout = "5s"
# Processes accepting on the same listeners under one supervisor ("auto": one per core),
# a connection going to a worker that is free.
# With the journal each has its own shard of the spool (spool.dir/shard-N) and delivers
# its own mail; with PostgreSQL they share the queue. A restart changes it.
workers = 1
# The workers' CPU scheduling (Linux): "batch" (SCHED_BATCH: a worker woken by a packet
# does not preempt another that runs; fewer switches) or "normal".
worker_scheduling = "batch"
# Strict RFC 5321 addresses in MAIL and RCPT. default_domain: the domain given to an
# address without one (unset: 501 5.1.3). lenient_addresses: also async_smtp's forms
# (a display name before <...>, a quoted address, any local part).
# default_domain = "example.com"
lenient_addresses = false
# client_names: look up each client's verified host name (reverse DNS, confirmed) for
# the milters (their {client_name}); "unknown" without it.
client_names = false
# A pause before the greeting on the listen listeners, for clients outside
# relay.trusted_networks ("0s": none). A client that talks meanwhile, as spam software
# that does not wait for the greeting does, gets 554 and is disconnected. Postfix's
# postscreen waits 6s; well-behaved senders wait minutes.
greeting_delay = "0s"
# The same clients must wait for the replies to EHLO, HELO and DATA (RFC 2920): one
# that sends more first (the message before the 354, say) gets 554 and is disconnected.
reject_unauth_pipelining = false

[tls]
# The server certificate (PEM). When set, STARTTLS is offered.
# cert_file = "tls/cert.pem"
# key_file = "tls/key.pem"      # leave out when the key is in cert_file
# min_version = "TLSv1.2"       # or "TLSv1.3"

[relay]
# Mail for these domains is delivered locally (to [local] maildir).
local_domains = ["localhost"]
# Clients in these networks may relay to any domain.
trusted_networks = ["127.0.0.0/8", "::1/128"]
# Clients that authenticated may relay to any domain. Everyone else: 550 5.7.1.
relay_for_authenticated = true

[auth]
# Submission users, one "name:scrypt$..." line each (smtpx users add NAME --file FILE).
# users_file = "users"
# Offer AUTH without TLS (RFC 4954 says a server SHOULD NOT).
allow_plaintext = false

[spool]
dir = "./var/spool"
# Make accepted mail durable before the 250: "always" (a flush per message), "batch"
# (concurrent messages share flushes) or "never" (tests and benchmarks only).
fsync = "batch"
# Waits between delivery attempts; "5m~30s" adds up to 30s of random jitter. When they
# run out, the message is frozen (and bounced, with bounce = true).
retry_intervals = ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "16h"]
# Concurrent deliveries overall, and per destination.
max_deliveries = 100
max_per_destination = 10
# Send a delivery status notification (RFC 3464) when a message fails for good.
bounce = true
# Tell the sender when a message is still queued after this long.
# delay_warning_after = "4h"
# When no next hop of a destination answers, its mail is deferred without a connection
# for this long (default: the first retry interval; "0": always try).
# unreachable_backoff = "1m"
# Mail whose recipients all failed (bounced, or out of retries) stays frozen this long
# after its last attempt for an operator to look at, then is removed for good. "never"
# keeps it until an operator acts.
failed_retention = "7d"
# The spool monitor: check the journal this often ("0": never), and log and count (the
# smtpx_spool_problems metric) each problem found by monitor_alert_after checks in a row.
# monitor_max_frozen_age: mail frozen longer than this is a problem too.
monitor_every = "0"
monitor_alert_after = 2
# monitor_max_frozen_age = "7d"

[local]
# Mail for the local domains is delivered into this maildir...
maildir = "./var/mail"
# ...or to an LMTP server (Dovecot, Cyrus): a unix socket's path, or "host:port".
# lmtp = "/run/dovecot/lmtp"
# The recipients of the local domains: local parts ("alice": in every local domain) or
# addresses ("alice@example.org"). Others get 550 5.1.1 at RCPT. With no mailbox, alias,
# catch_all or recipients_file at all, every local part is accepted.
mailboxes = []
# Aliases: name = [targets]; a target is a local part, a local address or a remote one
# (relayed). The name "@example.org" is that domain's catch-all.
aliases = {}
# Where mail for unknown local parts of every local domain goes (empty: refused).
catch_all = []
# More mailboxes ("name" lines) and aliases ("name: target, target" lines), read again
# when the file changes and on SIGHUP.
# recipients_file = "recipients"
# "alice+tag" is alice when "alice+tag" is not known itself ("": no subaddresses).
subaddress_delimiter = "+"

[routing]
# Without a smarthost or a route, mail goes to the domain's MX hosts (or its A/AAAA
# records when it has no MX, RFC 5321 section 5.1).
# smarthost = "smtp.example.com:587"
# The DNS resolver for MX, MTA-STS, TLSA and MX address lookups, "address:port" (the
# port defaults to 53). Default: the system's (/etc/resolv.conf). For DANE it must be a
# DNSSEC-validating resolver you trust: on this host, or across a link you trust.
# resolver = "127.0.0.1:53"

# BDAT (RFC 3030 CHUNKING) to servers that offer it: "auto" (every message but a spooled
# one over 256 KB, which goes with DATA and sendfile), true (every message) or false
# (never: DATA only, and a BODY=BINARYMIME message is sent only if it fits 8bit).
chunking = "auto"

# Explicit next hops per domain (also used for its subdomains), tried in order.
[routing.routes]
# "example.com" = ["mx1.internal:25", "[2001:db8::25]:25"]

# TLS towards destinations: the first entry whose suffix matches the host wins ("" matches
# every host). mode: "none", "if_available", "always_try", "required" or "implicit";
# certificate: "verify" or "ignore".
[[routing.tls]]
suffix = ""
mode = "if_available"
certificate = "ignore"
# ca_file = "ca.pem"

# Logins for outbound hosts: password, or password_file (its first line).
[routing.credentials]
# "smtp.example.com" = { username = "relay", password_file = "smarthost.password" }

# MTA-STS (RFC 8461) for mail delivered by MX: a domain's published policy decides which
# MX hosts may get its mail and that their certificates must be valid (enforce), or only
# logs what would fail (testing). Policies are cached in the spool directory.
[routing.mta_sts]
enabled = false
# ca_file = "ca.pem"          # instead of the system's trust store

# DANE (RFC 7672) for mail delivered by MX: DNSSEC-signed TLSA records of an MX host
# decide its certificate check, before MTA-STS. Needs routing.resolver (validating).
[routing.dane]
enabled = false

# Daily TLS reports (RFC 8460) to domains that publish _smtp._tls records, about
# deliveries under their MTA-STS or DANE policies.
[routing.tlsrpt]
enabled = false
# organization = "Example Org"          # default: the host name
# contact = "postmaster@example.com"    # default: postmaster@<hostname>

[dkim]
# DKIM signatures for mail from trusted networks and authenticated users whose From
# domain is a signing domain (or a subdomain of it); one entry per key, and two entries
# for a domain (an RSA and an Ed25519 key) sign twice. smtpx dkim keygen makes keys.
# [[dkim.sign]]
# domain = "example.org"
# selector = "s2026"
# key_file = "/etc/smtpx/dkim/example.org.s2026.key"

[inbound]
# Judge mail from other hosts (neither in relay.trusted_networks nor authenticated) on
# these listeners: SPF at MAIL, then DKIM, ARC and DMARC, in one Authentication-Results
# header. A kind ("smtp", "smtps", "submission") or an address of [server] ("0.0.0.0:25").
listeners = []
# Our name in Authentication-Results (the same on all your border MTAs). Default: hostname.
# authserv_id = "example.org"
# Refuse MAIL FROM with 550 5.7.23 when SPF fails (-all) for MAIL FROM or HELO.
spf_reject_fail = false
# A message failing DMARC whose domain publishes p=reject: "reject" (550 5.7.1),
# "quarantine" (hold it in the spool) or "accept" (deliver it; the header says fail).
dmarc_reject = "reject"
# The same under p=quarantine.
dmarc_quarantine = "accept"
# ARC sealers whose passing chain lets a DMARC failure through (lists, forwarders).
arc_trusted_sealers = []
# Seal judged mail with an ARC set (RFC 8617; an RSA key as for [[dkim.sign]]).
# [inbound.arc_seal]
# domain = "example.org"
# selector = "arc2026"
# key_file = "/etc/smtpx/dkim/example.org.arc2026.key"

[dns]
# Name servers for MX routing and inbound judging, "address" or "address:port".
# Empty: the system's (/etc/resolv.conf).
nameservers = []
# The longest a lookup may take, retries included.
timeout = "5s"

[dnsbl]
# DNS lists asked when a client connects (RFC 5782), on these listeners (kinds or
# addresses); clients in relay.trusted_networks are not checked. The weights of the lists
# that name the client add up; at threshold or more it gets 554 5.7.1 with the list's
# text. A negative weight makes an allow list (DNSWL). timeout: for all lists together.
listeners = ["smtp"]
threshold = 1.0
timeout = "2s"
# [[dnsbl.zones]]
# zone = "zen.spamhaus.org"
# weight = 1.0
# codes = { "127.0.0.2" = 1.0, "127.0.0.4" = 1.0, "127.0.0.10" = 0.5 }   # optional
# [[dnsbl.zones]]
# zone = "list.dnswl.org"
# weight = -2.0

[rate_limits]
# Messages and recipients over a sliding window, per key: "client" (IPv4 address or
# IPv6 /64), "network" (ipv4_prefix, ipv6_prefix), "user" (authenticated), or
# "sender_domain". Over: 450 4.7.1 at MAIL/DATA, 452 4.7.1 at RCPT. Shared through
# [redis] when it is set (each node on its own while Redis is down).
listeners = ["smtp", "smtps", "submission"]
exempt_trusted_networks = true
# [[rate_limits.rules]]
# by = "client"
# messages = 100
# recipients = 500
# window = "1h"

[greylist]
# Refuse the first delivery of an unknown (client network, sender, recipient) with
# 451 4.7.1; a retry after delay and within retry_window passes, and is remembered for
# expire. In [redis] when it is set, else in this process's memory.
enabled = false
listeners = ["smtp"]
delay = "5m"
retry_window = "2d"
expire = "35d"
ipv4_prefix = 24
ipv6_prefix = 64

# Milters (the Sendmail/Postfix milter protocol, version 6), run in this order on every
# SMTP session, like Postfix's smtpd_milters. default_action ("tempfail", "accept",
# "reject" or "quarantine") answers while the milter is down or late.
# [[milters]]
# name = "rspamd"
# address = "inet:127.0.0.1:11332"      # or "unix:/run/milter.sock"
# default_action = "tempfail"
# connect_timeout = "30s"
# command_timeout = "30s"               # CONNECT, HELO, MAIL, RCPT, DATA
# content_timeout = "5m"                # header, body, end of message

[redis]
# Shared rate limits and greylisting across nodes: "redis://host:6379/0" (needs the
# redis extra: pip install 'smtpx[redis]'). Unset: each node keeps its own in memory.
# url = "redis://127.0.0.1:6379/0"
timeout = 0.5           # seconds for one Redis command
key_prefix = "smtpx:"

[control]
# The admin control plane's unix socket.
socket = "./var/control.sock"
# Also serve it over HTTP on a loopback address, with a bearer token.
# http = "127.0.0.1:8025"
# token_file = "control.token"

[log]
level = "info"          # debug, info, warning, error or critical
format = "plain"        # or "json"
fingerprints = false    # each accepted message's header fields and part MD5s in its log line
"""


# ---------------------------------------------------------------------------------------
# Value readers


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _key_text(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'


def _join(path: str, key: str) -> str:
    return f"{path}.{_key_text(key)}" if path else _key_text(key)


def _describe(value: object) -> str:
    """A value as the TOML author wrote it: "the string 'x'", "the integer 5"."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the float {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__} ({value})"


def _expected(what: str, value: object, key: str) -> ConfigError:
    return ConfigError(f"expected {what}, got {_describe(value)}", key=key)


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value, key)
    return value


def _nonempty_string(value: object, key: str) -> str:
    text = _string(value, key)
    if not text.strip():
        raise ConfigError("must not be empty", key=key)
    return text


def _boolean(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise _expected("a boolean (true or false)", value, key)
    return value


def _chunking(value: object, key: str) -> Chunking:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() == "auto":
        return "auto"
    raise _expected('true, false or "auto"', value, key)


def _positive_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("an integer", value, key)
    if value < 1:
        raise ConfigError(f"must be at least 1, got {value}", key=key)
    return value


def _workers(value: object, key: str) -> int:
    """A number of processes, or "auto": the number of cores."""
    if value == "auto":
        return min(os.cpu_count() or 1, MAX_WORKERS)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected('an integer or "auto"', value, key)
    if not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"must be 1 to {MAX_WORKERS}, got {value}", key=key)
    return value


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _expected("a number", value, key)
    return float(value)


def _prefix(maximum: int) -> Callable[[object, str], int]:
    def read(value: object, key: str) -> int:
        bits = _positive_int(value, key)
        if bits > maximum:
            raise ConfigError(f"a prefix length of at most {maximum}, got {bits}", key=key)
        return bits

    return read


def _warm_connections(value: object, key: str) -> int:
    count = _limit(value, key)
    if count > CacheConfig().max_connections_per_address:
        limit = CacheConfig().max_connections_per_address
        raise ConfigError(f"must be at most {limit} (sessions per address), got {count}", key=key)
    return count


def _limit(value: object, key: str) -> int:
    """A count where 0 means no limit."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("an integer (0 for no limit)", value, key)
    if value < 0:
        raise ConfigError(f"must be 0 (no limit) or more, got {value}", key=key)
    return value


def _array(value: object, key: str) -> list[object]:
    if not isinstance(value, list):
        raise _expected("an array", value, key)
    return value


def _table(value: object, key: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _expected("a table", value, key)
    return value


E = TypeVar("E", bound=enum.Enum)


def _choice(enum_type: type[E], value: object, key: str) -> E:
    names = ", ".join(repr(member.value) for member in enum_type)
    if isinstance(value, str):
        for member in enum_type:
            if member.value == value.lower():
                return member
    raise ConfigError(f"expected one of {names}, got {_describe(value)}", key=key)


def _word(choices: Sequence[str], value: object, key: str) -> str:
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    names = ", ".join(repr(choice) for choice in choices)
    raise ConfigError(f"expected one of {names}, got {_describe(value)}", key=key)


def _size(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _expected("a size (like 35M, 512K or a number of bytes)", value, key)
    try:
        size = value if isinstance(value, int) else parse_size(value)
    except ValueError:
        raise ConfigError(
            f"not a size: {value!r} (use 35M, 512K, 1G or a number of bytes)", key=key
        ) from None
    if size < 1:
        raise ConfigError(f"must be at least 1 byte, got {value!r}", key=key)
    return size


_DURATION_HINT = "use 30s, 5m, 1h30m, 1d or a number of seconds"


def _duration(value: object, key: str) -> float:
    """A positive number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _expected(f"a duration ({_DURATION_HINT})", value, key)
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except ValueError:
        raise ConfigError(f"not a duration: {value!r} ({_DURATION_HINT})", key=key) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"must be more than 0 seconds, got {value!r}", key=key)
    return seconds


def _duration_or_zero(value: object, key: str) -> float:
    """A duration, or 0 (``"0"``, ``"0s"``): off."""
    with contextlib.suppress(ValueError):
        if isinstance(value, str) and parse_duration(value) == 0:
            return 0.0
    if not isinstance(value, bool) and value == 0:
        return 0.0
    return _duration(value, key)


def _greeting_delay(value: object, key: str) -> float:
    """A pause before the greeting, or 0; under the 5 minutes an RFC 5321 client waits for
    a greeting (section 4.5.3.2.1), past which every sender would give up."""
    seconds = _duration_or_zero(value, key)
    if seconds >= 300:
        raise ConfigError(
            f"must be under 5 minutes (clients wait that long for a greeting), got {value!r}",
            key=key,
        )
    return seconds


def _retention(value: object, key: str) -> float | None:
    """A duration, or ``"never"`` (None)."""
    if isinstance(value, str) and value.strip().lower() == "never":
        return None
    return _duration(value, key)


def _retry_interval(value: object, key: str) -> RetryInterval:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _expected("a duration (like 5m, or 5m~30s with jitter)", value, key)
    try:
        if isinstance(value, str):
            return RetryInterval.parse(value)
        return RetryInterval(span=float(value))
    except (ParseError, ValueError):
        raise ConfigError(
            f"not a duration: {value!r} (use 30s, 5m, 2h, 1d, seconds, or 5m~30s for jitter)",
            key=key,
        ) from None


def _domain(value: object, key: str) -> str:
    text = _string(value, key)
    try:
        return a_label(text)
    except ValueError as exc:
        raise ConfigError(f"not a domain name: {text!r} ({exc})", key=key) from None


def _selector(value: object, key: str) -> str:
    """A DKIM selector: one or more DNS labels (RFC 6376 3.1), kept in lower case."""
    text = _nonempty_string(value, key).strip().lower()
    if not all(_LABEL_RE.fullmatch(label) for label in text.split(".")):
        raise ConfigError(f"not a selector (DNS labels like s2026): {text!r}", key=key)
    return text


_FIELD_NAME_RE = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 3.6.8


def _field_names(value: object, key: str) -> tuple[str, ...]:
    """Header field names DKIM may sign, in lower case, each once."""
    names = []
    for index, item in enumerate(_array(value, key)):
        text = _string(item, f"{key}[{index}]")
        if not _FIELD_NAME_RE.fullmatch(text):
            raise ConfigError(f"not a header field name: {text!r}", key=f"{key}[{index}]")
        if text.lower() in DKIM_NOT_SIGNED:
            raise ConfigError(f"{text} is never signed (RFC 6376 5.4)", key=f"{key}[{index}]")
        names.append(text.lower())
    return tuple(dict.fromkeys(names))


def _network(value: object, key: str) -> IPNetwork:
    text = _string(value, key)
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError as exc:
        detail = f" ({exc})" if "host bits set" in str(exc) else ""
        raise ConfigError(f"not an IP network: {text!r}{detail}", key=key) from None


def _hostport(value: object, key: str) -> HostPort:
    text = _string(value, key)
    try:
        hop = HostPort.parse(text.strip())
    except ParseError:
        raise ConfigError(
            f"not a host:port: {text!r} (like mx.example.com:25 or [2001:db8::1]:25)", key=key
        ) from None
    if ":" in hop.host or _is_ip(hop.host):
        return hop
    try:
        return HostPort(a_label(hop.host), hop.port)
    except ValueError as exc:
        raise ConfigError(f"not a host:port: {text!r} ({exc})", key=key) from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _host(value: object, key: str) -> str:
    """A host name (as an A-label) or an IP address (brackets allowed)."""
    text = _string(value, key).strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    try:
        return a_label(text)
    except ValueError as exc:
        raise ConfigError(f"not a host name or IP address: {text!r} ({exc})", key=key) from None


def _resolver(value: object, key: str) -> ListenAddress:
    address = _listen(value, key, 53)
    if not _is_ip(address.host):
        raise ConfigError(f"must be an IP address (and port), got {value!r}", key=key)
    return address


def _mailbox(value: object, key: str) -> str:
    """A mailbox address (local@domain), as written."""
    text = _nonempty_string(value, key).strip()
    try:
        Address.parse(text)
    except ParseError:
        raise ConfigError(
            f"not a mailbox (like postmaster@example.com): {text!r}", key=key
        ) from None
    return text


def _recipient_name(value: object, key: str) -> str:
    """A recipient table key: ``local``, ``local@domain`` or ``@domain``."""
    from smtpx.mta.recipients import check_name  # noqa: PLC0415 - it imports this module

    try:
        return check_name(_nonempty_string(value, key))
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


def _alias_target(value: object, key: str) -> str:
    """An alias target: a local part or an address."""
    from smtpx.mta.recipients import check_target  # noqa: PLC0415

    try:
        return check_target(_nonempty_string(value, key))
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


def _aliases(value: object, key: str) -> Mapping[str, tuple[str, ...]]:
    """``{ name = ["target", ...] }`` (a single target may be a string)."""
    aliases = {}
    for name, targets in _table(value, key).items():
        path = _join(key, name)
        items = [targets] if isinstance(targets, str) else _array(targets, path)
        if not items:
            raise ConfigError("an alias needs at least one target", key=path)
        read = tuple(_alias_target(t, f"{path}[{i}]") for i, t in enumerate(items))
        aliases[_recipient_name(name, path)] = read
    return types.MappingProxyType(aliases)


def _delimiter(value: object, key: str) -> str:
    """The subaddress delimiter: one character, or "" for none."""
    text = _string(value, key)
    if len(text) > 1 or text.isalnum() or text in ("@", " ", '"'):
        raise ConfigError(f"one character like '+' or '-', or '' for none: {text!r}", key=key)
    return text


def _listen(value: object, key: str, default_port: int) -> ListenAddress:
    text = _string(value, key)
    try:
        return ListenAddress.parse(text.strip(), default_port=default_port)
    except ValueError as exc:
        raise ConfigError(
            f"not a listen address: {text!r} ({exc}; like 127.0.0.1:2525 or [::1]:2525)",
            key=key,
        ) from None


_LISTENER_KINDS = ("smtp", "smtps", "submission")


def _milter_address(value: object, key: str) -> str:
    """``inet:host:port`` (IPv6 hosts in brackets) or ``unix:/absolute/path``."""
    text = _nonempty_string(value, key)
    kind, _, where = text.partition(":")
    if kind == "unix" and where.startswith("/"):
        return text
    host, _, port = where.rpartition(":")
    if kind in ("inet", "inet6") and host and port.isdigit() and 0 < int(port) < 65536:
        return text
    raise ConfigError(f"not inet:host:port or unix:/path: {text!r}", key=key)


def _lmtp_listen(value: object, key: str) -> ListenAddress:
    address = _listen(value, key, 24)
    if address.port == 25:
        raise ConfigError("LMTP must not be offered on port 25 (RFC 2033 section 5)", key=key)
    return address


def _judged_listener(value: object, key: str) -> str:
    """A listener kind, or a listen address in its canonical form."""
    text = _nonempty_string(value, key).strip()
    if text.lower() in _LISTENER_KINDS:
        return text.lower()
    return str(_listen(text, key, 25))


def _nameserver(value: object, key: str) -> ListenAddress:
    address = _listen(value, key, 53)
    if not _is_ip(address.host):
        raise ConfigError(f"a name server is an IP address, got {address.host!r}", key=key)
    return address


_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


def _tls_version(value: object, key: str) -> str:
    if isinstance(value, str):
        for version in _TLS_VERSIONS:
            if value.lower() in (version.lower(), version[4:]):
                return version
    raise ConfigError(f"expected 'TLSv1.2' or 'TLSv1.3', got {_describe(value)}", key=key)


def _items(value: object, key: str, read: Callable[[object, str], Any]) -> tuple[Any, ...]:
    return tuple(read(item, f"{key}[{index}]") for index, item in enumerate(_array(value, key)))


def _check_keys(table: Mapping[str, object], path: str, known: Iterable[str]) -> None:
    known = list(known)
    for key in table:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean {close[0]!r}?"
        elif known:
            hint = f" (known keys: {', '.join(known)})"
        else:
            hint = ""
        raise ConfigError(f"unknown key{hint}", key=_join(path, key))


T = TypeVar("T")


class _Loader:
    """Turns the TOML document (a dict) into an :class:`MtaConfig`, naming key paths."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def path(self, value: object, key: str) -> Path:
        text = _nonempty_string(value, key)
        return self.base / Path(text).expanduser()

    def build(
        self,
        cls: type[T],
        table: Mapping[str, object],
        path: str,
        readers: Mapping[str, Callable[[object, str], object]],
    ) -> T:
        """``cls`` from the keys of ``table`` that ``readers`` knows; absent keys keep
        the field default; relative default paths are resolved against the base."""
        _check_keys(table, path, readers)
        values = {
            name: read(table[name], _join(path, name))
            for name, read in readers.items()
            if name in table
        }
        record = cls(**values)
        updates = {}
        for f in fields(record):  # type: ignore[arg-type]
            current = getattr(record, f.name)
            if isinstance(current, Path) and not current.is_absolute():
                updates[f.name] = self.base / current
        return replace(record, **updates) if updates else record  # type: ignore[type-var]

    def section(self, document: Mapping[str, object], name: str) -> dict[str, object]:
        return _table(document.get(name, {}), name)

    # -- sections ------------------------------------------------------------------------

    def config(self, document: Mapping[str, object], source: Path | None) -> MtaConfig:
        sections = {
            "server": self.server,
            "tls": self.tls,
            "relay": self.relay,
            "auth": self.auth,
            "spool": self.spool,
            "local": self.local,
            "routing": self.routing,
            "dkim": self.dkim,
            "inbound": self.inbound,
            "dns": self.dns,
            "dnsbl": self.dnsbl,
            "rate_limits": self.rate_limits,
            "greylist": self.greylist,
            "redis": self.redis,
            "control": self.control,
            "log": self.log,
        }
        _check_keys(document, "", ["hostname", *sections, "milters"])
        values: dict[str, Any] = {
            name: read(self.section(document, name)) for name, read in sections.items()
        }
        values["milters"] = self.milters(document.get("milters", []))
        if "hostname" in document:
            values["hostname"] = _domain(document["hostname"], "hostname")
        config = MtaConfig(**values, source=source)
        self.check_consistency(config)
        return config

    def server(self, table: dict[str, object]) -> ServerSettings:
        return self.build(
            ServerSettings,
            table,
            "server",
            {
                "listen": lambda v, k: _items(v, k, lambda i, p: _listen(i, p, 25)),
                "smtps": lambda v, k: _items(v, k, lambda i, p: _listen(i, p, 465)),
                "submission": lambda v, k: _items(v, k, lambda i, p: _listen(i, p, 587)),
                "lmtp": lambda v, k: _items(v, k, _lmtp_listen),
                "max_message_size": _size,
                "max_recipients": _positive_int,
                "max_sessions_per_listener": _positive_int,
                "max_sessions_per_client": _limit,
                "max_connection_rate_per_client": _limit,
                "exempt_trusted_networks": _boolean,
                "command_timeout": _duration,
                "data_timeout": _duration,
                "min_data_rate": _limit,
                "data_rate_grace": _duration,
                "bare_newlines": lambda v, k: _choice(BareNewlines, v, k),
                "spill_threshold": _size,
                "max_buffered": _size,
                "max_spilled": _size,
                "dsn": _boolean,
                "proxied": lambda v, k: _items(v, k, lambda i, p: _listen(i, p, 25)),
                "proxy_from": lambda v, k: _items(v, k, _network),
                "proxy_timeout": _duration,
                "workers": _workers,
                "worker_scheduling": lambda v, k: _word(WORKER_SCHEDULING, v, k),
                "default_domain": _domain,
                "lenient_addresses": _boolean,
                "client_names": _boolean,
                "greeting_delay": _greeting_delay,
                "reject_unauth_pipelining": _boolean,
            },
        )

    def tls(self, table: dict[str, object]) -> TlsSettings:
        return self.build(
            TlsSettings,
            table,
            "tls",
            {"cert_file": self.path, "key_file": self.path, "min_version": _tls_version},
        )

    def relay(self, table: dict[str, object]) -> RelaySettings:
        return self.build(
            RelaySettings,
            table,
            "relay",
            {
                "local_domains": lambda v, k: tuple(dict.fromkeys(_items(v, k, _domain))),
                "trusted_networks": lambda v, k: _items(v, k, _network),
                "relay_for_authenticated": _boolean,
            },
        )

    def auth(self, table: dict[str, object]) -> AuthSettings:
        return self.build(
            AuthSettings,
            table,
            "auth",
            {"users_file": self.path, "allow_plaintext": _boolean},
        )

    def spool(self, table: dict[str, object]) -> SpoolSettings:
        settings = self.build(
            SpoolSettings,
            table,
            "spool",
            {
                "dir": self.path,
                "fsync": lambda v, k: _choice(FsyncPolicy, v, k),
                "retry_intervals": lambda v, k: _items(v, k, _retry_interval),
                "max_deliveries": _positive_int,
                "max_per_destination": _positive_int,
                "bounce": _boolean,
                "delay_warning_after": _duration,
                "unreachable_backoff": _duration_or_zero,
                "failed_retention": _retention,
                "backend": lambda v, k: _choice(SpoolBackend, v, k),
                "postgresql": self.postgresql,
                "monitor_every": _duration_or_zero,
                "monitor_alert_after": _positive_int,
                "monitor_max_frozen_age": _duration,
            },
        )
        if settings.backend is SpoolBackend.POSTGRESQL and settings.postgresql is None:
            raise ConfigError('backend = "postgresql" needs it (a dsn)', key="spool.postgresql")
        return settings

    def postgresql(self, value: object, key: str) -> PostgresSettings:
        """``[spool.postgresql]``: dsn (or dsn_file), node (default: the host name), lease."""
        table = _table(value, key)
        _check_keys(table, key, ["dsn", "dsn_file", "node", "lease", "pool_size"])
        if ("dsn" in table) == ("dsn_file" in table):
            raise ConfigError("set dsn or dsn_file (one of them)", key=key)
        if "dsn" in table:
            dsn = _nonempty_string(table["dsn"], f"{key}.dsn")
        else:
            dsn = self.password_file(table["dsn_file"], f"{key}.dsn_file")
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigError("a postgresql://... URL", key=f"{key}.dsn")
        node = (
            _nonempty_string(table["node"], f"{key}.node")
            if "node" in table
            else socket.gethostname()
        )
        lease = _duration(table["lease"], f"{key}.lease") if "lease" in table else 300.0
        if lease < 10:
            raise ConfigError("a lease shorter than 10 s would be lost while sending", key=key)
        pool = _positive_int(table["pool_size"], f"{key}.pool_size") if "pool_size" in table else 8
        return PostgresSettings(dsn=dsn, node=node, lease=lease, pool_size=pool)

    def local(self, table: dict[str, object]) -> LocalSettings:
        return self.build(
            LocalSettings,
            table,
            "local",
            {
                "maildir": self.path,
                "lmtp": self.lmtp,
                "mailboxes": lambda v, k: tuple(dict.fromkeys(_items(v, k, _recipient_name))),
                "aliases": _aliases,
                "catch_all": lambda v, k: _items(v, k, _alias_target),
                "recipients_file": self.path,
                "subaddress_delimiter": _delimiter,
            },
        )

    def lmtp(self, value: object, key: str) -> HostPort | Path:
        """An LMTP server: a unix socket's path (``/run/dovecot/lmtp``, ``unix:...``) or
        ``host:port`` (there is no well-known port: it must be given)."""
        text = _nonempty_string(value, key).strip()
        if text.startswith(("/", ".", "~", "unix:")):
            return self.path(text.removeprefix("unix:"), key)
        if not re.search(r":\d+$", text):
            raise ConfigError(
                f"not a socket path or host:port: {text!r} (like /run/dovecot/lmtp or "
                "127.0.0.1:24)",
                key=key,
            )
        hop = _hostport(text, key)
        if hop.port == 25:
            raise ConfigError("LMTP must not use port 25 (RFC 2033 section 5)", key=key)
        return hop

    def routing(self, table: dict[str, object]) -> RoutingSettings:
        return self.build(
            RoutingSettings,
            table,
            "routing",
            {
                "smarthost": _hostport,
                "routes": self.routes,
                "tls": self.client_tls,
                "credentials": self.credentials,
                "chunking": _chunking,
                "resolver": _resolver,
                "mta_sts": self.mta_sts,
                "dane": self.dane,
                "tlsrpt": self.tlsrpt,
                "warm_connections": _warm_connections,
            },
        )

    def mta_sts(self, value: object, key: str) -> MtaStsSettings:
        readers = {"enabled": _boolean, "ca_file": self.path}
        return self.build(MtaStsSettings, _table(value, key), key, readers)

    def dane(self, value: object, key: str) -> DaneSettings:
        return self.build(DaneSettings, _table(value, key), key, {"enabled": _boolean})

    def tlsrpt(self, value: object, key: str) -> TlsRptSettings:
        readers = {"enabled": _boolean, "organization": _nonempty_string, "contact": _mailbox}
        return self.build(TlsRptSettings, _table(value, key), key, readers)

    def routes(self, value: object, key: str) -> Mapping[str, tuple[HostPort, ...]]:
        routes: dict[str, tuple[HostPort, ...]] = {}
        first_key: dict[str, str] = {}
        for domain_text, hops_value in _table(value, key).items():
            entry = _join(key, domain_text)
            domain = _domain(domain_text, entry)
            if domain in routes:
                raise ConfigError(f"the same domain as {first_key[domain]}", key=entry)
            hops = _items(hops_value, entry, _hostport)
            if not hops:
                raise ConfigError("needs at least one next hop", key=entry)
            routes[domain] = hops
            first_key[domain] = entry
        return types.MappingProxyType(routes)

    def client_tls(self, value: object, key: str) -> tuple[tuple[str, TlsConfig], ...]:
        entries: list[tuple[str, TlsConfig]] = []
        seen: dict[str, str] = {}
        for index, item in enumerate(_array(value, key)):
            entry = f"{key}[{index}]"
            table = _table(item, entry)
            _check_keys(table, entry, ["suffix", "mode", "certificate", "ca_file", "min_version"])
            if "suffix" not in table:
                raise ConfigError('required ("" matches every host)', key=f"{entry}.suffix")
            suffix = _string(table["suffix"], f"{entry}.suffix").strip().lower()
            if suffix.strip("."):
                try:
                    suffix = ("." if suffix.startswith(".") else "") + a_label(suffix.lstrip("."))
                except ValueError as exc:
                    raise ConfigError(
                        f"not a domain suffix: {table['suffix']!r} ({exc})", key=f"{entry}.suffix"
                    ) from None
            else:
                suffix = ""
            if suffix in seen:
                raise ConfigError(
                    f"the same suffix as {seen[suffix]}, which wins", key=f"{entry}.suffix"
                )
            seen[suffix] = f"{entry}.suffix"
            settings = TlsConfig(
                mode=_choice(TlsMode, table.get("mode", "if_available"), f"{entry}.mode"),
                certificate=_choice(
                    CertificateCheck, table.get("certificate", "ignore"), f"{entry}.certificate"
                ),
                ca_file=(
                    str(self.path(table["ca_file"], f"{entry}.ca_file"))
                    if "ca_file" in table
                    else None
                ),
                min_version=(
                    _tls_version(table["min_version"], f"{entry}.min_version")
                    if "min_version" in table
                    else None
                ),
            )
            entries.append((suffix, settings))
        return tuple(entries)

    def credentials(self, value: object, key: str) -> Mapping[str, HostCredentials]:
        result: dict[str, HostCredentials] = {}
        first_key: dict[str, str] = {}
        for host_text, item in _table(value, key).items():
            entry = _join(key, host_text)
            host = _host(host_text, entry)
            if host in result:
                raise ConfigError(f"the same host as {first_key[host]}", key=entry)
            table = _table(item, entry)
            _check_keys(table, entry, ["username", "password", "password_file"])
            if "username" not in table:
                raise ConfigError("required", key=f"{entry}.username")
            username = _nonempty_string(table["username"], f"{entry}.username")
            if "password" in table and "password_file" in table:
                raise ConfigError("set password or password_file, not both", key=entry)
            if "password" in table:
                password = _string(table["password"], f"{entry}.password")
            elif "password_file" in table:
                password = self.password_file(table["password_file"], f"{entry}.password_file")
            else:
                raise ConfigError("needs password or password_file", key=entry)
            try:
                Credentials.login(username, password)
            except ValueError as exc:
                raise ConfigError(f"unusable login: {exc}", key=entry) from None
            result[host] = HostCredentials(username=username, password=password)
            first_key[host] = entry
        return types.MappingProxyType(result)

    def password_file(self, value: object, key: str) -> str:
        path = self.path(value, key)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read {str(path)!r}: {detail}", key=key) from None
        password = text.splitlines()[0] if text else ""
        if not password:
            raise ConfigError(f"{str(path)!r}: the first line (the password) is empty", key=key)
        return password

    def dkim(self, table: dict[str, object]) -> DkimSettings:
        return self.build(DkimSettings, table, "dkim", {"sign": self.dkim_sign})

    def dkim_sign(self, value: object, key: str) -> tuple[DkimSign, ...]:
        entries: list[DkimSign] = []
        seen: dict[tuple[str, str], str] = {}
        for index, item in enumerate(_array(value, key)):
            entry = f"{key}[{index}]"
            table = _table(item, entry)
            _check_keys(table, entry, ["domain", "selector", "key_file", "headers", "oversign"])
            for required in ("domain", "selector", "key_file"):
                if required not in table:
                    raise ConfigError("required", key=f"{entry}.{required}")
            domain = _domain(table["domain"], f"{entry}.domain")
            selector = _selector(table["selector"], f"{entry}.selector")
            if (domain, selector) in seen:
                raise ConfigError(
                    f"the same domain and selector as {seen[domain, selector]}", key=entry
                )
            seen[domain, selector] = entry
            values: dict[str, Any] = {}
            for name in ("headers", "oversign"):
                if name in table:
                    values[name] = _field_names(table[name], f"{entry}.{name}")
            if "from" not in (*values.get("headers", ("from",)), *values.get("oversign", ())):
                raise ConfigError("must include From (RFC 6376 5.4)", key=f"{entry}.headers")
            key_file = self.path(table["key_file"], f"{entry}.key_file")
            entries.append(DkimSign(domain=domain, selector=selector, key_file=key_file, **values))
        return tuple(entries)

    def inbound(self, table: dict[str, object]) -> InboundSettings:
        return self.build(
            InboundSettings,
            table,
            "inbound",
            {
                "listeners": lambda v, k: tuple(dict.fromkeys(_items(v, k, _judged_listener))),
                "authserv_id": _domain,
                "spf_reject_fail": _boolean,
                "dmarc_reject": lambda v, k: _choice(DmarcAction, v, k),
                "dmarc_quarantine": lambda v, k: _choice(DmarcAction, v, k),
                "arc_trusted_sealers": lambda v, k: tuple(_items(v, k, _domain)),
                "arc_seal": self.arc_seal,
            },
        )

    def arc_seal(self, value: object, key: str) -> ArcSealSettings:
        table = _table(value, key)
        _check_keys(table, key, ["domain", "selector", "key_file", "headers"])
        for required in ("domain", "selector", "key_file"):
            if required not in table:
                raise ConfigError("required", key=f"{key}.{required}")
        headers = {}
        if "headers" in table:
            headers["headers"] = _field_names(table["headers"], f"{key}.headers")
            if "from" not in headers["headers"]:
                raise ConfigError("must include From (RFC 8617 4.1.2)", key=f"{key}.headers")
        return ArcSealSettings(
            domain=_domain(table["domain"], f"{key}.domain"),
            selector=_selector(table["selector"], f"{key}.selector"),
            key_file=self.path(table["key_file"], f"{key}.key_file"),
            **headers,
        )

    def dns(self, table: dict[str, object]) -> DnsSettings:
        return self.build(
            DnsSettings,
            table,
            "dns",
            {"nameservers": lambda v, k: _items(v, k, _nameserver), "timeout": _duration},
        )

    def dnsbl(self, table: dict[str, object]) -> DnsblSettings:
        readers = {
            "zones": lambda v, k: tuple(
                self.dnsbl_zone(item, f"{k}[{i}]") for i, item in enumerate(_array(v, k))
            ),
            "threshold": _number,
            "listeners": lambda v, k: tuple(dict.fromkeys(_items(v, k, _judged_listener))),
            "timeout": _duration,
        }
        return self.build(DnsblSettings, table, "dnsbl", readers)

    def dnsbl_zone(self, value: object, key: str) -> DnsblZone:
        table = _table(value, key)
        if "zone" not in table:
            raise ConfigError("required", key=f"{key}.zone")
        codes: dict[str, float] = {}
        for code, weight in _table(table.get("codes", {}), f"{key}.codes").items():
            entry = _join(f"{key}.codes", code)
            try:
                address = ipaddress.IPv4Address(code)
            except ValueError:
                raise ConfigError(
                    "an answer is an IPv4 address like 127.0.0.2", key=entry
                ) from None
            codes[str(address)] = _number(weight, entry)
        readers = {"zone": _domain, "weight": _number, "codes": lambda v, k: codes}
        return self.build(DnsblZone, table, key, readers)

    def rate_limits(self, table: dict[str, object]) -> RateLimitSettings:
        readers = {
            "rules": lambda v, k: tuple(
                self.rate_rule(item, f"{k}[{i}]") for i, item in enumerate(_array(v, k))
            ),
            "listeners": lambda v, k: tuple(dict.fromkeys(_items(v, k, _judged_listener))),
            "exempt_trusted_networks": _boolean,
        }
        return self.build(RateLimitSettings, table, "rate_limits", readers)

    def rate_rule(self, value: object, key: str) -> RateRule:
        table = _table(value, key)
        if "by" not in table:
            raise ConfigError(f"required: one of {', '.join(RATE_KEYS)}", key=f"{key}.by")
        if "messages" not in table and "recipients" not in table:
            raise ConfigError("set messages, recipients or both", key=key)
        readers = {
            "by": lambda v, k: _word(RATE_KEYS, v, k),
            "messages": _positive_int,
            "recipients": _positive_int,
            "window": _duration,
            "ipv4_prefix": _prefix(32),
            "ipv6_prefix": _prefix(128),
        }
        return self.build(RateRule, table, key, readers)

    def greylist(self, table: dict[str, object]) -> GreylistSettings:
        readers = {
            "enabled": _boolean,
            "listeners": lambda v, k: tuple(dict.fromkeys(_items(v, k, _judged_listener))),
            "delay": _duration,
            "retry_window": _duration,
            "expire": _duration,
            "ipv4_prefix": _prefix(32),
            "ipv6_prefix": _prefix(128),
        }
        return self.build(GreylistSettings, table, "greylist", readers)

    def milters(self, value: object) -> tuple[MilterSettings, ...]:
        milters = tuple(
            self.milter(item, f"milters[{i}]") for i, item in enumerate(_array(value, "milters"))
        )
        names = [milter.name for milter in milters]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ConfigError(f"a second milter named {name!r}", key=f"milters[{index}]")
        return milters

    def milter(self, value: object, key: str) -> MilterSettings:
        table = _table(value, key)
        for required in ("name", "address"):
            if required not in table:
                raise ConfigError("required", key=f"{key}.{required}")
        readers = {
            "name": _nonempty_string,
            "address": _milter_address,
            "default_action": lambda v, k: _word(MILTER_DEFAULT_ACTIONS, v, k),
            "connect_timeout": _duration,
            "command_timeout": _duration,
            "content_timeout": _duration,
        }
        return self.build(MilterSettings, table, key, readers)

    def redis(self, table: dict[str, object]) -> RedisSettings:
        def url(value: object, key: str) -> str:
            text = _nonempty_string(value, key)
            if not text.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError("a redis://, rediss:// or unix:// URL", key=key)
            return text

        readers = {"url": url, "timeout": _duration, "key_prefix": _string}
        return self.build(RedisSettings, table, "redis", readers)

    def control(self, table: dict[str, object]) -> ControlSettings:
        return self.build(
            ControlSettings,
            table,
            "control",
            {"socket": self.path, "http": self.control_http, "token_file": self.path},
        )

    def control_http(self, value: object, key: str) -> ListenAddress:
        address = _listen(value, key, 8025)
        if not address.is_loopback:
            raise ConfigError(
                f"must be a loopback address (like 127.0.0.1:8025), got {value!r}", key=key
            )
        return address

    def log(self, table: dict[str, object]) -> LogSettings:
        return self.build(
            LogSettings,
            table,
            "log",
            {
                "level": lambda v, k: _word(LOG_LEVELS, v, k),
                "format": lambda v, k: _word(LOG_FORMATS, v, k),
                "fingerprints": _boolean,
            },
        )

    # -- across sections -----------------------------------------------------------------

    def check_consistency(self, config: MtaConfig) -> None:
        server = config.server
        if config.tls.key_file is not None and config.tls.cert_file is None:
            raise ConfigError("set, but tls.cert_file is not", key="tls.key_file")
        if server.smtps and not config.tls.enabled:
            raise ConfigError("implicit-TLS listeners need tls.cert_file", key="server.smtps")
        if server.submission and not config.tls.enabled:
            raise ConfigError(
                "submission listeners need tls.cert_file (STARTTLS is required there)",
                key="server.submission",
            )
        if server.submission and config.auth.users_file is None:
            raise ConfigError(
                "submission listeners need auth.users_file (AUTH is required there)",
                key="server.submission",
            )
        if not (server.listen or server.smtps or server.submission or server.lmtp):
            raise ConfigError(
                "no listeners: server.listen, server.smtps, server.submission and server.lmtp "
                "are all empty",
                key="server.listen",
            )
        if config.routing.dane.enabled and config.routing.resolver is None:
            raise ConfigError(
                "DANE needs routing.resolver: the address of a DNSSEC-validating resolver "
                "you trust (its AD bit decides)",
                key="routing.dane.enabled",
            )
        if config.control.http is not None and config.control.token_file is None:
            raise ConfigError(
                "the HTTP control listener needs control.token_file (a bearer token)",
                key="control.http",
            )
        listening = {
            str(a) for a in (*server.listen, *server.smtps, *server.submission, *server.lmtp)
        }
        for index, entry in enumerate(config.inbound.listeners):
            if entry not in _LISTENER_KINDS and entry not in listening:
                raise ConfigError(
                    f"{entry} is not a listener of [server]", key=f"inbound.listeners[{index}]"
                )
        self.check_proxied(server)
        seen: dict[tuple[str, int], str] = {}
        for kind in ("listen", "smtps", "submission", "lmtp"):
            addresses: tuple[ListenAddress, ...] = getattr(server, kind)
            for index, address in enumerate(addresses):
                key = f"server.{kind}[{index}]"
                where = (address.host, address.port)
                if address.port != 0 and where in seen:
                    raise ConfigError(f"{address} is already {seen[where]}", key=key)
                seen[where] = key

    def check_proxied(self, server: ServerSettings) -> None:
        plain = {str(a) for a in (*server.listen, *server.submission)}
        for index, address in enumerate(server.proxied):
            if str(address) not in plain:
                why = (
                    "an implicit-TLS listener cannot read a PROXY header (TLS starts first)"
                    if str(address) in {str(a) for a in server.smtps}
                    else "not an address of server.listen or server.submission"
                )
                raise ConfigError(f"{address}: {why}", key=f"server.proxied[{index}]")
        if server.proxied and not server.proxy_from:
            raise ConfigError(
                "proxied listeners need proxy_from: the addresses of the load balancers",
                key="server.proxy_from",
            )


# ---------------------------------------------------------------------------------------
# The configuration


def _fqdn() -> str:
    return socket.getfqdn()  # looked up at each call, so that tests can replace it


@dataclass(frozen=True, slots=True, kw_only=True)
class MtaConfig:
    """Everything ``smtpx serve`` needs to know (see the module docstring).

    Build it with :meth:`load`, :meth:`from_toml`, :meth:`from_dict` or :meth:`default`:
    they validate and make paths absolute. ``source`` is the file it was read from.
    """

    hostname: str = field(default_factory=_fqdn)
    server: ServerSettings = field(default_factory=ServerSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    dnsbl: DnsblSettings = field(default_factory=DnsblSettings)
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    greylist: GreylistSettings = field(default_factory=GreylistSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    milters: tuple[MilterSettings, ...] = ()
    control: ControlSettings = field(default_factory=ControlSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: Path | None = field(default=None, compare=False)

    # -- named constructors --------------------------------------------------------------

    @classmethod
    def default(cls, *, base_dir: Path | str | None = None) -> MtaConfig:
        """The embedded defaults (:data:`DEFAULT_TOML`): listen on 127.0.0.1:2525, spool
        under ``./var/spool``, deliver by MX. Paths are relative to ``base_dir`` (by
        default the current directory)."""
        return cls.from_dict({}, base_dir=base_dir)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        *,
        base_dir: Path | str | None = None,
        source: Path | None = None,
    ) -> MtaConfig:
        """Validate a parsed TOML document. Relative paths are relative to ``base_dir``
        (by default the current directory). Raises :class:`~smtpx.errors.ConfigError`."""
        base = Path.cwd() if base_dir is None else Path(base_dir).expanduser().absolute()
        return _Loader(base).config(data, source)

    @classmethod
    def from_toml(cls, text: str, *, base_dir: Path | str | None = None) -> MtaConfig:
        """Parse and validate TOML text (see :meth:`from_dict`)."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}") from None
        return cls.from_dict(document, base_dir=base_dir)

    @classmethod
    def load(cls, path: Path | str) -> MtaConfig:
        """Read a TOML file; relative paths in it are relative to its directory. Errors
        name the file, then the key path."""
        file = Path(path).expanduser().absolute()
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read the config file: {detail}", file=str(file)) from None
        try:
            document = tomllib.loads(text)
            return cls.from_dict(document, base_dir=file.parent, source=file)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=str(file)) from None
        except ConfigError as exc:
            raise ConfigError(exc.problem, key=exc.key, file=str(file)) from None

    def check_consistency(self) -> None:
        """The rules across sections that loading checks (ConfigError), for a config
        put together otherwise (a reload keeps some running values)."""
        _Loader(Path.cwd()).check_consistency(self)

    # -- the lower layers' objects -------------------------------------------------------

    def check_files(self) -> None:
        """Check that the files the server reads at start exist and are readable (TLS
        certificate and key, users file, control token, DKIM and ARC sealing keys, which
        must parse as keys DKIM can use, the recipients file, which must parse); raise
        ConfigError naming the key (or the file and line). Loading a
        config does not require them, so configs can be checked before deployment."""
        files = (
            ("tls.cert_file", self.tls.cert_file),
            ("tls.key_file", self.tls.key_file),
            ("tls", None),  # the pair loads together
            ("auth.users_file", self.auth.users_file),
            ("control.token_file", self.control.token_file),
        )
        for key, path in files:
            if key == "tls" and self.tls.cert_file is not None:
                try:
                    self.tls.check_pair()
                except ValueError as exc:
                    raise ConfigError(str(exc), key="tls.cert_file") from None
            if path is None:
                continue
            try:
                with open(path, "rb") as file:
                    content = file.read(65536)
            except OSError as exc:
                raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
            if key == "control.token_file" and not content.strip():
                raise ConfigError(f"{path} is empty (it must hold the bearer token)", key=key)
        if self.dkim.sign:
            # Loading keys needs cryptography and dkimpy: not for every config reader.
            from smtpx.mta.dkim import DkimSigner  # noqa: PLC0415

            DkimSigner.from_settings(self.dkim.sign)
        if self.inbound.arc_seal is not None:
            from smtpx.mta.inbound.arc import ArcSealer  # noqa: PLC0415

            ArcSealer.from_settings(self.inbound.arc_seal)
        if self.local.recipients_file is not None:
            from smtpx.mta.recipients import RecipientTable  # noqa: PLC0415

            RecipientTable.from_config(self)  # reads and parses the file

    def server_tls(self) -> ServerTls | None:
        """The server certificate settings, or None when no certificate is set."""
        if self.tls.cert_file is None:
            return None
        return ServerTls(
            cert_file=str(self.tls.cert_file),
            key_file=None if self.tls.key_file is None else str(self.tls.key_file),
            min_version=self.tls.min_version,
        )

    def listeners(self) -> tuple[Listener, ...]:
        """One :class:`~smtpx.server.Listener` per address of ``listen``, ``smtps``,
        ``submission`` and ``lmtp``, in that order, named ``"<kind> <host:port>"`` (see
        :func:`listener_kind`)."""
        kinds = (
            (ListenerKind.SMTP, self.server.listen),
            (ListenerKind.SMTPS, self.server.smtps),
            (ListenerKind.SUBMISSION, self.server.submission),
            (ListenerKind.LMTP, self.server.lmtp),
        )
        proxied = {str(address) for address in self.server.proxied}
        fds = iter(self.server.listen_fds)
        return tuple(
            Listener(
                host=address.host,
                port=address.port,
                implicit_tls=kind is ListenerKind.SMTPS,
                max_sessions=self.server.max_sessions_per_listener,
                name=f"{kind.value} {address}",
                require_tls=kind is ListenerKind.SUBMISSION,
                require_auth=kind is ListenerKind.SUBMISSION,
                lmtp=kind is ListenerKind.LMTP,
                proxied=kind is not ListenerKind.SMTPS and str(address) in proxied,
                proxy_from=self.server.proxy_from,
                fd=next(fds, None),
            )
            for kind, addresses in kinds
            for address in addresses
        )

    def server_config(self) -> ServerConfig:
        """The receiving side's :class:`~smtpx.server.ServerConfig`: listeners, TLS,
        limits and timeouts."""
        return ServerConfig(
            listeners=self.listeners(),
            hostname=self.hostname,
            tls=self.server_tls(),
            max_message_size=self.server.max_message_size,
            max_recipients=self.server.max_recipients,
            bare_newlines=self.server.bare_newlines,
            auth_without_tls=self.auth.allow_plaintext,
            command_timeout=self.server.command_timeout,
            data_timeout=self.server.data_timeout,
            min_data_rate=self.server.min_data_rate or None,
            data_rate_grace=self.server.data_rate_grace,
            client_limits=self.client_limits(),
            dsn=self.server.dsn,
            spill_threshold=self.server.spill_threshold,
            max_buffered=self.server.max_buffered,
            proxy_timeout=self.server.proxy_timeout,
            max_spilled=self.server.max_spilled,
            fingerprints=self.log.fingerprints,
            addresses=AddressGrammar(
                lenient=self.server.lenient_addresses, default_domain=self.server.default_domain
            ),
            # The spool's disk, not /tmp (often a tmpfs: memory again).
            spill_directory=str(self.spool.dir),
            # A worker without its supervisor's sockets binds its own next to the others'.
            reuse_port=self.server.workers > 1 and not self.server.listen_fds,
        )

    def client_limits(self) -> ClientLimits:
        """The per-client limits of ``[server]``; 0 is no limit."""
        server = self.server
        return ClientLimits(
            max_sessions=server.max_sessions_per_client or None,
            max_rate=server.max_connection_rate_per_client or None,
            exempt=self.relay.trusted_networks if server.exempt_trusted_networks else (),
        )

    def cache_config(self) -> CacheConfig:
        """The outbound connection cache's limits and the sessions it keeps warm: to the
        smarthost and to each explicit route's first hop, under the key a delivery there
        asks for (its route name and the hop's credentials)."""
        routing = self.routing
        if not routing.warm_connections:
            return CacheConfig()
        routes = [(str(routing.smarthost), routing.smarthost)] if routing.smarthost else []
        routes += [(name, hops[0]) for name, hops in routing.routes.items()]
        keys = tuple(CacheKey(hop, self.credentials_for(hop.host), name) for name, hop in routes)
        return CacheConfig(keep_warm=keys, warm_connections=routing.warm_connections)

    def client_config(self) -> ClientConfig:
        """The sending side's :class:`~smtpx.client.ClientConfig`: our name in EHLO and
        the TLS policy per destination, BDAT or not."""
        routing = self.routing
        return ClientConfig(helo_name=self.hostname, tls=routing.tls, chunking=routing.chunking)

    def credentials_for(self, host: str) -> Credentials | None:
        """The login for the outbound ``host`` (exact host match, any case, U- or
        A-labels, brackets around an IP allowed), or None."""
        found = self.routing.credentials.get(_host_key(host))
        return None if found is None else found.credentials()

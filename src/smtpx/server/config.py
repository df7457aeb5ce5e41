"""Server configuration: listeners, TLS, limits, timeouts."""

from __future__ import annotations

import enum
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from smtpx.io.tls import server_context
from smtpx.protocol.data import BareNewlines
from smtpx.protocol.lenient import STRICT, AddressGrammar
from smtpx.server.limits import ClientLimits, IPNetwork

__all__ = ["Listener", "MalformedMessages", "ServerConfig", "ServerTls"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """One listening socket.

    ``host`` is an address ("0.0.0.0" or "::" for every interface, "127.0.0.1", "::1", a
    given IP); ``port`` 0 lets the OS choose (see :attr:`Server.ports`). ``implicit_tls``
    makes it an SMTPS listener (TLS from the first byte, port 465, RFC 8314).
    ``max_sessions`` caps concurrent sessions: one more gets ``421 4.7.0`` and is closed.
    ``require_tls``: until STARTTLS, every command but NOOP, EHLO, HELO, STARTTLS and QUIT
    gets ``530 5.7.0`` (RFC 3207 section 4; an implicit-TLS listener always has TLS).
    ``require_auth``: until AUTH succeeds, every command but AUTH, EHLO, HELO, NOOP, RSET,
    STARTTLS and QUIT gets ``530 5.7.0`` (RFC 4954 section 6). A submission listener
    (RFC 6409) sets both. ``lmtp``: the listener speaks LMTP (RFC 2033: LHLO, and one
    reply per recipient at the end of each message, from the plugin's ``process_lmtp``).
    ``proxied``: every connection starts with a PROXY protocol header (v1 or v2) naming
    the real client, and may come only from ``proxy_from``; anything else is closed
    with ``421 4.7.0`` before the greeting (see :mod:`smtpx.server.proxy`).
    ``fd``: a bound socket shared with other processes (its file descriptor), to serve
    instead of binding ``host:port``: it listens once the server serves, and each
    process takes connections when it is free (:mod:`smtpx.io.accept`). The workers of
    ``smtpx serve`` get their supervisor's.
    """

    host: str = "127.0.0.1"
    port: int = 0
    implicit_tls: bool = False
    max_sessions: int | None = 1000
    name: str = ""
    require_tls: bool = False
    require_auth: bool = False
    lmtp: bool = False
    proxied: bool = False
    proxy_from: Sequence[IPNetwork] = ()
    fd: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return self.name or f"{host}:{self.port}{' (tls)' if self.implicit_tls else ''}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTls:
    """The server's certificate; enables STARTTLS (and implicit-TLS listeners)."""

    cert_file: str
    key_file: str | None = None
    ca_file: str | None = None
    min_version: str | None = None
    ciphers: str | None = None

    def context(self) -> ssl.SSLContext:
        return server_context(
            cert_file=self.cert_file,
            key_file=self.key_file,
            ca_file=self.ca_file,
            min_version=self.min_version,
            ciphers=self.ciphers,
        )


class MalformedMessages(enum.Enum):
    """What to do with content that is not an RFC 5322 message (F26)."""

    REJECT = "reject"  # 550 5.6.0
    WRAP = "wrap"  # accept it wrapped as text/plain, with an X-Smtpx-Parse-Error header


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """How the server behaves. Limits cite their RFC; timeouts are seconds.

    * ``max_message_size``: advertised with SIZE and enforced while reading (RFC 1870).
    * ``max_recipients``: per transaction; more get ``452 4.5.3`` (RFC 5321 4.5.3.1.10).
    * ``max_errors``: refused commands per session before ``421`` and a hang-up.
    * ``max_junk_commands``: NOOP, RSET, VRFY, EXPN and HELP a session may send between
      two accepted messages; each one past it also counts as an error (Postfix's
      ``smtpd_junk_command_limit``, 100 too), so a client that only idles this way is
      let go at the error budget.
    * ``max_auth_failures``: failed AUTH attempts per session before ``421``.
    * ``auth_without_tls``: offer AUTH on a plaintext connection (RFC 4954 section 4 says
      a server SHOULD NOT accept plaintext passwords without TLS).
    * ``command_timeout``: a command must be complete within it, counted from when the
      server began waiting for it: bytes trickling in do not extend it (RFC 5321
      4.5.3.2.7 asks servers to wait at least 5 minutes).
    * ``data_timeout``: the longest wait for more message content (4.5.3.2.6 asks
      for 3 minutes at least).
    * ``min_data_rate``: octets a second that message content must average once
      ``data_rate_grace`` seconds have passed; slower gets ``421 4.4.2``. None: no minimum.
    * ``client_limits``: concurrent sessions and new connections a minute per client
      (IPv4 address or IPv6 /64), beyond which a connection gets ``421 4.7.0``; see
      :class:`~smtpx.server.limits.ClientLimits` (20 sessions, 60 a minute, loopback
      exempt).
    * ``proxy_timeout``: on a ``proxied`` listener, the longest wait for the PROXY
      header (Postfix's ``smtpd_upstream_proxy_timeout`` is 5 s too).
    * ``close_timeout``: once :meth:`Server.close` has begun, how long a session may
      still take to finish its transaction.
    * ``spill_threshold``: octets of a message kept in memory; the rest goes to an
      anonymous file in ``spill_directory`` (None: the system's temporary directory), and
      the plugin gets an envelope whose ``content`` is a
      :class:`~smtpx.content.SpilledMessage`. ``max_buffered``: octets of content all the
      sessions together keep in memory; past it a message is spilled at once.
      ``max_spilled``: octets all the sessions together keep in files (None: no limit);
      a transaction that would pass it gets ``452 4.3.1`` and the session goes on (F25).
    * ``fingerprints``: the mail log's ``accepted`` line carries the message's
      :mod:`~smtpx.fingerprint` (header fields, an MD5 per MIME leaf; F115).
    * ``reuse_port``: listen with ``SO_REUSEPORT``, so that several processes accept on
      the same addresses (the kernel spreads the connections; ``[server] workers``).
    * ``addresses``: the paths MAIL and RCPT take: strict RFC 5321 by default; an
      :class:`~smtpx.protocol.lenient.AddressGrammar` adds a ``default_domain`` for
      domainless addresses, or async_smtp's lenient forms (F8, F10).
    """

    listeners: Sequence[Listener] = (Listener(),)
    hostname: str | None = None  # default: the plugin's hostname
    tls: ServerTls | None = None
    tls_context: ssl.SSLContext | None = field(default=None, compare=False)
    max_message_size: int = 35 * 1024 * 1024
    max_recipients: int = 1000
    max_errors: int = 20
    max_junk_commands: int = 100
    max_auth_failures: int = 3
    max_command_line: int = 2048
    max_text_line: int | None = 1000
    bare_newlines: BareNewlines = BareNewlines.REJECT
    malformed: MalformedMessages = MalformedMessages.REJECT
    require_helo: bool = False
    auth_without_tls: bool = False
    dsn: bool = False  # advertise DSN (the plugin then honours NOTIFY/RET/ENVID/ORCPT)
    command_timeout: float = 300.0
    data_timeout: float = 300.0
    min_data_rate: float | None = 500.0
    data_rate_grace: float = 60.0
    close_timeout: float = 10.0
    proxy_timeout: float = 5.0
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    spill_threshold: int = 256 * 1024
    spill_directory: str | None = None
    max_buffered: int = 64 * 1024 * 1024
    max_spilled: int | None = None
    fingerprints: bool = False
    reuse_port: bool = False
    addresses: AddressGrammar = STRICT

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_context is not None:
            return self.tls_context
        return None if self.tls is None else self.tls.context()

"""Server plugins: typed async hooks with a do-nothing base class.

Subclass :class:`Plugin` and override what you need::

    class Relay(Plugin):
        async def rcpt_to(self, session, transaction, recipient, params):
            if recipient.domain.lower() not in LOCAL_DOMAINS and not session.authenticated:
                raise Reject(replies.relay_denied())

        async def process(self, session, transaction, envelope):
            queue_id = await spool.add(envelope)      # durable before the 250
            return f"Ok: queued as {queue_id}"

A hook refuses by raising :class:`Reject` with the reply to send. Any other exception is
logged and answered with ``451 4.3.0`` (the client will retry); it never ends the server.
After a refused or failed ``connect`` or ``helo``, the session ends; after any other
hook, it goes on. ``disconnect`` is called exactly once for every session that
``connect`` let in.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smtpx.auth import LoginServer, PlainServer, ServerMechanism
from smtpx.envelope import Envelope, EnvelopeId
from smtpx.errors import SMTPXError
from smtpx.maillog import Flows
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.params import MailParams, RcptParams
from smtpx.protocol.replies import Reply

if TYPE_CHECKING:
    from aiohttp.web import AbstractRouteDef

__all__ = [
    "Offer",
    "Plugin",
    "Reject",
    "Session",
    "Transaction",
    "password_mechanisms",
]


class Reject(SMTPXError):
    """Raised by a plugin hook to answer with ``reply`` instead of going on."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(eq=False)
class Session:
    """One client connection, as the server sees it. Plugins may keep their own state in
    ``data``."""

    id: str
    local: tuple[str, int] | None
    remote: tuple[str, int] | None
    listener: str = ""
    lmtp: bool = False  # an LMTP session (RFC 2033): process_lmtp answers its messages
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    tls_version: str | None = None
    authenticated: bool = False
    user: str | None = None  # who authenticated (set by the mechanism's on_success)
    # The user name the AUTH under way (or the last one) gave, whether or not it
    # succeeds: for the log of a failed AUTH. Set by password_mechanisms' checks.
    auth_name: str | None = None
    data: dict[str, object] = field(default_factory=dict)
    flows: Flows = field(default_factory=Flows)  # a ``srv##`` id for the mail log
    # On a proxied listener, the load balancer that connected (``remote`` is the client
    # its PROXY header named).
    proxy_peer: tuple[str, int] | None = None

    def login(self, user: str) -> Session:
        """Record a successful authentication (an ``on_success`` for server mechanisms)."""
        self.authenticated = True
        self.user = user
        return self

    @property
    def remote_ip(self) -> str | None:
        return None if self.remote is None else self.remote[0]


@dataclass(eq=False)
class Transaction:
    """The mail transaction being built (MAIL FROM to the end of the data)."""

    id: EnvelopeId
    sender: Sender
    params: MailParams
    recipients: list[Address] = field(default_factory=list)
    recipient_params: list[RcptParams] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)
    flows: Flows = field(default_factory=Flows)  # the session's flows plus an ``in##`` id


@dataclass(frozen=True, slots=True)
class Offer:
    """What a session is offered in the EHLO reply, beyond the server's own extensions.

    ``starttls`` only counts when the server has a TLS certificate; ``auth`` lists the
    SASL mechanisms (their order is the order advertised).
    """

    starttls: bool = True
    auth: Sequence[ServerMechanism[Session]] = ()


PasswordCheck = Callable[[Session, str, str], "bool | Awaitable[bool]"]


def password_mechanisms(check: PasswordCheck) -> list[ServerMechanism[Session]]:
    """PLAIN and LOGIN over one ``check(session, username, password)``; a successful
    login is recorded on the session (``session.user``), and the name each attempt gave
    too (``session.auth_name``, for the log of a failure). PLAIN's authorization
    identity is refused unless it is the username itself."""

    # The mechanisms await an awaitable result themselves, and refuse a non-bool one.
    def login(session: Session, username: str, password: str) -> bool | Awaitable[bool]:
        session.auth_name = username
        return check(session, username, password)

    def plain(
        session: Session, username: str, password: str, on_behalf_of: str | None
    ) -> bool | Awaitable[bool]:
        session.auth_name = username
        if on_behalf_of is not None and on_behalf_of != username:
            return False
        return check(session, username, password)

    return [
        PlainServer(plain, on_success=Session.login),
        LoginServer(login, on_success=Session.login),
    ]


class Plugin:
    """The do-nothing plugin: every hook accepts. Override hooks to decide."""

    @functools.cached_property
    def hostname(self) -> str:
        """The name in the greeting and the EHLO reply (unless ``ServerConfig.hostname``
        is set); a subclass or an instance may set it instead. Looked up on first use, not
        when the module is imported: ``getfqdn`` may wait on DNS."""
        return socket.getfqdn()

    # -- session ---------------------------------------------------------------------

    async def connect(self, session: Session) -> None:
        """A client connected (raise :class:`Reject` to turn it away with that reply)."""

    def greeting(self, session: Session) -> str:
        """The text of the 220 greeting (after the host name)."""
        return "ESMTP smtpx"

    def greeting_delay(self, session: Session) -> float:
        """Seconds to wait, once connected, before the greeting (0: none). A client that
        talks in that time, which RFC 5321 section 3.1 forbids and spam software commonly
        does (Postfix's postscreen calls it PREGREET), gets ``554`` instead of the
        greeting and the connection is closed."""
        return 0.0

    def enforce_sync(self, session: Session) -> bool:
        """Whether a client must wait for the replies RFC 2920 section 3.1 says it must
        wait for: those to EHLO, HELO and DATA, and to every command of a session that
        was not offered PIPELINING (after HELO). One that sends more before such a reply
        (spam software commonly sends the message without waiting for the 354; Postfix's
        ``reject_unauth_pipelining``, Exim's ``smtp_enforce_sync``) gets ``554 5.5.0``
        and the connection is closed. Asked once, after :meth:`connect`. False: not
        checked."""
        return False

    async def helo(self, session: Session, name: str) -> None:
        """HELO or EHLO ``name`` (``session.esmtp`` tells which)."""

    def extensions(self, session: Session) -> Offer:
        """What to offer now: STARTTLS and AUTH mechanisms (asked at every EHLO)."""
        return Offer()

    async def unknown_command(self, session: Session, line: str) -> None:
        """A command line whose verb nothing defines (``line`` as sent, control characters
        shown as ``?``): answered ``500 5.5.1`` and counted as an error, unless this raises
        :class:`Reject` with another reply."""

    async def disconnect(self, session: Session) -> None:
        """The session ended (always called once; errors here are only logged)."""

    # -- envelope ----------------------------------------------------------------------

    async def mail_from(self, session: Session, transaction: Transaction) -> None:
        """MAIL FROM (``transaction.sender`` and ``.params`` are set)."""

    async def rcpt_to(
        self, session: Session, transaction: Transaction, recipient: Address, params: RcptParams
    ) -> None:
        """RCPT TO; on success the recipient is added to the transaction."""

    async def accept_data(self, session: Session, transaction: Transaction) -> None:
        """DATA (or the first BDAT), before the server takes the content."""

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        """The whole message arrived. Return the text of the ``250`` reply once the
        message is safe (spooled, relayed...).

        A large message arrives spilled to a file (``envelope.content`` is a
        :class:`~smtpx.content.SpilledMessage`; see ``ServerConfig.spill_threshold``): read
        it with ``envelope.chunks()`` (or whole with ``envelope.message``) before this
        returns, when the file is closed; keep ``envelope.in_memory()`` to use it later.

        The default refuses (``554 5.3.3``): a server must never say 250 for mail it
        drops. A plugin that really wants to discard says so by overriding this.
        """
        raise Reject(Reply.of(554, "Message processing not implemented", "5.3.3"))

    async def process_lmtp(
        self, session: Session, transaction: Transaction, envelope: Envelope
    ) -> Sequence[Reply]:
        """The whole message arrived in an LMTP session (RFC 2033 4.2): return one reply
        per recipient of ``transaction.recipients``, in that order, each once that
        recipient's mail is safe (delivered, or spooled) or has failed.

        The default gives every recipient the answer of :meth:`process` (a 250 with its
        text; a :class:`Reject` raised here is every recipient's reply too).
        """
        text = await self.process(session, transaction, envelope)
        return [Reply.of(250, text, "2.0.0")] * len(transaction.recipients)

    # -- control plane -----------------------------------------------------------------

    def control_routes(self) -> Sequence[AbstractRouteDef]:
        """The plugin's own control endpoints (F35, F111): aiohttp routes
        (``aiohttp.web.get("/stats", handler)``...) that the control plane serves under
        ``/v1/plugin/`` (``GET /v1/plugin/stats``), behind its socket and token. Asked
        once, when the control plane is built. None by default."""
        return ()

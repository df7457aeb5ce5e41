"""A round trip through an external content filter (F126): send a message to a scanner
that speaks SMTP (amavisd, a Postfix with ``header_checks``, a milter host...), receive it
back, tagged by the scanner, and carry on with the original envelope::

    async with ContentFilter("127.0.0.1:10024") as scanner:
        # the scanner is configured to send what it accepts to 127.0.0.1:scanner.port
        checked = await scanner.send_receive(envelope)
        if checked.last_header("X-Spam-Flag") == "YES":
            ...

:meth:`ContentFilter.send_receive` adds an ``X-Smtpx-Tmp-Id`` field with a fresh token,
sends the message to the scanner, and waits for a message carrying that token to arrive
on the return listener. It returns the original envelope (sender, recipients, id) with the
message as it came back (the scanner's fields kept, its changes kept), minus that one
field. A message that comes back without a token we are waiting for is refused
(``550 5.7.1``); one that does not come back in time raises :class:`ContentFilterError`.
"""

from __future__ import annotations

import asyncio
import secrets
from types import TracebackType

from smtpx.client import ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope, HostPort
from smtpx.errors import SMTPXError
from smtpx.protocol.replies import Reply
from smtpx.server import Listener, Plugin, Reject, Server, ServerConfig, Session, Transaction

__all__ = ["TAG", "ContentFilter", "ContentFilterError"]

TAG = "X-Smtpx-Tmp-Id"
# Loopback to a local scanner: no TLS unless the caller's client configuration says so.
_PLAIN = ClientConfig(tls=(("", TlsConfig(mode=TlsMode.NONE)),))


class ContentFilterError(SMTPXError):
    """The scanner refused the message, or did not send it back in time."""


class _Returns(Plugin):
    """The return listener: takes the messages we are waiting for, refuses the rest."""

    def __init__(self, waiting: dict[str, asyncio.Future[Envelope]]) -> None:
        self.waiting = waiting

    @property
    def hostname(self) -> str:
        return "content-filter-return"

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        token = envelope.last_header(TAG)
        future = self.waiting.get(token.strip()) if token else None
        if future is None or future.done():
            raise Reject(
                Reply.of(550, "Not a message this content filter round trip sent", "5.7.1")
            )
        future.set_result(envelope.in_memory())  # (its file closes when process returns)
        return "Ok: received back"


class ContentFilter:
    """Messages to the scanner at ``scanner``, and back on ``listen`` (port 0: any free
    one, then :attr:`port`); an async context manager."""

    def __init__(
        self,
        scanner: HostPort | str,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        client_config: ClientConfig | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.scanner = scanner if isinstance(scanner, HostPort) else HostPort.parse(scanner)
        self.client_config = client_config or _PLAIN
        self.timeout = timeout
        self._waiting: dict[str, asyncio.Future[Envelope]] = {}
        host, port = listen
        config = ServerConfig(listeners=[Listener(host=host, port=port, name="return")])
        self.server = Server(_Returns(self._waiting), config)

    @property
    def port(self) -> int:
        """Where the scanner must send the messages back (on ``listen``'s host)."""
        return self.server.ports[0]

    async def __aenter__(self) -> ContentFilter:
        await self.server.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.server.close()

    async def send_receive(self, envelope: Envelope, timeout: float | None = None) -> Envelope:
        """``envelope`` as it comes back from the scanner (see the module docstring)."""
        token = secrets.token_hex(16)
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self._send(envelope.add_header(TAG, token))
            wait = self.timeout if timeout is None else timeout
            try:
                async with asyncio.timeout(wait):
                    returned = await future
            except TimeoutError:
                raise ContentFilterError(
                    f"{self.scanner} did not send the message back within {wait:g}s "
                    f"(is it set to deliver to {self.server.config.listeners[0].host}:{self.port}?)"
                ) from None
        finally:
            del self._waiting[token]
        mine = returned.filter_headers(lambda name, value: not _is_tag(name, value, token))
        return Envelope(info=envelope.info, message=mine.message)

    async def _send(self, tagged: Envelope) -> None:
        scanner = self.scanner
        async with connect(scanner.host, scanner.port, config=self.client_config) as client:
            status = await client.send(tagged)
        if not status.ok or status.rejected:
            raise ContentFilterError(f"{scanner} refused the message: {status}")


def _is_tag(name: str, value: str, token: str) -> bool:
    return name.lower() == TAG.lower() and value.strip() == token

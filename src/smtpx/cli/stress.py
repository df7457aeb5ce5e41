"""The stress test of ``smtpx stress-test`` (F125): a server whose plugin sends every message
it receives back to itself, until enough messages have gone round.

Each of ``concurrent_senders`` clients keeps one session open and sends what the server
hands it; ``num_copies`` copies of each starting message circulate. The rate is messages
received per second, from the first send to the last ``250``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smtpx.client import CertificateCheck, ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.errors import SMTPXError
from smtpx.server import Listener, Plugin, Server, ServerConfig, ServerTls, Session, Transaction

__all__ = ["StressResult", "StressTest", "generated_message"]

STALL_SECONDS = 15.0  # no message received for this long: give up
MAX_SEND_ERRORS = 20


def generated_message(n: int = 0) -> Envelope:
    body = "".join(f"line {i:03d} of the smtpx stress test message\r\n" for i in range(40))
    return Envelope.create(
        sender="stress-test@example.com",
        recipients=["stress-test@example.net"],
        message=(
            "From: stress-test@example.com\r\n"
            "To: stress-test@example.net\r\n"
            f"Subject: smtpx stress test {n}\r\n"
            f"Message-ID: <stress-{n}@example.com>\r\n"
            "\r\n" + body
        ),
    )


@dataclass
class StressResult:
    received: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else float("inf")


class _Echo(Plugin):
    """Accepts everything and hands each message back to the senders."""

    def __init__(self, test: StressTest) -> None:
        self.test = test

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        self.test._received(envelope)
        return "Ok: going round again"


@dataclass
class StressTest:
    host: str = "127.0.0.1"
    port: int = 0
    messages: Sequence[Envelope] = ()
    send_n_messages: int = 1000
    num_copies: int = 1
    concurrent_senders: int = 1
    tls: bool = False
    on_listening: Callable[[int], None] = lambda port: None
    on_progress: Callable[[int], None] = lambda received: None
    received: int = 0
    _queue: asyncio.Queue[Envelope] = field(default_factory=asyncio.Queue)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _errors: list[str] = field(default_factory=list)

    def _received(self, envelope: Envelope) -> None:
        if self._done.is_set():
            return
        self.received += 1
        self.on_progress(self.received)
        if self.received >= self.send_n_messages:
            self._done.set()
        else:
            self._queue.put_nowait(envelope.in_memory())  # sent again after process()

    async def run(self) -> StressResult:
        with tempfile.TemporaryDirectory(prefix="smtpx-stress-") as tmp:
            server_tls, client_tls = self._tls(Path(tmp)) if self.tls else (None, None)
            config = ServerConfig(
                listeners=[Listener(host=self.host, port=self.port, max_sessions=None)],
                hostname="stress-test.invalid",
                tls=server_tls,
            )
            client = ClientConfig(
                helo_name="stress-test.invalid",
                tls=(("", client_tls or TlsConfig(mode=TlsMode.NONE)),),
                # F125: 2 s per reply, 5 s for the final OK.
                connect_timeout=5.0,
                greeting_timeout=2.0,
                command_timeout=2.0,
                data_start_timeout=2.0,
                data_block_timeout=2.0,
                final_reply_timeout=5.0,
            )
            async with Server(_Echo(self), config) as server:
                port = server.ports[0]
                self.on_listening(port)
                return await self._circulate(port, client)

    def _tls(self, directory: Path) -> tuple[ServerTls, TlsConfig]:
        """A CA and a server certificate made now (trustme); the client requires TLS and
        verifies the certificate against that CA."""
        import trustme  # noqa: PLC0415 - only for --tls

        ca = trustme.CA()
        names = list(dict.fromkeys([self.host, "127.0.0.1", "localhost"]))
        cert = ca.issue_cert(*names)
        cert_file, ca_file = directory / "server.pem", directory / "ca.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
        ca.cert_pem.write_to_path(str(ca_file))
        client = TlsConfig(
            mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=str(ca_file)
        )
        return ServerTls(cert_file=str(cert_file)), client

    async def _circulate(self, port: int, client: ClientConfig) -> StressResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(self.num_copies):
            for envelope in self.messages:
                self._queue.put_nowait(envelope)
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        senders = [
            asyncio.create_task(self._sender(host, port, client))
            for _ in range(self.concurrent_senders)
        ]
        try:
            last, last_change = self.received, loop.time()
            while not self._done.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._done.wait()
                if self.received != last:
                    last, last_change = self.received, loop.time()
                elif loop.time() - last_change > STALL_SECONDS:
                    self._errors.append(f"no message went round for {STALL_SECONDS:g}s")
                    break
                if len(self._errors) >= MAX_SEND_ERRORS:
                    break
            elapsed = loop.time() - start
        finally:
            self._done.set()
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
        return StressResult(self.received, elapsed, list(self._errors))

    async def _sender(self, host: str, port: int, config: ClientConfig) -> None:
        while not self._done.is_set():
            envelope: Envelope | None = None
            try:
                async with connect(host, port, config=config) as client:
                    while not self._done.is_set():
                        envelope = await self._queue.get()
                        status = await client.send(envelope)
                        if not status.ok:
                            self._errors.append(f"refused: {status}")
                            self._queue.put_nowait(envelope)
                        envelope = None
            except (SMTPXError, OSError, ssl.SSLError) as exc:
                self._errors.append(f"{type(exc).__name__}: {exc}")
                if envelope is not None:
                    self._queue.put_nowait(envelope)  # keep it in circulation
                if len(self._errors) >= MAX_SEND_ERRORS:
                    self._done.set()
                    return
                await asyncio.sleep(0.05)

"""The relay MTA: server -> spool -> client, composed from a :class:`MtaConfig`.

::

    async with Mta(MtaConfig.load("smtpx.toml")) as mta:
        await mta.wait_for_signal()     # SIGTERM or SIGINT: a clean shutdown

Shutting down stops accepting connections, lets sessions finish their transaction, lets
running deliveries finish, and closes the journal. Mail that was accepted but not yet
delivered stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from smtpx.auth import Credentials
from smtpx.envelope import HostPort
from smtpx.io.resolve import Resolver
from smtpx.mta.config import MtaConfig, SpoolBackend
from smtpx.mta.control import ControlPlane
from smtpx.mta.dkim import DkimSigner
from smtpx.mta.local import MaildirAgent
from smtpx.mta.relay import RelayPlugin
from smtpx.mta.routing import Dns, DnsPythonResolver, NoRoute, Route, Router
from smtpx.mta.routing import RouteLater as RouteLaterResult
from smtpx.mta.users import Users
from smtpx.server import Server
from smtpx.spool.message import SpooledMessage
from smtpx.spool.spool import (
    Destination,
    Hops,
    Local,
    RouteLater,
    Spool,
    SpoolConfig,
    Unroutable,
)

__all__ = ["Mta"]

log = logging.getLogger("smtpx.mta")


class Mta:
    """The relay: an async context manager that runs the server and the spool."""

    def __init__(
        self,
        config: MtaConfig,
        *,
        dns: Dns | None = None,
        resolver: Resolver | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.router = Router(config, dns or DnsPythonResolver())
        self.local = MaildirAgent(config.local.maildir, config.hostname)
        self.users = Users.load(config.auth.users_file) if config.auth.users_file else None
        settings = config.spool
        client_config = config.client_config()
        self.spool = Spool(
            SpoolConfig(
                directory=settings.dir,
                fsync=settings.fsync,
                retry_intervals=settings.retry_intervals,
                max_deliveries=settings.max_deliveries,
                max_per_destination=settings.max_per_destination,
                bounce=settings.bounce,
                reporting_mta=config.hostname,
                delay_warning_after=settings.delay_warning_after,
                failed_retention=settings.failed_retention,
                postgresql=(
                    settings.postgresql if settings.backend is SpoolBackend.POSTGRESQL else None
                ),
            ),
            client_config=client_config,
            router=self._route,
        )
        if resolver is not None:
            self.spool.cache.resolver = resolver
        # Loads the DKIM keys: a bad one is a ConfigError naming dkim.sign[N].key_file.
        dkim = DkimSigner.from_settings(config.dkim.sign) if config.dkim.sign else None
        relay = RelayPlugin(config, self.spool, self.users, dkim=dkim)
        self.server = Server(relay, config.server_config())
        self.shutdown_timeout = shutdown_timeout
        self._stop = asyncio.Event()
        control = config.control
        token = (
            control.token_file.read_text(encoding="utf-8").strip() if control.token_file else None
        )
        self.control = ControlPlane(
            self,
            socket_path=control.socket,
            http=None if control.http is None else (control.http.host, control.http.port),
            token=token,
        )

    async def __aenter__(self) -> Mta:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.spool.start()
        for problem in self.spool.problems:
            log.warning("spool: %s", problem.description)
        try:
            await self.server.start()
            await self.control.start()
        except BaseException:
            await self.server.close(0)
            await self.spool.kill_and_flush(0)
            raise

    async def close(self) -> None:
        """Stop taking mail, finish sessions and deliveries, close the spool."""
        await self.server.close()
        await self.spool.kill_and_flush(self.shutdown_timeout)
        await self.control.close()

    def stop(self) -> None:
        self._stop.set()

    def reload_tls(self) -> None:
        """Read the certificate and key files again. New handshakes (STARTTLS and implicit
        TLS listeners alike) use them; sessions already encrypted keep theirs."""
        context = self.server.tls_context
        settings = self.config.tls
        if context is None or settings.cert_file is None:
            raise ValueError("TLS is not configured ([tls] cert_file)")
        # Try the files on a scratch context first: a failed load_cert_chain on the live
        # one could leave it with the new certificate and the old key.
        try:
            settings.check_pair()
        except ValueError as exc:
            raise ValueError(f"{exc}; the previous certificate stays in use") from None
        key_file = None if settings.key_file is None else str(settings.key_file)
        context.load_cert_chain(str(settings.cert_file), key_file)

    async def wait_for_signal(self) -> None:
        """Run until SIGTERM or SIGINT (or :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _route(self, message: SpooledMessage) -> Destination:
        if message.next_hops:
            return Hops(message.hops(), "hops:" + ",".join(message.next_hops))
        domain = message.route or message.recipients[0].rpartition("@")[2]
        result = await self.router.route(domain)
        if isinstance(result, Route):
            if result.local:
                return Local(self.local)
            return Hops(result.hops, result.name, self._credentials(result.hops))
        if isinstance(result, NoRoute):
            return Unroutable(result.reply)
        assert isinstance(result, RouteLaterResult)
        return RouteLater(result.reason)

    def _credentials(self, hops: tuple[HostPort, ...]) -> Credentials | None:
        return self.config.credentials_for(hops[0].host) if hops else None

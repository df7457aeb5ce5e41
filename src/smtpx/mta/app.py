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
from pathlib import Path

from smtpx.auth import Credentials
from smtpx.envelope import Envelope, HostPort
from smtpx.io.resolve import Resolver
from smtpx.mta.config import MtaConfig, SpoolBackend, a_label
from smtpx.mta.control import ControlPlane
from smtpx.mta.dkim import DkimSigner
from smtpx.mta.local import MaildirAgent
from smtpx.mta.relay import RelayPlugin
from smtpx.mta.resolver import RoutingResolver
from smtpx.mta.routing import Dns, NoRoute, Route, Router
from smtpx.mta.routing import RouteLater as RouteLaterResult
from smtpx.mta.tlspolicy import TlsPolicies, https_context
from smtpx.mta.tlsrpt import TlsReporter, TlsRptLog
from smtpx.mta.users import Users
from smtpx.server import Server
from smtpx.spool.message import SpooledMessage
from smtpx.spool.spool import (
    Delivery,
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
        routing = config.routing
        # MX, MTA-STS, TLSA and MX address lookups: routing.resolver, or the system's.
        self.routing_dns = RoutingResolver.at(routing.resolver, trust_ad=routing.dane.enabled)
        self.router = Router(config, dns or self.routing_dns)
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
                cache=config.cache_config(),
                postgresql=(
                    settings.postgresql if settings.backend is SpoolBackend.POSTGRESQL else None
                ),
            ),
            client_config=client_config,
            router=self._route,
        )
        if resolver is not None:
            self.spool.cache.resolver = resolver
        elif routing.resolver is not None:
            self.spool.cache.resolver = self.routing_dns
        # Loads the DKIM keys: a bad one is a ConfigError naming dkim.sign[N].key_file.
        dkim = DkimSigner.from_settings(config.dkim.sign) if config.dkim.sign else None
        self.dkim = dkim
        self._tls_setup()
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

    def _tls_setup(self) -> None:
        """Outbound TLS policies (MTA-STS, DANE) and TLS-RPT, as configured."""
        routing = self.config.routing
        self.tls_reports: TlsRptLog | None = None
        self.tls_reporter: TlsReporter | None = None
        self._reporting: asyncio.Task[None] | None = None
        if routing.tlsrpt.enabled:
            self.tls_reports = TlsRptLog(Path(self.config.spool.dir) / "tlsrpt")
            hostname = self.config.hostname
            self.tls_reporter = TlsReporter(
                log=self.tls_reports,
                dns=self.routing_dns,
                submit=self._submit_report,
                submitter=hostname,
                organization=routing.tlsrpt.organization or hostname,
                contact=routing.tlsrpt.contact or f"postmaster@{hostname}",
                ssl_context=https_context(routing.mta_sts.ca_file),
            )
        self.tls_policies: TlsPolicies | None = None
        if routing.mta_sts.enabled or routing.dane.enabled:
            record = None if self.tls_reports is None else self.tls_reports.record
            self.tls_policies = TlsPolicies.from_config(
                self.config, dns=self.routing_dns, router=self.router, record=record
            )
            self.spool.cache.tls_policy = self.tls_policies.tls_for

    async def _submit_report(self, sender: str, recipient: str, message: bytes) -> None:
        """Queue a mailed TLS-RPT report, DKIM-signed when a key covers its sender."""
        if self.dkim is not None:
            message = await self.dkim.signature(message) + message
        envelope = Envelope.create(sender=sender, recipients=[recipient], message=message)
        domain = recipient.rpartition("@")[2]
        await self.spool.add([Delivery(envelope, route=a_label(domain))])

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
        if self.tls_reporter is not None:
            self._reporting = asyncio.get_running_loop().create_task(self.tls_reporter.run())

    async def close(self) -> None:
        """Stop taking mail, finish sessions and deliveries, close the spool."""
        if self._reporting is not None:
            self._reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporting
            self._reporting = None
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
            hops = result.hops
            if result.by_mx and self.tls_policies is not None:
                plan = await self.tls_policies.plan(result)
                if not plan.hops:
                    return RouteLater(plan.why_empty())  # temporary: policies are rechecked
                hops = tuple(policy.hop for policy in plan.hops)
            return Hops(hops, result.name, self._credentials(hops))
        if isinstance(result, NoRoute):
            return Unroutable(result.reply)
        assert isinstance(result, RouteLaterResult)
        return RouteLater(result.reason)

    def _credentials(self, hops: tuple[HostPort, ...]) -> Credentials | None:
        return self.config.credentials_for(hops[0].host) if hops else None

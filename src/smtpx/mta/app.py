"""The relay MTA: server -> spool -> client, composed from a :class:`MtaConfig`.

::

    async with Mta(MtaConfig.load("smtpx.toml")) as mta:
        await mta.wait_for_signal()     # SIGTERM or SIGINT: a clean shutdown; SIGHUP: reload

A reload (:meth:`Mta.reload`, on SIGHUP) reads the configuration file, the users file and
the TLS files again and applies what can change while sessions go on; what needs a
restart keeps its running value, with a log line naming the key (:mod:`smtpx.mta.reload`).

Shutting down stops accepting connections, lets sessions finish their transaction, lets
running deliveries finish, and closes the journal. Mail that was accepted but not yet
delivered stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import ssl
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import dns.asyncresolver

from smtpx.auth import Credentials
from smtpx.envelope import Envelope, HostPort
from smtpx.errors import ConfigError
from smtpx.io.balance import SessionBalance
from smtpx.io.resolve import Resolver
from smtpx.io.tasks import cancel_and_wait, report_while_slow
from smtpx.mta.config import MtaConfig, SpoolBackend, TlsSettings, a_label
from smtpx.mta.control import ControlPlane
from smtpx.mta.dkim import DkimSigner
from smtpx.mta.edge import build_guards
from smtpx.mta.guards import Guard
from smtpx.mta.inbound import AuthDns, InboundJudge, InboundPolicy, make_resolver
from smtpx.mta.inbound.arc import ArcSealer
from smtpx.mta.inbound.clientname import client_name
from smtpx.mta.lmtp import LmtpAgent
from smtpx.mta.local import MaildirAgent
from smtpx.mta.milter import ClientNames, MilterStats
from smtpx.mta.recipients import RecipientTable
from smtpx.mta.relay import RelayPlugin
from smtpx.mta.reload import changed_keys, merge
from smtpx.mta.resolver import RoutingResolver
from smtpx.mta.routing import Dns, NoRoute, Route, Router
from smtpx.mta.routing import RouteLater as RouteLaterResult
from smtpx.mta.spoolwatch import SpoolWatch
from smtpx.mta.tlspolicy import TlsPolicies, https_context
from smtpx.mta.tlsrpt import TlsReporter, TlsRptLog
from smtpx.mta.users import Users
from smtpx.server import Server
from smtpx.spool.message import SpooledMessage
from smtpx.spool.shards import SHARD_RE, spool_of_shard
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
from smtpx.spool.types import LocalAgent

__all__ = ["WORKER_GATE", "Mta", "spool_config"]

WORKER_GATE = 10.0  # seconds a worker waits for its supervisor's word before accepting
# A shutdown still running after this (and every as long again) logs where each task
# waits: deliveries may take the shutdown timeout, anything longer is worth a look.
SLOW_SHUTDOWN = 20.0

log = logging.getLogger("smtpx.mta")


class Mta:
    """The relay: an async context manager that runs the server and the spool."""

    def __init__(
        self,
        config: MtaConfig,
        *,
        dns: Dns | None = None,
        resolver: Resolver | None = None,
        dns_resolver: dns.asyncresolver.Resolver | None = None,
        inbound_policy: InboundPolicy | None = None,
        guards: Sequence[Guard] = (),
        shutdown_timeout: float = 30.0,
        reload_config: Callable[[], MtaConfig | None] | None = None,
        set_logging: Callable[[str, str], None] | None = None,
    ) -> None:
        """``reload_config``: what a reload reads (default: ``config.source`` again; None:
        no file, only the users and TLS files are read again). ``guards``: checks of
        the caller's (:class:`~smtpx.mta.guards.Guard`), after the configured ones; one
        can have a message quarantined at intake. ``set_logging(level,
        format)``: applies a reloaded ``[log]`` (the caller's; by default it is left
        alone)."""
        self.config = config
        if dns_resolver is None and config.dns.nameservers:
            dns_resolver = _resolver(config)
        self._dns_resolver = dns_resolver
        self._name_lookup: AuthDns | None = None  # clients' names, for milters
        routing = config.routing
        # MX, MTA-STS, TLSA and MX address lookups: routing.resolver (trusted for the AD
        # bit with DANE), else the resolver of [dns], else the system's.
        if routing.resolver is None and dns_resolver is not None:
            self.routing_dns = RoutingResolver(dns_resolver, trust_ad=routing.dane.enabled)
        else:
            self.routing_dns = RoutingResolver.at(routing.resolver, trust_ad=routing.dane.enabled)
        self.router = Router(config, dns or self.routing_dns)
        # Local recipients ([local]); reload() reads its recipients_file again.
        self.recipients = RecipientTable.from_config(config)
        self.local = _local_agent(config, self.recipients)
        self.users = Users.load(config.auth.users_file) if config.auth.users_file else None
        self.spool = Spool(
            spool_config(config), client_config=config.client_config(), router=self._route
        )
        if resolver is not None:
            self.spool.cache.resolver = resolver
        elif routing.resolver is not None:
            self.spool.cache.resolver = self.routing_dns
        # Loads the DKIM keys: a bad one is a ConfigError naming dkim.sign[N].key_file.
        self.dkim = DkimSigner.from_settings(config.dkim.sign) if config.dkim.sign else None
        self._tls_setup()
        self.inbound = _inbound(config, dns_resolver, inbound_policy)
        # DNS lists, rate limits, greylisting; then the caller's own (``guards``).
        self.guards = [*build_guards(config, dns_resolver), *guards]
        self.milter_stats = MilterStats()  # (kept across reloads: counters only grow)
        relay = RelayPlugin(
            config,
            self.spool,
            self.users,
            dkim=self.dkim,
            inbound=self.inbound,
            recipients=self.recipients,
            local=self.local,
            guards=self.guards,
            milter_stats=self.milter_stats,
            client_names=self._client_names(config),
        )
        self.server = Server(relay, config.server_config())
        server = config.server
        if server.balance_fd is not None and server.worker is not None:
            self.server.balance = SessionBalance(server.balance_fd, server.worker, server.workers)
        self.spool_watch = _spool_watch(config)
        self.reload_config = reload_config or self._read_source
        self.set_logging = set_logging
        self.shutdown_timeout = shutdown_timeout
        self._stop = asyncio.Event()
        self._gate: asyncio.Task[None] | None = None  # a worker's wait for serve()
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

    def _client_names(self, config: MtaConfig) -> ClientNames | None:
        """How milters learn a client's verified name (``[server] client_names``, with
        ``[[milters]]`` only: a PTR query and an address query per connection)."""
        if not config.milters or not config.server.client_names:
            return None
        if self._name_lookup is None:  # the inbound judge's lookups (and cache), if any
            self._name_lookup = (
                self.inbound.dns
                if self.inbound is not None
                else AuthDns(self._dns_resolver or _resolver(config), timeout=config.dns.timeout)
            )
        return functools.partial(client_name, self._name_lookup)

    def _tls_setup(self) -> None:
        """Outbound TLS policies (MTA-STS, DANE) and TLS-RPT, as configured."""
        routing = self.config.routing
        self.tls_reports: TlsRptLog | None = None
        self.tls_reporter: TlsReporter | None = None
        self._reporting: asyncio.Task[None] | None = None
        if routing.tlsrpt.enabled:
            # With workers, every worker records in the spool directory's tlsrpt/ (not its
            # shard's) and worker 0 alone sends: one report a day per domain, of all.
            worker = self.config.server.worker or 0
            spool_dir = spool_of_shard(Path(self.config.spool.dir), worker)
            self.tls_reports = TlsRptLog(spool_dir / "tlsrpt")
            hostname = self.config.hostname
            if worker == 0:
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
        # A worker listens once its supervisor says every worker is ready (serve()): the
        # first one up would otherwise get every connection made meanwhile.
        gated = self.config.server.worker is not None
        try:
            await self.server.start(serving=not gated)
            await self.control.start()
        except BaseException:
            await self.server.close(0)
            await self.spool.kill_and_flush(0)
            raise
        if gated:
            self._gate = asyncio.get_running_loop().create_task(self._serve_later())
        if self.tls_reporter is not None:
            self._adopt_shard_reports()
            self._reporting = asyncio.get_running_loop().create_task(self.tls_reporter.run())
        if self.spool_watch is not None:
            self.spool_watch.start()

    async def serve(self) -> None:
        """Start accepting (a worker: when its supervisor says; at once otherwise)."""
        self._end_gate()
        await self.server.start_serving()

    def _end_gate(self) -> None:
        if self._gate is not None:
            self._gate.cancel()
            self._gate = None

    async def _serve_later(self) -> None:
        """A worker whose supervisor never says: it accepts anyway after a while."""
        await asyncio.sleep(WORKER_GATE)
        log.warning("workers: no word from the supervisor in %g s: accepting", WORKER_GATE)
        self._gate = None
        await self.server.start_serving()

    async def close(self) -> None:
        """Stop taking mail, finish sessions and deliveries, close the spool. Slow, it
        says where it waits (:func:`report_while_slow`)."""
        loop = asyncio.get_running_loop()
        watch = loop.create_task(report_while_slow("shutdown", SLOW_SHUTDOWN, log))
        try:
            await self._close()
        finally:
            await cancel_and_wait([watch])

    async def _close(self) -> None:
        self._end_gate()
        if self._reporting is not None:
            await cancel_and_wait([self._reporting])
            self._reporting = None
        if self.spool_watch is not None:
            await self.spool_watch.close()
        await self.server.close()
        if self.server.balance is not None:
            self.server.balance.close()
        await self.spool.kill_and_flush(self.shutdown_timeout)
        await self.control.close()
        if self.inbound is not None:
            self.inbound.close()
        for guard in self.guards:
            await guard.close()

    def stop(self) -> None:
        self._stop.set()

    def reload_tls(self, settings: TlsSettings | None = None) -> None:
        """Read the certificate and key files (``settings``, by default the running
        ones) again. New handshakes (STARTTLS and implicit TLS listeners alike) use them;
        sessions already encrypted keep theirs."""
        context = self.server.tls_context
        settings = settings or self.config.tls
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

    # -- reloading (SIGHUP) --------------------------------------------------------------

    def _read_source(self) -> MtaConfig | None:
        source = self.config.source
        return None if source is None else MtaConfig.load(source)

    def reload(self) -> bool:
        """Read the configuration, the users file and the TLS files again, and apply
        what can change live (:mod:`smtpx.mta.reload`); sessions go on. A key that needs
        a restart keeps its running value, logged as a warning. Anything wrong (a bad
        file, a users file or certificate that does not load) is logged as an error and
        changes nothing. True when the reload was applied."""
        try:
            wanted = self.reload_config() or self.config
            merged, refused = merge(self.config, wanted)
            merged.check_consistency()
            merged.check_files()
            users = Users.load(merged.auth.users_file) if merged.auth.users_file else None
            dkim = DkimSigner.from_settings(merged.dkim.sign) if merged.dkim.sign else None
            recipients = RecipientTable.from_config(merged)  # reads recipients_file again
        except (ConfigError, ValueError, OSError, ssl.SSLError) as exc:
            log.error("reload: %s; nothing changed", exc)
            return False
        for refusal in refused:
            log.warning("reload: %s", refusal)
        changed = changed_keys(self.config, merged)
        self._apply(merged, users, dkim, recipients)
        applied = ", ".join(changed) or "no key changed"
        log.info("reload: done (%s; users, recipients and TLS files read again)", applied)
        return True

    def _apply(
        self,
        config: MtaConfig,
        users: Users | None,
        dkim: DkimSigner | None,
        recipients: RecipientTable,
    ) -> None:
        """Swap in what ``config`` (checked) says: new sessions, routes and deliveries
        use it; sessions and deliveries under way finish with what they had."""
        if self.server.tls_context is not None:
            self.reload_tls(config.tls)
        self.users, self.dkim, self.recipients = users, dkim, recipients
        self.local = _local_agent(config, recipients)
        self.server.plugin = RelayPlugin(
            config,
            self.spool,
            users,
            dkim=dkim,
            inbound=self.inbound,
            recipients=recipients,
            local=self.local,
            guards=self.guards,
            milter_stats=self.milter_stats,
            client_names=self._client_names(config),
        )
        self.router = Router(config, self.router.dns)
        if self.tls_policies is not None:
            self.tls_policies.router = self.router
        self.spool.cache.client_config = config.client_config()
        self.spool.reconfigure(spool_config(config))
        if self.set_logging is not None and config.log != self.config.log:
            self.set_logging(config.log.level, config.log.format)
        self.config = config

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """While the block runs: SIGTERM and SIGINT stop (:meth:`stop`), SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        handlers: dict[signal.Signals, Callable[[], object]] = {
            signal.SIGTERM: self._stop.set,
            signal.SIGINT: self._stop.set,
            signal.SIGHUP: self.reload,
        }
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)
        try:
            yield
        finally:
            for sig in handlers:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def wait_for_signal(self) -> None:
        """Run until SIGTERM or SIGINT (or :meth:`stop`); SIGHUP reloads meanwhile."""
        with self.signals():
            await self._stop.wait()

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

    def _adopt_shard_reports(self) -> None:
        """TLS-RPT events that workers recorded in their shards (before they shared the
        spool's tlsrpt/) join the shared log, so the reporter starting now sends them
        too (at start, not when the MTA is built: ``serve --check`` builds one)."""
        assert self.tls_reports is not None
        for shard in sorted(self.tls_reports.directory.parent.glob("shard-*")):
            if SHARD_RE.fullmatch(shard.name) is None:
                continue
            try:
                moved = self.tls_reports.adopt(shard / "tlsrpt")
            except OSError as exc:
                log.error("TLS-RPT: cannot move the events of %s: %s", shard, exc)
                continue
            if moved:
                log.info("TLS-RPT: %d days of events moved from %s", moved, shard)

    def _credentials(self, hops: tuple[HostPort, ...]) -> Credentials | None:
        return self.config.credentials_for(hops[0].host) if hops else None


def _local_agent(config: MtaConfig, recipients: RecipientTable) -> LocalAgent:
    """Where local mail goes: Dovecot (or any LMTP server) when ``local.lmtp`` is set,
    else the maildirs."""
    if config.local.lmtp is not None:
        return LmtpAgent(config.local.lmtp, config.hostname)
    return MaildirAgent(config.local.maildir, config.hostname, mailbox_of=recipients.mailbox)


def _resolver(config: MtaConfig) -> dns.asyncresolver.Resolver:
    """The resolver ``[dns]`` describes (the system's when it names no server)."""
    servers = tuple((a.host, a.port) for a in config.dns.nameservers)
    return make_resolver(servers, timeout=config.dns.timeout)


def _inbound(
    config: MtaConfig,
    resolver: dns.asyncresolver.Resolver | None,
    policy: InboundPolicy | None,
) -> InboundJudge | None:
    """The judge of inbound mail when ``[inbound]`` names listeners (the ARC key is loaded
    here: a bad one is a ConfigError naming inbound.arc_seal.key_file)."""
    settings = config.inbound
    if not settings.listeners:
        return None
    sealer = None if settings.arc_seal is None else ArcSealer.from_settings(settings.arc_seal)
    return InboundJudge(
        settings,
        AuthDns(resolver or _resolver(config), timeout=config.dns.timeout),
        authserv_id=settings.authserv_id or config.hostname,
        policy=policy,
        sealer=sealer,
    )


def spool_config(config: MtaConfig) -> SpoolConfig:
    """The spool's settings in ``config``."""
    settings = config.spool
    return SpoolConfig(
        directory=settings.dir,
        fsync=settings.fsync,
        retry_intervals=settings.retry_intervals,
        max_deliveries=settings.max_deliveries,
        max_per_destination=settings.max_per_destination,
        bounce=settings.bounce,
        reporting_mta=config.hostname,
        delay_warning_after=settings.delay_warning_after,
        unreachable_backoff=settings.unreachable_backoff,
        failed_retention=settings.failed_retention,
        cache=config.cache_config(),
        postgresql=settings.postgresql if settings.backend is SpoolBackend.POSTGRESQL else None,
    )


def _spool_watch(config: MtaConfig) -> SpoolWatch | None:
    """The spool monitor ``[spool] monitor_every`` asks for (the journal's only)."""
    spool = config.spool
    if not spool.monitor_every or spool.backend is not SpoolBackend.JOURNAL:
        return None
    return SpoolWatch(
        spool.dir,
        spool.monitor_every,
        alert_after=spool.monitor_alert_after,
        max_frozen_age=spool.monitor_max_frozen_age,
    )

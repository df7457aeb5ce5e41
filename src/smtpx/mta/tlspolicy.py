"""Outbound TLS policy for mail delivered by MX: DANE, then MTA-STS, then the configured
``[[routing.tls]]`` entry (RFC 8461 section 2: DANE takes precedence).

:meth:`TlsPolicies.plan` decides, when a destination is routed, for each MX host:

1. **DANE** (``routing.dane``; its AD bits come from ``routing.resolver``): when the MX
   RRset (for a domain without MX, its address records) is DNSSEC-secure, the TLSA records
   ``_<port>._tcp.<host>`` are looked up (RFC 7672 section 2):

   * secure, some usable (DANE-TA, DANE-EE): TLS is required and the certificate must
     match them (:func:`~smtpx.mta.certs.dane_problem`); nothing else can override a
     mismatch, which defers this host;
   * secure, none usable: TLS is required, unauthenticated (section 3.1.3), unless
     MTA-STS asks for more;
   * the lookup failed (DNSSEC bogus, SERVFAIL, a timeout): the host is skipped, never
     used in plaintext instead (section 2.1.1);
   * no records (a secure denial), or insecure ones: on to MTA-STS.

2. **MTA-STS** (``routing.mta_sts``, :mod:`smtpx.mta.mtasts`): under an ``enforce``
   policy only the MX hosts it names are used, with TLS required and a certificate valid
   for the host name under the WebPKI (:func:`~smtpx.mta.certs.webpki_problem`);
   under ``testing`` every host is used as configured, and what would have failed is
   logged and reported.

3. Otherwise the ``[[routing.tls]]`` entry for the host (opportunistic by default).

When no host is left the route is deferred (:class:`~smtpx.spool.spool.RouteLater`), and a
check that fails after the handshake ends that session with a
:class:`~smtpx.errors.TlsPolicyError`: both are temporary for the spool, retried, and the
reason is the delivery attempt's (the bounce, if it ever comes, says no remote MTA
answered). The connection cache asks :meth:`TlsPolicies.tls_for` for each new session.
Each outcome goes to TLS-RPT (:mod:`smtpx.mta.tlsrpt`) when it is on.
"""

from __future__ import annotations

import collections
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from cryptography.x509.verification import Store

from smtpx.client import CertificateCheck, ClientConfig, PeerTls, TlsConfig, TlsMode
from smtpx.envelope import HostPort
from smtpx.errors import ClientError, SessionError, TlsPolicyError, TlsRequiredError
from smtpx.mta.certs import Problem, Tlsa, dane_problem, trust_store, webpki_problem
from smtpx.mta.config import MtaConfig
from smtpx.mta.mtasts import MtaSts, StsLookup, StsPolicy
from smtpx.mta.resolver import RoutingResolver
from smtpx.mta.routing import Route, Router
from smtpx.mta.tlsrpt import SUCCESS, PolicyRef, TlsEvent

__all__ = [
    "HopPolicy",
    "PolicyCheck",
    "PolicyKind",
    "TlsPlan",
    "TlsPolicies",
    "describe_tls",
    "https_context",
]

log = logging.getLogger("smtpx.mta.tls")

PolicyKind = Literal[
    "configured", "dane", "dane-encrypt-only", "mta-sts-enforce", "mta-sts-testing"
]
Record = Callable[[TlsEvent], None]
MAX_PLANS = 4096


def describe_tls(tls: TlsConfig) -> str:
    """A ``[[routing.tls]]`` setting in words."""
    if tls.mode is TlsMode.NONE:
        return "no TLS"
    check = (
        "verified certificate" if tls.certificate is CertificateCheck.VERIFY else "any certificate"
    )
    return f"TLS {tls.mode.value.replace('_', ' ')}, {check}"


@dataclass(frozen=True, slots=True, eq=False)
class PolicyCheck:
    """The :class:`~smtpx.client.TlsCheck` of one MX host under DANE or MTA-STS."""

    kind: PolicyKind
    policy: PolicyRef
    names: tuple[str, ...]  # reference identifiers: the MX host (then the domain)
    tlsa: tuple[Tlsa, ...] = ()
    store: Callable[[], Store] | None = None
    record: Record | None = None
    clock: Callable[[], float] = time.time

    @property
    def enforce(self) -> bool:
        return self.kind != "mta-sts-testing"

    def problem(self, peer: PeerTls) -> Problem | None:
        if self.kind == "dane":
            return dane_problem(peer.chain, self.tlsa, self.names)
        if self.kind == "dane-encrypt-only":
            return None if peer.encrypted else Problem("starttls-not-supported", "not encrypted")
        assert self.store is not None
        return webpki_problem(peer.chain, self.names, self.store())

    def verify(self, peer: PeerTls) -> None:
        problem = self.problem(peer)
        self._record(peer, problem)
        if problem is None:
            return
        label = "DANE" if self.kind.startswith("dane") else "MTA-STS"
        text = f"{label} for {peer.host} ({self.policy.domain}): {problem.detail}"
        if self.enforce:
            raise TlsPolicyError(text)
        log.warning("MTA-STS testing: would not deliver under enforce: %s", text)

    def failed(self, peer: PeerTls, error: ClientError) -> None:
        refused = isinstance(error, TlsRequiredError) or (
            isinstance(error, SessionError) and error.reply is not None
        )
        result = "starttls-not-supported" if refused else "validation-failure"
        self._record(peer, Problem(result, str(error)))

    def _record(self, peer: PeerTls, problem: Problem | None) -> None:
        if self.record is None:
            return
        self.record(
            TlsEvent(
                policy=self.policy,
                result=SUCCESS if problem is None else problem.result_type,
                time=self.clock(),
                mx_host=peer.host,
                receiving_ip=peer.remote[0] if peer.remote else "",
                sending_ip=peer.local[0] if peer.local else "",
                detail="" if problem is None else problem.detail,
            )
        )


@dataclass(frozen=True, slots=True)
class HopPolicy:
    """The TLS of one MX host: ``tls`` None means the ``[[routing.tls]]`` entry's."""

    hop: HostPort
    kind: PolicyKind
    reason: str
    tls: TlsConfig | None = None


@dataclass(frozen=True, slots=True)
class TlsPlan:
    """A destination's hosts as the policies leave them, in order, and those skipped."""

    domain: str
    hops: tuple[HopPolicy, ...]
    skipped: tuple[tuple[HostPort, str], ...] = ()
    notes: tuple[str, ...] = ()

    def policy_for(self, hop: HostPort) -> HopPolicy | None:
        return next((policy for policy in self.hops if policy.hop == hop), None)

    def why_empty(self) -> str:
        reasons = "; ".join(f"{hop.host}: {why}" for hop, why in self.skipped)
        return f"TLS policy: no MX host of {self.domain} can be used now ({reasons})"


class TlsPolicies:
    """Plans per destination (see the module docstring), kept for the sessions that
    follow; ``record`` receives TLS-RPT events (None: not kept)."""

    def __init__(
        self,
        *,
        dns: RoutingResolver,
        client_config: ClientConfig,
        router: Router,
        sts: MtaSts | None = None,
        dane: bool = False,
        ca_file: Path | None = None,
        record: Record | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dns = dns
        self.client_config = client_config
        self.router = router
        self.sts = sts
        self.dane = dane
        self.ca_file = ca_file
        self.record = record
        self.clock = clock
        self._plans: collections.OrderedDict[str, TlsPlan] = collections.OrderedDict()
        if sts is not None and record is not None:
            sts.on_problem = self._sts_problem

    # -- the connection cache's hook -----------------------------------------------------

    async def tls_for(self, address: HostPort, route: str | None) -> TlsConfig | None:
        """The TLS for a new session with ``address`` on ``route`` (None: configured)."""
        if route is None or route.startswith("hops:"):
            return None
        plan = self._plans.get(route)
        if plan is None:  # not an MX route, or forgotten: route it again to know
            result = await self.router.route(route)
            if not (isinstance(result, Route) and result.by_mx):
                return None
            plan = await self.plan(result)
        policy = plan.policy_for(address)
        if policy is None:
            why = dict(plan.skipped).get(address, "not one of its MX hosts now")
            raise TlsPolicyError(f"TLS policy: {address.host} for {route}: {why}")
        return policy.tls

    # -- planning ------------------------------------------------------------------------

    async def plan(self, route: Route) -> TlsPlan:
        """The plan for an MX route (``route.by_mx``)."""
        domain = route.name
        notes: list[str] = []
        secure = False
        if self.dane:
            secure, note = await self._secure_mx(route)
            notes.append(note)
        found = await self.sts.policy(domain) if self.sts is not None else None
        if found is not None:
            notes.append(_sts_note(found))
        policy = None if found is None else found.policy
        hops: list[HopPolicy] = []
        skipped: list[tuple[HostPort, str]] = []
        for hop in route.hops:
            decided = await self._hop(domain, hop, secure, policy)
            if isinstance(decided, str):
                log.warning("TLS policy: %s not used for %s: %s", hop.host, domain, decided)
                skipped.append((hop, decided))
            else:
                hops.append(decided)
        plan = TlsPlan(domain, tuple(hops), tuple(skipped), tuple(notes))
        self._plans[domain] = plan
        self._plans.move_to_end(domain)
        while len(self._plans) > MAX_PLANS:
            self._plans.popitem(last=False)
        return plan

    async def _secure_mx(self, route: Route) -> tuple[bool, str]:
        rdtype = "MX" if route.kind == "mx" else "A"
        answer = await self.dns.lookup(route.name, rdtype)
        if answer.failed:
            return False, f"DANE: the {rdtype} lookup failed ({answer.error}): no DANE"
        if answer.secure:
            return True, f"DANE: the {rdtype} records are DNSSEC-secure: TLSA records apply"
        return False, f"DANE: the {rdtype} records are not DNSSEC-secure: no DANE"

    async def _hop(
        self, domain: str, hop: HostPort, secure: bool, policy: StsPolicy | None
    ) -> HopPolicy | str:
        if secure:
            decided = await self._dane(domain, hop, policy)
            if decided is not None:
                return decided
        if policy is not None:
            return self._sts(domain, hop, policy)
        configured = self.client_config.tls_for(hop.host)
        return HopPolicy(hop, "configured", f"no policy: {describe_tls(configured)}")

    async def _dane(
        self, domain: str, hop: HostPort, policy: StsPolicy | None
    ) -> HopPolicy | str | None:
        name = f"_{hop.port}._tcp.{hop.host}"
        answer = await self.dns.lookup(name, "TLSA")
        if answer.failed:
            ref = PolicyRef("tlsa", domain, (), (hop.host,))
            self._event(ref, "dnssec-invalid", hop, f"{name}: {answer.error}")
            return f"DANE: the TLSA lookup of {name} failed ({answer.error})"
        if not (answer.records and answer.secure):
            return None
        records = tuple(r for r in map(Tlsa.of, answer.records) if r is not None)
        usable = tuple(record for record in records if record.usable)
        ref = PolicyRef("tlsa", domain, tuple(map(str, records)), (hop.host,))
        if usable:
            check = self._check("dane", ref, (hop.host, domain), tlsa=usable)
            why = f"DANE: {len(usable)} usable TLSA record(s) at {name}: TLS required, "
            why += "the certificate must match"
            return HopPolicy(hop, "dane", why, self._required(hop, check))
        if policy is not None and policy.mode == "enforce":
            return None  # MTA-STS asks for more than unauthenticated TLS
        check = self._check("dane-encrypt-only", ref, (hop.host,))
        why = f"DANE: TLSA records at {name}, none usable: TLS required, not authenticated"
        return HopPolicy(hop, "dane-encrypt-only", why, self._required(hop, check))

    def _sts(self, domain: str, hop: HostPort, policy: StsPolicy) -> HopPolicy | str:
        ref = PolicyRef("sts", domain, policy.lines, policy.mx)
        named = policy.matches(hop.host)
        if not named:
            self._event(ref, "validation-failure", hop, "the MX host is not named by the policy")
        if policy.mode == "enforce":
            if not named:
                return f"MTA-STS (enforce): not among the policy's MX hosts ({' '.join(policy.mx)})"
            check = self._check("mta-sts-enforce", ref, (hop.host,))
            why = f"MTA-STS enforce: TLS required, certificate valid for {hop.host}"
            return HopPolicy(hop, "mta-sts-enforce", why, self._required(hop, check))
        configured = self.client_config.tls_for(hop.host)
        check = self._check("mta-sts-testing", ref, (hop.host,))
        why = f"MTA-STS testing: {describe_tls(configured)}; failures are logged"
        if not named:
            why += " (not among the policy's MX hosts: would be skipped under enforce)"
        return HopPolicy(hop, "mta-sts-testing", why, replace(configured, check=check))

    def _required(self, hop: HostPort, check: PolicyCheck) -> TlsConfig:
        configured = self.client_config.tls_for(hop.host)
        return replace(
            configured,
            mode=TlsMode.REQUIRED,
            certificate=CertificateCheck.IGNORE,  # the check decides
            server_name=None,
            check=check,
        )

    def _check(
        self, kind: PolicyKind, ref: PolicyRef, names: tuple[str, ...], tlsa: tuple[Tlsa, ...] = ()
    ) -> PolicyCheck:
        return PolicyCheck(
            kind=kind,
            policy=ref,
            names=names,
            tlsa=tlsa,
            store=self._store,
            record=self.record,
            clock=self.clock,
        )

    def _store(self) -> Store:
        return trust_store(self.ca_file)

    def _event(self, ref: PolicyRef, result: str, hop: HostPort, detail: str) -> None:
        if self.record is not None:
            event = TlsEvent(ref, result, self.clock(), mx_host=hop.host, detail=detail)
            self.record(event)

    @classmethod
    def from_config(
        cls,
        config: MtaConfig,
        *,
        dns: RoutingResolver,
        router: Router,
        record: Record | None = None,
        keep: bool = True,
    ) -> TlsPolicies:
        """The policies ``config`` turns on; ``keep`` False reads the MTA-STS cache but
        keeps what it fetches in memory (``smtpx route test``: the server's files are
        the server's)."""
        routing = config.routing
        sts = None
        if routing.mta_sts.enabled:
            ca_file = routing.mta_sts.ca_file
            sts = MtaSts(
                dns=dns,
                directory=Path(config.spool.dir) / "mta-sts",
                ssl_context=https_context(ca_file),
                write=keep,
            )
        return cls(
            dns=dns,
            client_config=config.client_config(),
            router=router,
            sts=sts,
            dane=routing.dane.enabled,
            ca_file=routing.mta_sts.ca_file,
            record=record,
        )

    def _sts_problem(self, domain: str, problem: Problem) -> None:
        if self.record is not None:
            ref = PolicyRef("sts", domain)
            self.record(TlsEvent(ref, problem.result_type, self.clock(), detail=problem.detail))


def https_context(ca_file: Path | None) -> ssl.SSLContext:
    """For the HTTPS requests smtpx makes itself (MTA-STS policies, TLS-RPT uploads):
    certificates verified against ``ca_file`` or the system's store."""
    return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))


def _sts_note(found: StsLookup) -> str:
    if found.cached is None:
        return f"MTA-STS: no policy ({found.how})"
    return f"MTA-STS: {found.cached.policy.describe()} ({found.how})"

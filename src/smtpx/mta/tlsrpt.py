"""TLS-RPT (RFC 8460): daily reports of how TLS went with the domains whose MTA-STS or
DANE policies smtpx applied, sent to the addresses those domains publish.

Every session (and every policy problem found while routing) under a policy is an event:
:meth:`TlsRptLog.record` appends it to the UTC day's file
(``<spool dir>/tlsrpt/YYYY-MM-DD.jsonl``), so a restart loses nothing. Once a day is
over, :meth:`TlsReporter.send_due` makes one report per policy domain that publishes a
``_smtp._tls`` TXT record (``v=TLSRPTv1; rua=...``, section 3): the JSON of section 4,
gzipped, by mail (``mailto:``, a ``multipart/report`` through the spool, DKIM-signed when
a ``[[dkim.sign]]`` key covers the sender, section 5.3) or by HTTPS POST (``https:``,
section 5.4), and then forgets the day.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.message
import email.policy
import email.utils
import gzip
import json
import logging
import os
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from smtpx.content import write_all
from smtpx.mta.resolver import RoutingResolver

__all__ = ["PolicyRef", "TlsEvent", "TlsReporter", "TlsRptLog", "build_report", "rua_of"]

log = logging.getLogger("smtpx.mta.tlsrpt")

PolicyType = Literal["sts", "tlsa", "no-policy-found"]
SUCCESS = "success"
# (sender, recipient, message) -> queued: how mailed reports leave (the MTA's spool).
Submit = Callable[[str, str, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """The policy a session was held to, as a report's ``policy`` object names it."""

    type: PolicyType
    domain: str
    strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsEvent:
    """One session's outcome under ``policy``: ``result`` is ``"success"`` or a TLS-RPT
    result type (section 4.3); ``detail`` goes into ``failure-reason-code``."""

    policy: PolicyRef
    result: str
    time: float
    mx_host: str = ""
    receiving_ip: str = ""
    sending_ip: str = ""
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> TlsEvent:
        raw = json.loads(line)
        policy = raw.pop("policy")
        for name in ("strings", "mx_hosts"):
            policy[name] = tuple(policy[name])
        return cls(policy=PolicyRef(**policy), **raw)


def _day(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).date().isoformat()


@dataclass
class TlsRptLog:
    """The events of each UTC day, one JSON line each, in ``directory``."""

    directory: Path
    clock: Callable[[], float] = time.time

    def record(self, event: TlsEvent) -> None:
        """Append ``event`` (best effort: a failed write is logged, delivery goes on).
        One ``write`` of the whole line to a file opened with ``O_APPEND``: the workers
        of one ``smtpx serve`` append to the same file, and lines never interleave."""
        line = (event.to_json() + "\n").encode()
        try:
            fd = self._open_day(f"{_day(event.time)}.jsonl")
            try:
                written = os.write(fd, line)
            finally:
                os.close(fd)
            if written != len(line):
                raise OSError(f"{written} of {len(line)} octets written (disk full?)")
        except OSError as exc:
            log.error("TLS-RPT: cannot record an event in %s: %s", self.directory, exc)

    def _open_day(self, name: str) -> int:
        """A day's file, opened to append (created, with the directory, if need be)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.directory / name, flags, 0o600)

    def finished_days(self) -> list[str]:
        """The days recorded and over (before today, UTC), oldest first."""
        today = _day(self.clock())
        days = sorted(path.stem for path in self.directory.glob("*.jsonl"))
        return [day for day in days if day < today]

    def events(self, day: str) -> list[TlsEvent]:
        events = []
        with contextlib.suppress(FileNotFoundError):
            for line in (self.directory / f"{day}.jsonl").read_text(encoding="utf-8").splitlines():
                try:
                    events.append(TlsEvent.from_json(line))
                except (ValueError, KeyError, TypeError):
                    log.warning("TLS-RPT: an unreadable line in %s.jsonl (skipped)", day)
        return events

    def forget(self, day: str) -> None:
        (self.directory / f"{day}.jsonl").unlink(missing_ok=True)

    def adopt(self, other: Path) -> int:
        """Append the days recorded in ``other`` (a worker's shard, where workers
        recorded before they shared this directory) to this log's, whole lines, then
        remove them: their events are reported with the rest (a crash between the two
        counts that day's moved events twice). How many days moved."""
        moved = 0
        for path in sorted(other.glob("*.jsonl")):
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                data = data[: data.rfind(b"\n") + 1]  # a line cut by a crash: dropped
            fd = self._open_day(path.name)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            path.unlink()
            moved += 1
        return moved


# -- the report ------------------------------------------------------------------------


def build_report(
    day: str,
    events: Sequence[TlsEvent],
    *,
    organization: str,
    contact: str,
    report_id: str,
) -> dict[str, Any]:
    """The report (RFC 8460 section 4) of one policy domain's ``events`` of ``day``."""
    by_policy: dict[PolicyRef, list[TlsEvent]] = {}
    for event in events:
        by_policy.setdefault(event.policy, []).append(event)
    return {
        "organization-name": organization,
        "date-range": {
            "start-datetime": f"{day}T00:00:00Z",
            "end-datetime": f"{day}T23:59:59Z",
        },
        "contact-info": contact,
        "report-id": report_id,
        "policies": [_policy(ref, items) for ref, items in by_policy.items()],
    }


def _policy(ref: PolicyRef, events: Sequence[TlsEvent]) -> dict[str, Any]:
    failures = [event for event in events if event.result != SUCCESS]
    policy: dict[str, Any] = {"policy-type": ref.type, "policy-domain": ref.domain}
    if ref.strings:
        policy["policy-string"] = list(ref.strings)
    if ref.mx_hosts:
        policy["mx-host"] = list(ref.mx_hosts)
    entry: dict[str, Any] = {
        "policy": policy,
        "summary": {
            "total-successful-session-count": len(events) - len(failures),
            "total-failure-session-count": len(failures),
        },
    }
    if failures:
        entry["failure-details"] = _details(failures)
    return entry


def _details(failures: Iterable[TlsEvent]) -> list[dict[str, Any]]:
    counts = Counter(
        (e.result, e.sending_ip, e.mx_host, e.receiving_ip, e.detail[:200]) for e in failures
    )
    details = []
    for (result, sending, mx_host, receiving, reason), count in sorted(counts.items()):
        detail: dict[str, Any] = {"result-type": result, "failed-session-count": count}
        optional = {
            "sending-mta-ip": sending,
            "receiving-mx-hostname": mx_host,
            "receiving-ip": receiving,
            "failure-reason-code": reason,
        }
        detail.update((name, value) for name, value in optional.items() if value)
        details.append(detail)
    return details


def rua_of(records: Sequence[str]) -> list[str]:
    """The report URIs of the ``_smtp._tls`` TXT records: none unless exactly one of
    them starts with ``v=TLSRPTv1`` (section 3); ``mailto:`` and ``https:`` only."""
    found = [text for text in records if text.startswith("v=TLSRPTv1")]
    if len(found) != 1:
        return []
    for part in found[0].split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip() == "rua":
            uris = [uri.strip() for uri in value.split(",")]
            return [uri for uri in uris if uri.startswith(("mailto:", "https://"))]
    return []


# -- sending ---------------------------------------------------------------------------


@dataclass
class TlsReporter:
    """Sends the reports of finished days (see the module docstring).

    ``submitter`` is this host's name; ``submit`` queues a mailed report.
    """

    log: TlsRptLog
    dns: RoutingResolver
    submit: Submit
    submitter: str
    organization: str
    contact: str
    ssl_context: ssl.SSLContext
    sent: list[tuple[str, str]] = field(default_factory=list)  # (domain, uri), for tests

    async def send_due(self) -> None:
        """Report every finished day, then forget it."""
        for day in self.log.finished_days():
            by_domain: dict[str, list[TlsEvent]] = {}
            for event in self.log.events(day):
                by_domain.setdefault(event.policy.domain, []).append(event)
            for domain, events in sorted(by_domain.items()):
                await self._report(day, domain, events)
            self.log.forget(day)

    async def run(self, interval: float = 3600.0) -> None:
        """Send due reports now and every ``interval`` seconds (``Mta`` runs this)."""
        while True:
            try:
                await self.send_due()
            except Exception:
                log.exception("TLS-RPT: sending the reports failed")
            await asyncio.sleep(interval)

    async def _report(self, day: str, domain: str, events: Sequence[TlsEvent]) -> None:
        texts, answer = await self.dns.txt(f"_smtp._tls.{domain}")
        uris = rua_of(texts)
        if not uris:
            why = answer.error or "no TLSRPTv1 record"
            log.info("TLS-RPT: no report for %s of %s (%s)", domain, day, why)
            return
        report_id = f"{day}_{domain}_{uuid.uuid4().hex}"
        report = build_report(
            day, events, organization=self.organization, contact=self.contact, report_id=report_id
        )
        body = gzip.compress(json.dumps(report).encode())
        for uri in uris:
            try:
                if uri.startswith("mailto:"):
                    await self._mail(uri[7:], day, domain, report_id, body)
                else:
                    await self._post(uri, body)
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("TLS-RPT: the report for %s to %s failed: %s", domain, uri, exc)
                continue
            self.sent.append((domain, uri))
            log.info("TLS-RPT: report %s for %s sent to %s", report_id, domain, uri)

    async def _post(self, url: str, body: bytes) -> None:
        connector = aiohttp.TCPConnector(
            ssl=self.ssl_context, resolver=self.dns.aiohttp_resolver(), use_dns_cache=False
        )
        timeout = aiohttp.ClientTimeout(total=60)
        headers = {"Content-Type": "application/tlsrpt+gzip"}
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.post(url, data=body, headers=headers, allow_redirects=False) as response,
        ):
            if not 200 <= response.status < 300:
                raise ValueError(f"HTTP {response.status}")

    async def _mail(self, to: str, day: str, domain: str, report_id: str, body: bytes) -> None:
        start = datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.UTC)
        begin = int(start.timestamp())
        name = f"{self.submitter}!{domain}!{begin}!{begin + 86399}!{report_id}.json.gz"
        message = email.message.EmailMessage(policy=email.policy.SMTP)
        message["From"] = self.contact
        message["To"] = to
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["Message-ID"] = email.utils.make_msgid(domain=self.submitter)
        message["Subject"] = (
            f"Report Domain: {domain} Submitter: {self.submitter} Report-ID: <{report_id}>"
        )
        message["TLS-Report-Domain"] = domain
        message["TLS-Report-Submitter"] = self.submitter
        message.set_content(
            f"This is an aggregate TLS report (RFC 8460) from {self.submitter} for {domain}, "
            f"covering {day} (UTC).\n"
        )
        message.add_attachment(body, maintype="application", subtype="tlsrpt+gzip", filename=name)
        message.set_type("multipart/report")  # keeps the boundary
        message.set_param("report-type", "tlsrpt")
        await self.submit(self.contact, to, message.as_bytes())

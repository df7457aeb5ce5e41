"""MTA-STS (RFC 8461): a domain's policy for the MX hosts that may receive its mail.

:class:`MtaSts` finds the policy of a destination domain as section 5.1 orders:

1. the TXT record ``_mta-sts.<domain>``: exactly one record starting with ``v=STSv1``,
   with an ``id`` (section 3.1); any other answer means "no policy published now";
2. a cached policy whose ``id`` is the published one, and that is not expired, applies
   as it is; past half its ``max_age`` (a day at most) it is fetched again first, and a
   failed refresh keeps it (a failed fetch never lowers a cached policy);
3. otherwise the policy is fetched from ``https://mta-sts.<domain>/.well-known/mta-sts.txt``
   with a verified certificate, no redirects followed, HTTP 200 only, ``text/plain``, 64 KB
   and 60 seconds at most (section 3.3), and cached for its ``max_age``;
4. when nothing could be fetched (or no TXT record is published: section 5.1 keeps a
   cached policy until it expires, so that stripping the TXT record does not remove it),
   an unexpired cached policy applies; else there is none.

Policies are cached in memory and in files (``<spool dir>/mta-sts/<domain>.json``, written
atomically and flushed), so a restart keeps them. Fetch problems go to ``on_problem`` with
their TLS-RPT result type (``sts-policy-fetch-error``, ``sts-policy-invalid``,
``sts-webpki-invalid``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp

from smtpx.mta.certs import Problem
from smtpx.mta.resolver import RoutingResolver

__all__ = ["CachedPolicy", "MtaSts", "StsLookup", "StsPolicy", "sts_id"]

log = logging.getLogger("smtpx.mta.sts")

StsMode = Literal["enforce", "testing", "none"]
_MODES: dict[str, StsMode] = {"enforce": "enforce", "testing": "testing", "none": "none"}
MAX_AGE_LIMIT = 31_557_600  # section 3.2: about a year
MAX_BODY = 64 * 1024  # section 3.3's suggested limit
FETCH_TIMEOUT = 60.0
REFRESH_AFTER = 86_400.0  # refresh a policy at most this old (or half its max_age)
_ID_RE = re.compile(r"[A-Za-z0-9]{1,32}")
_FIELD_RE = re.compile(r"([A-Za-z0-9_]+)[ \t]*:[ \t]*(.*?)[ \t]*")
_PATTERN_RE = re.compile(r"(\*\.)?([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}\.?")


def sts_id(records: list[str]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT records, or None when they are not exactly
    one valid STSv1 record (section 3.1: then no policy is published)."""
    found = [text for text in records if text.startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields: dict[str, str] = {}
    for part in found[0].split(";"):
        name, equals, value = part.strip().partition("=")
        if equals:
            fields.setdefault(name.strip(), value.strip())
    if fields.get("v") != "STSv1":
        return None
    policy_id = fields.get("id", "")
    return policy_id if _ID_RE.fullmatch(policy_id) else None


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy (section 3.2): its mode, ``max_age`` in seconds, the MX patterns,
    and the lines it was read from (for TLS-RPT's policy-string)."""

    mode: StsMode
    max_age: int
    mx: tuple[str, ...]
    lines: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> StsPolicy:
        """Read a policy file; ValueError says what is wrong with it."""
        values: dict[str, str] = {}
        mx: list[str] = []
        lines = tuple(line for line in text.replace("\r\n", "\n").split("\n") if line.strip())
        for line in lines:
            match = _FIELD_RE.fullmatch(line)
            if match is None:
                raise ValueError(f"not a 'key: value' line: {line[:80]!r}")
            name, value = match[1], match[2]
            if name == "mx":
                if not _PATTERN_RE.fullmatch(value):
                    raise ValueError(f"not an MX pattern: {value[:80]!r}")
                mx.append(value.lower().rstrip("."))
            else:
                values.setdefault(name, value)
        if values.get("version") != "STSv1":
            raise ValueError("version: STSv1 is missing")
        mode = _MODES.get(values.get("mode", ""))
        if mode is None:
            raise ValueError(f"mode must be enforce, testing or none, not {values.get('mode')!r}")
        max_age = values.get("max_age", "")
        if not max_age.isdigit() or int(max_age) > MAX_AGE_LIMIT:
            raise ValueError(f"max_age must be 0 to {MAX_AGE_LIMIT} seconds, not {max_age!r}")
        if mode != "none" and not mx:
            raise ValueError(f"mode {mode} names no mx")
        return cls(mode, int(max_age), tuple(mx), lines)

    def matches(self, host: str) -> bool:
        """Whether the MX host ``host`` (an A-label name) is one the policy names: the
        same name, or ``*.<rest>`` for exactly one more label in front (section 4.1)."""
        name = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, dot, rest = name.partition(".")
                if dot and label and rest == pattern[2:]:
                    return True
            elif name == pattern:
                return True
        return False

    def describe(self) -> str:
        return f"mode {self.mode}, mx {' '.join(self.mx) or '-'}, max_age {self.max_age}s"


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A policy as fetched: the TXT ``id`` it was published under, and when."""

    domain: str
    policy_id: str
    policy: StsPolicy
    fetched_at: float

    def expired(self, now: float) -> bool:
        return now >= self.fetched_at + self.policy.max_age

    def stale(self, now: float) -> bool:
        return now >= self.fetched_at + min(REFRESH_AFTER, self.policy.max_age / 2)

    def to_json(self) -> str:
        text = "\n".join(self.policy.lines)
        return json.dumps(
            {
                "domain": self.domain,
                "id": self.policy_id,
                "fetched_at": self.fetched_at,
                "policy": text,
            }
        )

    @classmethod
    def from_json(cls, data: str) -> CachedPolicy:
        raw = json.loads(data)
        policy = StsPolicy.parse(str(raw["policy"]))
        return cls(str(raw["domain"]), str(raw["id"]), policy, float(raw["fetched_at"]))


@dataclass(frozen=True, slots=True)
class StsLookup:
    """What :meth:`MtaSts.policy` found: the policy that applies (None: none), and how
    it was found, for logs and ``smtpx route test``."""

    domain: str
    cached: CachedPolicy | None
    how: str
    problem: Problem | None = None

    @property
    def policy(self) -> StsPolicy | None:
        if self.cached is None or self.cached.policy.mode == "none":
            return None
        return self.cached.policy


class _FetchFailed(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


@dataclass
class MtaSts:
    """Policy discovery, fetching and caching (see the module docstring).

    ``port`` is the policy host's port: 443, which only tests change. ``directory``
    holds the cache files (None: memory only); ``write`` False reads them and never
    writes (``smtpx route test`` next to a running server).
    """

    dns: RoutingResolver
    directory: Path | None
    ssl_context: ssl.SSLContext
    clock: Callable[[], float] = time.time
    on_problem: Callable[[str, Problem], None] | None = None
    port: int = 443
    write: bool = True
    _memory: dict[str, CachedPolicy | None] = field(default_factory=dict)
    _fetching: dict[str, asyncio.Task[CachedPolicy]] = field(default_factory=dict)

    async def policy(self, domain: str) -> StsLookup:
        """The policy for mail to ``domain`` (an A-label domain)."""
        now = self.clock()
        cached = self._cached(domain)
        if cached is not None and cached.expired(now):
            cached = None
        texts, answer = await self.dns.txt(f"_mta-sts.{domain}")
        published = None if answer.failed else sts_id(texts)
        if published is None:
            why = f"TXT lookup failed: {answer.error}" if answer.failed else "no STSv1 TXT record"
            how = f"{why}; the cached policy applies" if cached else why
            return StsLookup(domain, cached, how)
        if cached is not None and cached.policy_id == published and not cached.stale(now):
            return StsLookup(domain, cached, f"cached (id {published})")
        try:
            fresh = await self._fetch_once(domain, published)
        except _FetchFailed as exc:
            self._report(domain, exc.problem)
            how = f"fetch failed ({exc.problem.detail})"
            return StsLookup(
                domain, cached, how + ("; the cached policy applies" if cached else ""), exc.problem
            )
        return StsLookup(domain, fresh, f"fetched (id {published})")

    def _report(self, domain: str, problem: Problem) -> None:
        log.warning("MTA-STS policy of %s: %s", domain, problem.detail)
        if self.on_problem is not None:
            self.on_problem(domain, problem)

    # -- fetching ------------------------------------------------------------------------

    async def _fetch_once(self, domain: str, policy_id: str) -> CachedPolicy:
        """One fetch per domain at a time: concurrent deliveries share it."""
        task = self._fetching.get(domain)
        if task is None:
            task = asyncio.ensure_future(self._fetch(domain, policy_id))
            self._fetching[domain] = task
            task.add_done_callback(lambda _: self._fetching.pop(domain, None))
        return await asyncio.shield(task)

    async def _fetch(self, domain: str, policy_id: str) -> CachedPolicy:
        host = f"mta-sts.{domain}"
        port = "" if self.port == 443 else f":{self.port}"
        url = f"https://{host}{port}/.well-known/mta-sts.txt"
        text = await self._download(url)
        try:
            policy = StsPolicy.parse(text)
        except ValueError as exc:
            raise _FetchFailed(Problem("sts-policy-invalid", f"{url}: {exc}")) from None
        fresh = CachedPolicy(domain, policy_id, policy, self.clock())
        self._store(fresh)
        return fresh

    async def _download(self, url: str) -> str:
        connector = aiohttp.TCPConnector(
            ssl=self.ssl_context, resolver=self.dns.aiohttp_resolver(), use_dns_cache=False
        )
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(url, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise _FetchFailed(
                        Problem("sts-policy-fetch-error", f"{url}: HTTP {response.status}, not 200")
                    )
                if response.content_type != "text/plain":
                    raise _FetchFailed(
                        Problem(
                            "sts-policy-invalid", f"{url}: {response.content_type}, not text/plain"
                        )
                    )
                body = await response.content.read(MAX_BODY + 1)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise _FetchFailed(
                Problem("sts-webpki-invalid", f"{url}: {exc.certificate_error}")
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise _FetchFailed(Problem("sts-policy-fetch-error", f"{url}: {detail}")) from None
        if len(body) > MAX_BODY:
            raise _FetchFailed(Problem("sts-policy-invalid", f"{url}: more than {MAX_BODY} octets"))
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise _FetchFailed(Problem("sts-policy-invalid", f"{url}: not UTF-8")) from None

    # -- the cache -----------------------------------------------------------------------

    def _path(self, domain: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{domain}.json"

    def _cached(self, domain: str) -> CachedPolicy | None:
        if domain in self._memory:
            return self._memory[domain]
        path = self._path(domain)
        found = None
        if path is not None:
            try:
                found = CachedPolicy.from_json(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("MTA-STS cache file %s is unreadable (ignored): %s", path, exc)
        self._memory[domain] = found
        return found

    def _store(self, cached: CachedPolicy) -> None:
        self._memory[cached.domain] = cached
        path = self._path(cached.domain)
        if path is None or not self.write:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(cached.to_json())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:  # kept in memory: this process still applies it
            log.error("cannot write the MTA-STS cache file %s: %s", path, exc)

"""DMARC (RFC 9989, "DMARCbis", which obsoleted RFC 7489 in May 2026): policy records,
the DNS Tree Walk, Identifier Alignment and the policy that applies.

No Python library does RFC 9989: authheaders' ``dmarcbis`` mode follows draft 07 (a walk
of five labels, relaxed alignment still through its public suffix list snapshot, a
hard-coded PSD list) and checkdmarc audits records without evaluating messages. So the
walk is here, on :class:`~smtpx.mta.inbound.lookup.AuthDns`; no public suffix list is
involved.

**Tree Walk (section 4.10).** Query ``_dmarc.<domain>``; then, from 7 labels when the
domain has 8 or more, else from its parent, one label less at a time up to the TLD: 8
queries at most. Records not starting with ``v=DMARC1`` are ignored, several DMARC
records at one name count as none, and the walk stops at a record with ``psd=n`` or
``psd=y``. The names are asked all at once (one round trip, not eight in a row).

**Organizational Domain (4.10.2).** Of the records found, longest name first: a ``psd=n``
record's name; or, for a ``psd=y`` record other than the starting name's, the name one
label below it; else the name with the fewest labels; with no record, the domain itself.

**Policy (4.10.1).** The Author Domain's own record (``p``), else its Organizational
Domain's, else its Public Suffix Domain's (``sp``, or ``np`` when the Author Domain does
not exist: NXDOMAIN). ``t=y`` lowers the policy one step (reject -> quarantine -> none,
section 4.7). A record without a valid ``p`` (or with an invalid ``sp``/``np``) counts as
``p=none`` when it names a valid ``rua`` URI, and as an error otherwise. No record at
all: the result is ``none`` and nothing more is done.

**Alignment (4.10.3).** An SPF pass for the MAIL FROM domain, or a DKIM pass, aligns when
its domain equals the Author Domain, or, with relaxed alignment (``aspf``/``adkim`` =
``r``, the default), when both have the same Organizational Domain. A domain that does
not end with the Author Domain's Organizational Domain cannot have it as its own, so it
costs no queries.

A DNS failure where an answer was needed makes the result ``temperror`` (the policy is
then not applied, section 5.3.8), unless an aligned pass was found anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import dkim

from smtpx.errors import ParseError
from smtpx.mta.inbound.lookup import AuthDns, Outcome
from smtpx.mta.inbound.results import MethodResult
from smtpx.protocol.domains import domain_to_ascii

__all__ = [
    "DmarcEvaluator",
    "DmarcRecord",
    "DmarcResult",
    "author_domains",
    "parse_record",
    "walk_targets",
]

POLICIES = ("none", "quarantine", "reject")
MAX_WALK = 8  # queries per Tree Walk (section 4.10)
MAX_AUTHOR_DOMAINS = 5  # distinct domains of a From field evaluated
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s,!;]+(?:![0-9]+[kmgtKMGT]?)?")


class DmarcTempError(Exception):
    """A DNS answer the evaluation needed did not come (for now)."""


# -- records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A DMARC Policy Record (section 4.7). Policies are None when absent or invalid;
    ``invalid`` names the policy tags present with a value that is not one."""

    p: str | None = None
    sp: str | None = None
    np: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    psd: str = "u"
    testing: bool = False
    rua: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """Whether its policies can be applied (possibly as ``p=none``, see :meth:`policy`)."""
        return (self.p is not None and not self.invalid) or bool(self.rua)

    def policy(self, tag: str) -> str:
        """The policy of ``tag`` ("p", "sp" or "np") as published, with the fallbacks of
        section 4.7 (np -> sp -> p); ``none`` for a record without valid policies that
        names a report address (section 4.10.1)."""
        if self.p is None or self.invalid:
            return "none"
        if tag == "np" and self.np is not None:
            return self.np
        if tag in ("np", "sp") and self.sp is not None:
            return self.sp
        return self.p


def parse_record(text: bytes) -> DmarcRecord | None:
    """The record in one TXT record's text, or None when it is not a DMARC record (it must
    start with ``v=DMARC1``, case-sensitive). Unknown tags and invalid values of the
    other tags are ignored (their defaults apply), as section 4.8 requires."""
    parts = text.decode("ascii", "replace").split(";")
    name, equals, value = parts[0].partition("=")
    if name.strip(" \t") != "v" or not equals or value.strip(" \t") != "DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        key, equals, value = part.partition("=")
        key = key.strip(" \t").lower()
        if equals and key and key not in tags:
            tags[key] = value.strip(" \t")
    fields: dict[str, object] = {}
    invalid = []
    for key in ("p", "sp", "np"):
        if key in tags:
            policy = tags[key].lower()
            if policy in POLICIES:
                fields[key] = policy
            else:
                invalid.append(key)
    for key in ("adkim", "aspf"):
        if tags.get(key, "").lower() in ("r", "s"):
            fields[key] = tags[key].lower()
    if tags.get("psd", "").lower() in ("y", "n", "u"):
        fields["psd"] = tags["psd"].lower()
    fields["testing"] = tags.get("t", "").lower() == "y"
    uris = [uri.strip(" \t") for uri in tags.get("rua", "").split(",")]
    fields["rua"] = tuple(uri for uri in uris if _URI.fullmatch(uri))
    return DmarcRecord(invalid=tuple(invalid), **fields)  # type: ignore[arg-type]


def walk_targets(domain: str) -> list[str]:
    """The names a Tree Walk from ``domain`` asks about, in order (section 4.10)."""
    labels = domain.rstrip(".").split(".")
    targets = [".".join(labels)]
    rest = labels[-7:] if len(labels) >= MAX_WALK else labels[1:]
    while rest:
        targets.append(".".join(rest))
        rest = rest[1:]
    return targets


def _lowered(policy: str, testing: bool) -> str:
    """The policy to apply: with ``t=y`` one step below the one published."""
    if not testing or policy == "none":
        return policy
    return POLICIES[POLICIES.index(policy) - 1]


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """The outcome for one Author Domain. ``policy`` is the policy to apply after ``t=``
    (the ``policy.dmarc`` of RFC 9989 section 10.1), ``published`` the one found under
    ``tag`` ("p", "sp" or "np") at ``policy_domain``; both empty without a record."""

    result: str  # pass, fail, none, temperror, permerror
    author_domain: str = ""
    policy: str = ""
    published: str = ""
    tag: str = ""
    testing: bool = False
    policy_domain: str = ""
    reason: str = ""

    def method_result(self) -> MethodResult:
        comment = f"{self.tag}={self.published}" if self.tag else ""
        if self.testing:
            comment += " t=y"
        if self.policy_domain and self.policy_domain != self.author_domain:
            comment += f" from {self.policy_domain}"
        props = []
        if self.author_domain:
            props.append(("header.from", self.author_domain))
        if self.policy:
            props.append(("policy.dmarc", self.policy))
        return MethodResult(
            "dmarc",
            self.result,
            comment=comment.strip(),
            reason=self.reason,
            properties=tuple(props),
        )


def author_domains(header: bytes | Sequence[tuple[bytes, bytes]] | None) -> list[str] | str:
    """The distinct domains (A-labels, lower case) of the addresses in the message's From
    field, or the reason there are none to judge by: no From field, several From fields
    (RFC 5322 allows one), an address without a usable domain. ``header`` is the header
    block, or its fields as dkimpy parses them (None: it could not)."""
    fields: Sequence[tuple[bytes, bytes]] | None = None
    if isinstance(header, bytes):
        with contextlib.suppress(dkim.DKIMException):
            fields = dkim.rfc822_parse(header)[0]
    else:
        fields = header
    if fields is None:
        return "header not parsable"
    values = [value for name, value in fields if name.strip().lower() == b"from"]
    if not values:
        return "no From field"
    if len(values) > 1:
        return "several From fields"
    text = values[0].decode("utf-8", "replace").replace("\r\n", "")
    domains: dict[str, None] = {}
    for _, address in email.utils.getaddresses([text]):
        if not address:
            continue
        local, at, domain = address.rpartition("@")
        if not (local and at and domain):
            return "a From address without a domain"
        try:
            domains[domain_to_ascii(domain.strip().rstrip(".")).lower()] = None
        except (ParseError, ValueError):
            return "a From address with an invalid domain"
    if not domains:
        return "no address in the From field"
    return list(domains)[:MAX_AUTHOR_DOMAINS]


# -- the walk and the evaluation ----------------------------------------------------------


Walk = list[tuple[str, DmarcRecord]]  # the records found, longest name first


class DmarcEvaluator:
    """DMARC for the messages of one transaction: DNS answers are kept while it lives."""

    def __init__(self, dns_: AuthDns) -> None:
        self.dns = dns_
        self._records: dict[str, DmarcRecord | Outcome | None] = {}
        self._walks: dict[str, Walk] = {}

    async def _fetch(self, domains: Sequence[str]) -> None:
        wanted = [d for d in dict.fromkeys(domains) if d not in self._records]
        answers = await asyncio.gather(*(self.dns.txt(f"_dmarc.{d}") for d in wanted))
        for domain, answer in zip(wanted, answers, strict=True):
            if answer.outcome is Outcome.TEMPERROR:
                self._records[domain] = Outcome.TEMPERROR
                continue
            records = [r for r in map(parse_record, answer.records) if r is not None]
            self._records[domain] = records[0] if len(records) == 1 else None

    async def walk(self, domain: str) -> Walk:
        """The DMARC records of a Tree Walk from ``domain``; DmarcTempError when an answer
        it needed failed."""
        if domain in self._walks:
            return self._walks[domain]
        targets = walk_targets(domain)
        await self._fetch(targets)
        found: Walk = []
        for target in targets:
            record = self._records[target]
            if record is Outcome.TEMPERROR:
                raise DmarcTempError(f"_dmarc.{target}: DNS lookup failed")
            if isinstance(record, DmarcRecord):
                found.append((target, record))
                if record.psd in ("y", "n"):
                    break
        self._walks[domain] = found
        return found

    @staticmethod
    def organizational_domain(domain: str, walk: Walk) -> str:
        """Section 4.10.2 on the records of a walk from ``domain``."""
        for name, record in walk:
            if record.psd == "n":
                return name
            if record.psd == "y" and name != domain:
                below = len(name.split(".")) + 1
                return ".".join(domain.split(".")[-below:])
        return walk[-1][0] if walk else domain

    async def org_domain(self, domain: str) -> str:
        return self.organizational_domain(domain, await self.walk(domain))

    async def evaluate(
        self, author: str, spf_domain: str | None, dkim_domains: Sequence[str]
    ) -> DmarcResult:
        """The result for Author Domain ``author``, given the domain of an SPF pass for
        MAIL FROM (None without one) and the d= domains of passing DKIM signatures."""
        try:
            walk = await self.walk(author)
        except DmarcTempError as exc:
            return DmarcResult("temperror", author, reason=str(exc))
        if not walk:
            return DmarcResult("none", author)
        policy_domain, record, tag = await self._policy_record(author, walk)
        base = DmarcResult(
            "fail",
            author,
            policy=_lowered(record.policy(tag), record.testing),
            published=record.policy(tag),
            tag=tag,
            testing=record.testing,
            policy_domain=policy_domain,
        )
        if not record.usable:
            reason = "policy record without a valid policy or report address"
            return replace(base, result="permerror", reason=reason, policy="", published="", tag="")
        org = self.organizational_domain(author, walk)
        identifiers = [(spf_domain, record.aspf)] if spf_domain else []
        identifiers += [(d, record.adkim) for d in dict.fromkeys(dkim_domains)]
        trouble = ""
        for domain, mode in identifiers:
            try:
                if await self._aligned(domain, author, org, mode):
                    return replace(base, result="pass")
            except DmarcTempError as exc:
                trouble = str(exc)
        if trouble:
            return replace(base, result="temperror", reason=trouble)
        return base

    async def _policy_record(self, author: str, walk: Walk) -> tuple[str, DmarcRecord, str]:
        """(where, record, which tag applies) by section 4.10.1."""
        first_name, first = walk[0]
        if first_name == author:
            return author, first, "p"
        org = self.organizational_domain(author, walk)
        found = dict(walk)
        name = org if org in found else walk[-1][0]  # else: the Public Suffix Domain's
        record = found[name]
        if record.np is not None and await self.dns.exists(author) is False:
            return name, record, "np"
        return name, record, "sp"

    async def _aligned(self, domain: str, author: str, org: str, mode: str) -> bool:
        domain = domain.lower().rstrip(".")
        if domain == author:
            return True
        if mode == "s" or not (domain == org or domain.endswith("." + org)):
            return False
        return await self.org_domain(domain) == org

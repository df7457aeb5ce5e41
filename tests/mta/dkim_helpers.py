"""DKIM test helpers: keys made per test run (never committed), their records in the DNS
lab, and two verifiers that look the keys up there: dkimpy and OpenDKIM."""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import dns.exception
import dns.resolver

from smtpx.mta.dkim import DkimKey, generate_key, parse_key
from smtpx.testing.dns import DnsLab, Zone
from tests.conftest import require_tool


@functools.cache
def key_pem(algorithm: str, n: int = 0) -> bytes:
    """A private key (PEM), made once per test run for each (algorithm, n)."""
    return generate_key(algorithm)


def write_key(path: Path, algorithm: str, n: int = 0) -> DkimKey:
    path.write_bytes(key_pem(algorithm, n))
    path.chmod(0o600)
    return parse_key(key_pem(algorithm, n))


def key_zone(origin: str, keys: dict[str, DkimKey]) -> Zone:
    """A zone publishing ``keys`` (selector -> key) at ``SELECTOR._domainkey``."""
    zone = Zone(origin)
    for selector, key in keys.items():
        zone.txt(f"{selector}._domainkey", key.txt_record())
    return zone


def lab_dnsfunc(lab: DnsLab) -> Callable[..., bytes | None]:
    """dkimpy's DNS hook, answered by the lab."""
    resolver = lab.blocking_resolver()

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException:
            return None
        return b"".join(next(iter(answer)).strings)

    return txt


def signature_fields(message: bytes) -> list[dict[bytes, bytes]]:
    """The tags of each DKIM-Signature field, top first."""
    verifier = dkim.DKIM(message)
    return [
        dkim.util.parse_tag_value(value)
        for name, value in verifier.headers
        if name.lower() == b"dkim-signature"
    ]


def dkimpy_results(message: bytes, lab: DnsLab) -> list[tuple[str, str, bool]]:
    """(selector, a=, verified) for each signature, top first, checked by dkimpy."""
    dnsfunc = lab_dnsfunc(lab)
    results = []
    for index, tags in enumerate(signature_fields(message)):
        verifier = dkim.DKIM(message, minkey=1024)
        try:
            ok = bool(verifier.verify(idx=index, dnsfunc=dnsfunc))
        except dkim.ValidationError:  # dkimpy says "body hash mismatch" so
            ok = False
        results.append((tags[b"s"].decode(), tags[b"a"].decode(), ok))
    return results


def opendkim_results(message: bytes, lab: DnsLab, work: Path) -> list[tuple[str, str]]:
    """(selector, result) for each signature as OpenDKIM (``opendkim -t``, which asks the
    lab through libunbound) reports it in its Authentication-Results field."""
    opendkim = require_tool("opendkim")
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "opendkim.conf"
    conf.write_text(
        f"Mode v\nSyslog no\nResolverConfiguration {lab.libunbound_conf()}\n"
        f"PidFile {work / 'opendkim.pid'}\n"
    )
    path = work / "message.eml"
    path.write_bytes(message)
    run = subprocess.run(
        [opendkim, "-x", str(conf), "-t", str(path.absolute()), "-vvv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = run.stdout + run.stderr
    match = re.search(r"hname='Authentication-Results' hvalue='([^']*)'", said)
    assert run.returncode == 0 and match is not None, said
    # dkim=pass (2048-bit key; unprotected) header.d=example.org ... header.s=r2026 ...;
    results = re.sub(r"\([^)]*\)", "", match[1])  # comments hold semicolons
    found = re.findall(r"dkim=(\w+)[^;]*?header\.s=([\w.-]+)", results)
    return [(selector, result) for result, selector in found]

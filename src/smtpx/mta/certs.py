"""Certificate checks made after the TLS handshake, on the chain the server presented:
WebPKI (MTA-STS, RFC 8461 section 4.2) and DANE (TLSA records, RFC 7672, RFC 7671).

Both run on :mod:`cryptography`'s path validation (``cryptography.x509.verification``),
so that MTA-STS ``testing`` (which only reports) and ``enforce`` (which refuses) judge a
certificate the same way. Its server-certificate rules are the CA/Browser Forum's; for the
server's own certificate they are relaxed to what mail servers are held to (a
subjectAltName must be present, any criticality; an extendedKeyUsage, if any, must allow
serverAuth), while CA certificates keep the full rules.

A problem comes back as a :class:`Problem`: the TLS-RPT result type (RFC 8460 4.3) and
a sentence for the log and the delivery attempt.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.rdata
import dns.rdtypes.ANY.TLSA
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

__all__ = ["Problem", "Tlsa", "dane_problem", "trust_store", "webpki_problem"]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a check failed: ``result_type`` as TLS-RPT names it, ``detail`` for people."""

    result_type: str
    detail: str

    def __str__(self) -> str:
        return self.detail


# -- trust -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def trust_store(ca_file: Path | None = None) -> Store:
    """The CA certificates of ``ca_file`` (PEM), or of the system's store."""
    if ca_file is not None:
        return Store(x509.load_pem_x509_certificates(ca_file.read_bytes()))
    paths = ssl.get_default_verify_paths()
    certificates: list[x509.Certificate] = []
    if paths.cafile:
        certificates += _pem_file(Path(paths.cafile))
    if not certificates and paths.capath and Path(paths.capath).is_dir():
        for path in sorted(Path(paths.capath).glob("*.pem")):
            certificates += _pem_file(path)
    if not certificates:
        raise ValueError("no CA certificates in the system's trust store: set a ca_file")
    return Store(certificates)


def _pem_file(path: Path) -> list[x509.Certificate]:
    try:
        with warnings.catch_warnings():  # old roots with odd serial numbers: still roots
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []


def _check_server_eku(policy: object, certificate: object, extension: object) -> None:
    if isinstance(extension, x509.ExtendedKeyUsage) and (
        ExtendedKeyUsageOID.SERVER_AUTH not in extension
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in extension
    ):
        raise ValueError("extendedKeyUsage does not allow serverAuth")


def _builder(store: Store, now: datetime.datetime) -> PolicyBuilder:
    server = (
        ExtensionPolicy.permit_all()
        .require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _check_server_eku)
    )
    return (
        PolicyBuilder()
        .store(store)
        .time(now)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=server)
    )


def _load(chain: Sequence[bytes]) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(der) for der in chain]


# -- WebPKI ----------------------------------------------------------------------------


def webpki_problem(
    chain: Sequence[bytes],
    names: Sequence[str],
    store: Store,
    now: datetime.datetime | None = None,
) -> Problem | None:
    """None when ``chain`` (leaf first) leads to a CA of ``store`` and its leaf is valid
    now for one of ``names`` (A-label host names); else why not."""
    if not chain:
        return Problem("starttls-not-supported", "the session is not encrypted")
    try:
        certificates = _load(chain)
    except ValueError as exc:
        return Problem("validation-failure", f"unreadable certificate: {exc}")
    when = now or datetime.datetime.now(datetime.UTC)
    leaf, others = certificates[0], certificates[1:]
    errors: list[str] = []
    for name in names:
        try:
            _builder(store, when).build_server_verifier(x509.DNSName(name)).verify(leaf, others)
        except (VerificationError, ValueError) as exc:
            errors.append(str(exc))
            continue
        return None
    return _classify(leaf, names, when, errors[0] if errors else "no name to check")


def _classify(
    leaf: x509.Certificate, names: Sequence[str], now: datetime.datetime, error: str
) -> Problem:
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return Problem("certificate-expired", f"the certificate is not valid now: {error}")
    if "subjectAltName" in error:
        wanted = " or ".join(names)
        return Problem("certificate-host-mismatch", f"the certificate is not for {wanted}")
    return Problem("certificate-not-trusted", f"the certificate is not trusted: {error}")


# -- DANE ------------------------------------------------------------------------------

_DIGESTS = {1: hashlib.sha256, 2: hashlib.sha512}


@dataclass(frozen=True, slots=True)
class Tlsa:
    """A TLSA record (RFC 6698 2.1): certificate usage, selector, matching type, data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @classmethod
    def of(cls, rdata: dns.rdata.Rdata) -> Tlsa | None:
        """From a dnspython rdata (None when it is not a TLSA record)."""
        if not isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
            return None
        return cls(int(rdata.usage), int(rdata.selector), int(rdata.mtype), bytes(rdata.cert))

    @property
    def usable(self) -> bool:
        """DANE-TA(2) and DANE-EE(3) with a known selector and matching type; PKIX-TA(0)
        and PKIX-EE(1) are unusable for SMTP (RFC 7672 3.1.3)."""
        return self.usage in (2, 3) and self.selector in (0, 1) and self.mtype in (0, 1, 2)

    def matches(self, certificate: x509.Certificate) -> bool:
        if self.selector == 0:
            selected = certificate.public_bytes(Encoding.DER)
        else:
            selected = certificate.public_key().public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo
            )
        digest = _DIGESTS.get(self.mtype)
        return (digest(selected).digest() if digest else selected) == self.data

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


def dane_problem(
    chain: Sequence[bytes],
    records: Sequence[Tlsa],
    names: Sequence[str],
    now: datetime.datetime | None = None,
) -> Problem | None:
    """None when ``chain`` (leaf first) matches one of the usable ``records``:

    * DANE-EE (3): the leaf certificate or its public key; names and dates are ignored
      (RFC 7672 3.1.1);
    * DANE-TA (2): a certificate the server presented, which must then be a valid issuer
      path's trust anchor for a leaf valid now for one of ``names``, the MX host and the
      destination domain (RFC 7672 3.1.2, 3.2.2).
    """
    if not chain:
        return Problem("starttls-not-supported", "the session is not encrypted")
    usable = [record for record in records if record.usable]
    try:
        certificates = _load(chain)
    except ValueError as exc:
        return Problem("validation-failure", f"unreadable certificate: {exc}")
    leaf = certificates[0]
    if any(record.usage == 3 and record.matches(leaf) for record in usable):
        return None
    anchors = [
        cert
        for cert in certificates
        if any(record.usage == 2 and record.matches(cert) for record in usable)
    ]
    if not anchors:
        return Problem(
            "validation-failure",
            f"the certificate chain matches none of the {len(usable)} usable TLSA records",
        )
    problem = None
    for anchor in anchors:
        problem = webpki_problem(chain, names, Store([anchor]), now)
        if problem is None:
            return None
    assert problem is not None
    return Problem(problem.result_type, f"DANE-TA: {problem.detail}")

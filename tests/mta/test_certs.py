"""The certificate checks behind MTA-STS (WebPKI) and DANE (TLSA), on trustme chains."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smtpx.mta.certs import Tlsa, dane_problem, trust_store, webpki_problem

NOW = datetime.datetime.now(datetime.UTC)


def chain_of(cert: Any) -> tuple[bytes, ...]:
    """DER certificates of a trustme LeafCert, leaf first (as a server sends them)."""
    return tuple(
        x509.load_pem_x509_certificate(blob.bytes()).public_bytes(Encoding.DER)
        for blob in cert.cert_chain_pems
    )


def spki_sha256(der: bytes) -> bytes:
    key = x509.load_der_x509_certificate(der).public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).digest()


@pytest.fixture(scope="module")
def pki() -> tuple[Any, Any, tuple[bytes, ...]]:
    """A root, an intermediate, and a leaf for mx.test (chain: leaf, intermediate)."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    return root, intermediate, chain_of(intermediate.issue_cert("mx.test"))


def expired_leaf(ca: Any) -> Any:
    return ca.issue_cert(
        "mx.test",
        not_before=NOW - datetime.timedelta(days=30),
        not_after=NOW - datetime.timedelta(days=1),
    )


def _store(ca: Any) -> Any:
    from cryptography.x509.verification import Store

    return Store([x509.load_pem_x509_certificate(ca.cert_pem.bytes())])


def test_webpki_accepts_a_valid_chain_for_the_name(pki: Any) -> None:
    root, _, chain = pki
    assert webpki_problem(chain, ["mx.test"], _store(root)) is None
    assert webpki_problem(chain, ["other.test", "mx.test"], _store(root)) is None


def test_webpki_says_why_not(pki: Any) -> None:
    root, _, chain = pki
    mismatch = webpki_problem(chain, ["mx.example"], _store(root))
    assert mismatch is not None and mismatch.result_type == "certificate-host-mismatch"
    untrusted = webpki_problem(chain, ["mx.test"], _store(trustme.CA()))
    assert untrusted is not None and untrusted.result_type == "certificate-not-trusted"
    expired = webpki_problem(chain_of(expired_leaf(root)), ["mx.test"], _store(root))
    assert expired is not None and expired.result_type == "certificate-expired"
    plain = webpki_problem((), ["mx.test"], _store(root))
    assert plain is not None and plain.result_type == "starttls-not-supported"


def test_the_system_store_loads() -> None:
    # The Debian bundle (ca-certificates); nothing of it is contacted.
    assert trust_store() is trust_store()


def test_dane_ee_ignores_names_and_dates(pki: Any) -> None:
    _, _, chain = pki
    leaf = chain[0]
    records = [
        Tlsa(3, 1, 1, spki_sha256(leaf)),
        Tlsa(3, 0, 1, hashlib.sha256(leaf).digest()),
        Tlsa(3, 0, 2, hashlib.sha512(leaf).digest()),
        Tlsa(3, 0, 0, leaf),
    ]
    for record in records:
        assert dane_problem(chain, [record], ["not.the.name"]) is None
    old = chain_of(expired_leaf(trustme.CA()))
    assert dane_problem(old, [Tlsa(3, 1, 1, spki_sha256(old[0]))], ["mx.test"]) is None


def test_dane_ta_needs_the_anchor_in_the_chain_and_the_name(pki: Any) -> None:
    _, intermediate, chain = pki
    anchor = chain[1]  # the intermediate the server presents
    record = Tlsa(2, 1, 1, spki_sha256(anchor))
    assert dane_problem(chain, [record], ["mx.test"]) is None
    # The destination domain is a reference identifier too (RFC 7672 3.2.2).
    assert dane_problem(chain, [record], ["mx.example", "mx.test"]) is None
    wrong_name = dane_problem(chain, [record], ["mx.example"])
    assert wrong_name is not None and wrong_name.result_type == "certificate-host-mismatch"
    old = (*chain_of(expired_leaf(intermediate)), anchor)
    expired = dane_problem(old, [record], ["mx.test"])
    assert expired is not None and expired.result_type == "certificate-expired"


def test_dane_refuses_a_chain_no_record_matches(pki: Any) -> None:
    _, _, chain = pki
    wrong = [Tlsa(3, 1, 1, b"\xab" * 32), Tlsa(2, 1, 1, b"\xcd" * 32)]
    problem = dane_problem(chain, wrong, ["mx.test"])
    assert problem is not None and problem.result_type == "validation-failure"
    assert "none of the 2 usable TLSA records" in problem.detail
    # PKIX-EE (1) is unusable for SMTP even when it matches (RFC 7672 3.1.3).
    pkix = [Tlsa(1, 1, 1, spki_sha256(chain[0]))]
    assert not pkix[0].usable
    assert dane_problem(chain, pkix, ["mx.test"]) is not None
    assert str(wrong[0]) == "3 1 1 " + "ab" * 32

"""DKIM signing (smtpx.mta.dkim): keys, which key signs what, the header list, and
signatures checked by dkimpy and by OpenDKIM against keys published in the DNS lab."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from smtpx.content import Spill
from smtpx.errors import ConfigError
from smtpx.mta.config import DkimSign
from smtpx.mta.dkim import DkimSigner, SigningKey, from_domains, load_key, parse_key
from smtpx.testing.dns import DnsLab
from tests.mta.dkim_helpers import (
    dkimpy_results,
    key_zone,
    opendkim_results,
    signature_fields,
    write_key,
)

StartLab = Callable[..., DnsLab]

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: quarterly  numbers\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <q4@example.org>\r\n"
    b"Received: from elsewhere\r\n"
    b"\r\n"
    b"Totals  attached. \r\n"
    b"\r\n"
)


@pytest.fixture
def signer(tmp_path: Path) -> DkimSigner:
    """example.org with an RSA and an Ed25519 key (dual signatures)."""
    write_key(tmp_path / "rsa.key", "rsa")
    write_key(tmp_path / "ed.key", "ed25519")
    return DkimSigner.from_settings(
        [
            DkimSign(domain="example.org", selector="r2026", key_file=tmp_path / "rsa.key"),
            DkimSign(domain="example.org", selector="e2026", key_file=tmp_path / "ed.key"),
        ]
    )


@pytest.fixture
def lab(dns_lab: StartLab, signer: DkimSigner) -> DnsLab:
    return dns_lab(key_zone("example.org", {k.selector: k.key for k in signer.keys}))


# -- keys --------------------------------------------------------------------------------


def test_keys_rsa_and_ed25519_with_their_records(tmp_path: Path) -> None:
    rsa_key = write_key(tmp_path / "r.key", "rsa")
    assert (rsa_key.algorithm, rsa_key.bits) == ("rsa", 2048)
    assert rsa_key.txt_record().startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    ed = write_key(tmp_path / "e.key", "ed25519")
    assert ed.txt_record().startswith("v=DKIM1; k=ed25519; p=")
    assert len(ed.public) == 44  # RFC 8463: the raw 32-octet key, base64
    assert load_key(tmp_path / "e.key") == ed
    assert "private" not in repr(ed) and repr(ed) == "DkimKey(ed25519, 256 bits)"


def test_unusable_keys_are_refused_with_the_reason(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="1024 bits: DKIM keys must have 2048 to 4096"):
        parse_key(_pem(small))
    with pytest.raises(ValueError, match="RSA or Ed25519 keys only"):
        parse_key(_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ValueError, match="not a PEM private key"):
        parse_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ValueError, match=r"cannot read .*absent\.key"):
        load_key(tmp_path / "absent.key")
    entry = DkimSign(domain="example.org", selector="s", key_file=tmp_path / "absent.key")
    with pytest.raises(ConfigError, match=r"^dkim\.sign\[0\]\.key_file: cannot read"):
        DkimSigner.from_settings([entry])


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- which key, which headers -------------------------------------------------------------


def test_from_domains() -> None:
    assert from_domains(MESSAGE) == ["example.org"]
    assert from_domains(b'From: a@b.example, "C" <c@D.Example.>\r\n\r\n') == [
        "b.example",
        "d.example",
    ]
    assert from_domains("From: a@bücher.example\r\n\r\n".encode()) == ["xn--bcher-kva.example"]
    assert from_domains(b"To: a@b.example\r\n\r\n") is None  # no From
    assert from_domains(b"From: a@b.example\r\nFrom: c@b.example\r\n\r\n") is None
    assert from_domains(b"From: undisclosed\r\n\r\n") is None
    assert from_domains(b"From: a@b.example\r\nbad header line\r\n\r\n") is None


def test_the_most_specific_domain_covering_every_from_domain_signs(tmp_path: Path) -> None:
    key = write_key(tmp_path / "k", "ed25519")
    org = SigningKey("example.org", "a", key)
    org2 = SigningKey("example.org", "b", key)
    mail = SigningKey("mail.example.org", "c", key)
    signer = DkimSigner([org, mail, org2])
    assert signer.keys_for(["example.org"]) == [org, org2]
    assert signer.keys_for(["news.example.org"]) == [org, org2]
    assert signer.keys_for(["x.mail.example.org"]) == [mail]
    assert signer.keys_for(["mail.example.org", "example.org"]) == [org, org2]
    assert signer.keys_for(["example.org", "example.net"]) == []
    assert signer.keys_for(["badexample.org"]) == []
    assert signer.keys_for([]) == []


def test_header_list_signs_what_is_present_and_oversigns(tmp_path: Path) -> None:
    key = SigningKey("example.org", "s", write_key(tmp_path / "k", "ed25519"))
    present = Counter({"from": 1, "to": 1, "received": 3, "x-mailer": 1, "references": 2})
    names = [n.decode() for n in key.header_list(present)]
    assert Counter(names) == Counter(
        # present and listed: as often as present; oversigned: once more (absent ones too)
        {"from": 2, "to": 2, "references": 2, "reply-to": 1, "subject": 1, "date": 1, "cc": 1}
    )
    custom = SigningKey("example.org", "s", key.key, ("from", "x-mailer"), ("x-extra",))
    assert [n.decode() for n in custom.header_list(present)] == ["from", "x-mailer", "x-extra"]


# -- signatures, verified twice ------------------------------------------------------------


def test_dual_signature_verified_by_dkimpy_and_opendkim(
    signer: DkimSigner, lab: DnsLab, tmp_path: Path
) -> None:
    signed = signer.sign(MESSAGE) + MESSAGE
    tags = signature_fields(signed)
    assert [(t[b"s"], t[b"a"], t[b"d"]) for t in tags] == [
        (b"r2026", b"rsa-sha256", b"example.org"),
        (b"e2026", b"ed25519-sha256", b"example.org"),
    ]
    for t in tags:
        assert t[b"c"] == b"relaxed/relaxed" and b"l" not in t and b"t" in t
        signed_names = [n.strip() for n in t[b"h"].split(b":")]
        assert signed_names.count(b"from") == 2  # oversigned
        assert b"received" not in signed_names
    assert dkimpy_results(signed, lab) == [
        ("r2026", "rsa-sha256", True),
        ("e2026", "ed25519-sha256", True),
    ]
    assert opendkim_results(signed, lab, tmp_path / "ok") == [
        ("r2026", "pass"),
        ("e2026", "pass"),
    ]
    # A changed body fails both signatures, for both verifiers.
    damaged = signed.replace(b"Totals", b"Totally")
    assert [ok for _, _, ok in dkimpy_results(damaged, lab)] == [False, False]
    assert opendkim_results(damaged, lab, tmp_path / "bad") == [
        ("r2026", "fail"),
        ("e2026", "fail"),
    ]


def test_relaxed_canonicalization_survives_whitespace_changes(
    signer: DkimSigner, lab: DnsLab
) -> None:
    signed = signer.sign(MESSAGE) + MESSAGE
    rewrapped = signed.replace(b"Subject: quarterly  numbers", b"SUBJECT:  quarterly numbers")
    rewrapped = rewrapped.replace(b"Totals  attached. ", b"Totals attached.")
    assert [ok for _, _, ok in dkimpy_results(rewrapped, lab)] == [True, True]


def test_a_from_field_added_later_breaks_the_signature(signer: DkimSigner, lab: DnsLab) -> None:
    """From is oversigned: an attacker cannot add a second From that a reader would show."""
    signed = signer.sign(MESSAGE) + MESSAGE
    forged = signed.replace(b"To: bob", b"From: ceo@example.org\r\nTo: bob")
    assert [ok for _, _, ok in dkimpy_results(forged, lab)] == [False, False]
    # Fields not signed may be added (trace fields on the way, for instance).
    traced = signed.replace(b"To: bob", b"Received: from relay\r\nTo: bob")
    assert [ok for _, _, ok in dkimpy_results(traced, lab)] == [True, True]


def test_other_from_domains_and_unsignable_messages_are_left_alone(signer: DkimSigner) -> None:
    assert signer.sign(MESSAGE.replace(b"alice@example.org", b"alice@example.com")) == b""
    assert signer.sign(b"Subject: no from\r\n\r\nbody\r\n") == b""
    assert signer.sign(b"From: a@example.org\r\n\x00bad\r\n\r\n") == b""


# -- spilled messages: off the loop, one at a time -----------------------------------------


def spilled(message: bytes) -> Spill:
    spill = Spill(threshold=16)
    spill.add(message)
    assert spill.spilled
    return spill


async def test_a_spilled_message_is_signed_from_its_file(signer: DkimSigner, lab: DnsLab) -> None:
    body = b"".join(b"line %d of a long message\r\n" % n for n in range(20000))
    message = MESSAGE + body
    spill = spilled(message)
    try:
        content = spill.result()
        assert not isinstance(content, bytes)
        signature = await signer.signature(content.prepend(b"Received: from x\r\n"))
    finally:
        spill.close()
    assert [ok for _, _, ok in dkimpy_results(signature + message, lab)] == [True, True]


async def test_spilled_messages_are_signed_one_at_a_time(
    signer: DkimSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = 0
    most = 0
    lock = threading.Lock()
    real = DkimSigner._sign_spilled

    def counting(self: DkimSigner, content: object) -> bytes:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # a worker thread's work, not the event loop's
        try:
            return real(self, content)  # type: ignore[arg-type]
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(DkimSigner, "_sign_spilled", counting)
    spills = [spilled(MESSAGE) for _ in range(3)]
    try:
        contents = [s.result() for s in spills]
        small = [signer.signature(MESSAGE) for _ in range(3)]
        results = await asyncio.gather(*(signer.signature(c) for c in contents), *small)
    finally:
        for s in spills:
            s.close()
    assert most == 1
    assert all(r.startswith(b"DKIM-Signature: ") for r in results)


async def test_a_spilled_message_not_ours_is_not_read_past_its_header(
    signer: DkimSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    spill = spilled(MESSAGE.replace(b"example.org>", b"example.com>") + b"x" * 100_000)
    content = spill.result()
    assert not isinstance(content, bytes)

    def no_read(*args: object) -> bytes:
        raise AssertionError("the whole message was read")

    monkeypatch.setattr(type(content), "read", no_read)
    try:
        assert await signer.signature(content) == b""
    finally:
        spill.close()


def test_rsa_signatures_made_by_openssl_are_dkimpys_own(tmp_path: Path) -> None:
    """The one function replaced in dkimpy: OpenSSL's signature is the same octets as
    dkimpy's pure-Python one (PKCS#1 v1.5 is deterministic), and keys smtpx did not load
    still go to dkimpy's."""
    import hashlib

    import dkim
    import dkim.crypto

    from smtpx.mta import dkim as ours

    pem = write_key(tmp_path / "r.key", "rsa").private
    private = dkim.crypto.parse_pem_private_key(pem)
    assert dkim.RSASSA_PKCS1_v1_5_sign is ours._rsa_sign
    for data in (b"", b"headers to sign", bytes(range(256)) * 9):
        made = ours._rsa_sign(dkim.HashThrough(hashlib.sha256(data)), private)
        assert made == dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(data), private)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unknown = dkim.crypto.parse_pem_private_key(_pem(stranger).replace(b"\r\n", b"\n"))
    assert unknown["modulus"] not in ours._OPENSSL_KEYS
    made = ours._rsa_sign(dkim.HashThrough(hashlib.sha256(b"x")), unknown)
    assert made == dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(b"x"), unknown)

"""Inbound judging test helpers: one DNS zone (``test.``) holding every sender domain of
the tests, keys made per test run (never committed), and OpenDKIM as a signer."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtpx.mta.dkim import DkimKey, parse_key
from smtpx.mta.inbound.lookup import AuthDns
from smtpx.testing.dns import DnsLab, Zone
from tests.conftest import require_tool
from tests.mta.dkim_helpers import key_pem

CLIENT = "127.0.0.1"  # where the tests' SMTP clients connect from


def key(algorithm: str, n: int = 0) -> DkimKey:
    return parse_key(key_pem(algorithm, n))


def weak_rsa_record() -> str:
    """The record of a 768-bit RSA key (RFC 8301 3.2: under 1024 bits is not valid)."""
    modulus = (1 << 767) | 0xF00D_CAFE  # any odd 768-bit number will do: nothing verifies
    public = rsa.RSAPublicNumbers(65537, modulus).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def auth_zone() -> Zone:
    """Every domain the inbound tests send from (see each test for which it uses)."""
    zone = Zone("test")
    rsa, ed = key("rsa"), key("ed25519")
    # example.test: SPF for 127.0.0.1 only, DMARC p=reject, DKIM keys.
    zone.txt("example", f"v=spf1 ip4:{CLIENT} -all")
    zone.txt("_dmarc.example", "v=DMARC1; p=reject; rua=mailto:dmarc@example.test")
    zone.txt("r1._domainkey.example", rsa.txt_record())
    zone.txt("e1._domainkey.example", ed.txt_record())
    zone.txt("revoked._domainkey.example", "v=DKIM1; k=rsa; p=")
    zone.txt("weak._domainkey.example", weak_rsa_record())
    zone.txt("mail.example", f"v=spf1 ip4:{CLIENT} -all")  # a bounce domain (relaxed SPF)
    zone.txt("r1._domainkey.news.example", rsa.txt_record())  # relaxed DKIM
    zone.add("mx.example", "A", CLIENT)
    zone.txt("other", f"v=spf1 ip4:{CLIENT} -all")  # an unaligned domain that passes
    zone.txt("r1._domainkey.other", rsa.txt_record())
    zone.txt("forged", "v=spf1 ip4:192.0.2.1 -all")  # never 127.0.0.1
    zone.txt("_dmarc.forged", "v=DMARC1; p=reject")
    zone.txt("soft", "v=spf1 ip4:192.0.2.1 ~all")
    zone.txt("mxhost", "v=spf1 mx -all")
    zone.add("mxhost", "MX", "10 mx.example.test.")
    zone.txt("broken-spf", "v=spf1 include:elsewhere.invalid -all")  # REFUSED: temperror
    zone.txt("two-spf", "v=spf1 -all").txt("two-spf", "v=spf1 +all")
    zone.txt("macro", "v=spf1 exists:%{l}.allow.macro.test -all")
    zone.add("alice.allow.macro", "A", "127.0.0.2")
    many = " ".join(f"a:h{n}.many.test" for n in range(11))  # 11 lookups: over the limit
    zone.txt("many", f"v=spf1 {many} -all")
    zone.txt("mx.example", f"v=spf1 ip4:{CLIENT} -all")  # our client's HELO name passes
    # DMARC policies and tags.
    zone.txt("_dmarc.strict", "v=DMARC1; p=reject; aspf=s; adkim=s")
    zone.txt("mail.strict", f"v=spf1 ip4:{CLIENT} -all")
    zone.txt("strict", f"v=spf1 ip4:{CLIENT} -all")
    zone.txt("_dmarc.quarantine", "v=DMARC1; p=quarantine")
    zone.txt("_dmarc.testing", "v=DMARC1; p=reject; t=y")
    zone.txt("_dmarc.relaxed", "v=DMARC1; p=none")
    zone.txt("_dmarc.np", "v=DMARC1; p=none; sp=quarantine; np=reject")
    zone.add("real.np", "A", CLIENT)
    zone.txt("_dmarc.nopolicy", "v=DMARC1; p=bogus")  # no valid p, no rua: an error
    zone.txt("_dmarc.reportonly", "v=DMARC1; p=bogus; rua=mailto:r@reportonly.test")
    zone.txt("_dmarc.twice", "v=DMARC1; p=reject").txt("_dmarc.twice", "v=DMARC1; p=none")
    zone.txt("_dmarc.notfirst", "p=reject; v=DMARC1")
    # RFC 9989 appendix B.3: a PSD with psd=y, an Organizational Domain below it.
    zone.txt("_dmarc.bank", "v=DMARC1; p=reject; psd=y")
    zone.txt("_dmarc.giant.bank", "v=DMARC1; p=quarantine")
    zone.txt("mail.giant.bank", f"v=spf1 ip4:{CLIENT} -all")
    zone.txt("r1._domainkey.mail.mega.bank", rsa.txt_record())
    # psd=n: mail.corp.test is its own Organizational Domain, under corp.test.
    zone.txt("_dmarc.corp", "v=DMARC1; p=none")
    zone.txt("_dmarc.mail.corp", "v=DMARC1; p=reject; psd=n")
    zone.txt("r1._domainkey.corp", rsa.txt_record())
    zone.txt("r1._domainkey.a.mail.corp", rsa.txt_record())
    # A deep Author Domain: the walk skips to 7 labels.
    zone.txt("_dmarc.deep", "v=DMARC1; p=reject")
    zone.txt("r1._domainkey.deep", rsa.txt_record())
    return zone


def auth_dns(lab: DnsLab) -> AuthDns:
    return AuthDns(lab.resolver(lifetime=3.0), timeout=3.0)


def message(
    sender: str = "alice@example.test", subject: str = "Hello", body: bytes = b"Hello.\r\n"
) -> bytes:
    head = (
        f"From: {sender}\r\nTo: bob@local.test\r\nSubject: {subject}\r\n"
        "Date: Thu, 03 Dec 2026 09:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n\r\n"
    )
    return head.encode() + body


def dkimpy_sign(msg: bytes, domain: str, selector: str = "r1", algorithm: str = "rsa") -> bytes:
    """``msg`` signed by dkimpy (relaxed/relaxed, From oversigned)."""
    k = key(algorithm)
    signature = dkim.sign(
        msg,
        selector.encode(),
        domain.encode(),
        k.private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=k.signature_algorithm,
        include_headers=[b"from", b"to", b"subject", b"date", b"from"],
    )
    return bytes(signature) + msg


def opendkim_sign(
    msg: bytes, work: Path, domain: str, selector: str = "r1", algorithm: str = "rsa"
) -> bytes:
    """``msg`` signed by OpenDKIM (``opendkim -t`` in signing mode): rsa-sha256 or
    ed25519-sha256, relaxed/relaxed."""
    opendkim = require_tool("opendkim")
    work.mkdir(parents=True, exist_ok=True)
    keyfile = work / f"{algorithm}.pem"
    keyfile.write_bytes(key_pem(algorithm, 0))
    keyfile.chmod(0o600)
    conf = work / "sign.conf"
    conf.write_text(
        f"Mode s\nSyslog no\nDomain {domain}\nSelector {selector}\nKeyFile {keyfile}\n"
        f"SignatureAlgorithm {algorithm}-sha256\nCanonicalization relaxed/relaxed\n"
        f"RequireSafeKeys no\nPidFile {work / 'opendkim.pid'}\n"
    )
    path = work / "message.eml"
    path.write_bytes(msg)
    run = subprocess.run(
        [opendkim, "-x", str(conf), "-t", str(path), "-vvv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = run.stdout + run.stderr
    match = re.search(r"hname='DKIM-Signature' hvalue='([^']*)'", said)
    assert run.returncode == 0 and match is not None, said
    value = match[1].replace("\r\n", "\n").replace("\n", "\r\n")
    return b"DKIM-Signature: " + value.encode() + b"\r\n" + msg


def opendkim_sha1_sign(msg: bytes, work: Path, domain: str, selector: str = "r1") -> bytes:
    """``msg`` signed by ``opendkim-testmsg``, whose signatures are rsa-sha1."""
    testmsg = require_tool("opendkim-testmsg")
    work.mkdir(parents=True, exist_ok=True)
    keyfile = work / "sha1.pem"
    keyfile.write_bytes(key_pem("rsa", 0))
    run = subprocess.run(
        [testmsg, "-C", "-d", domain, "-s", selector, "-k", str(keyfile), "-t", str(work)],
        input=msg,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(b"DKIM-Signature: v=1; a=rsa-sha1;"), run.stdout[:80]
    return run.stdout

"""``smtpx dkim keygen``: a 0600 key file, and a TXT record that, published as printed,
verifies the key's signatures."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from smtpx.mta.dkim import DkimSigner, SigningKey, load_key
from smtpx.testing.dns import DnsLab, Zone
from tests.cli.helpers import invoke
from tests.mta.dkim_helpers import dkimpy_results

MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_writes_a_private_key_and_prints_the_record(
    tmp_path: Path, algorithm: str, dns_lab: Callable[..., DnsLab]
) -> None:
    path = tmp_path / "example.org.s2026.key"
    result = invoke(
        "dkim", "keygen", "Example.ORG", "S2026", "--algorithm", algorithm, "-o", str(path)
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key(path)
    assert key.algorithm == algorithm
    name, ttl, klass, rtype, data = result.stdout.strip().split(None, 4)
    assert (name, ttl, klass, rtype) == ("s2026._domainkey.example.org.", "3600", "IN", "TXT")
    assert data.startswith('( "v=DKIM1; k=' + algorithm)
    assert '[[dkim.sign]]\ndomain = "example.org"\nselector = "s2026"' in result.stderr
    assert f'key_file = "{path}"' in result.stderr
    # Published exactly as printed, the record verifies the key's signatures.
    lab = dns_lab(Zone("example.org").add(name, "TXT", data))
    signer = DkimSigner([SigningKey("example.org", "s2026", key)])
    assert dkimpy_results(signer.sign(MESSAGE) + MESSAGE, lab) == [
        ("s2026", "rsa-sha256" if algorithm == "rsa" else "ed25519-sha256", True)
    ]


def test_keygen_default_path_bits_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("dkim", "keygen", "example.org", "big", "--bits", "3072")
    assert result.exit_code == 0, result.output
    assert load_key(tmp_path / "example.org.big.key").bits == 3072
    before = (tmp_path / "example.org.big.key").read_bytes()
    again = invoke("dkim", "keygen", "example.org", "big")
    assert again.exit_code == 1
    assert "example.org.big.key exists: a key is never overwritten" in again.stderr
    assert (tmp_path / "example.org.big.key").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["bad domain", "s1"], "not a domain name or selector"),
        (["example.org", "s 1"], "not a domain name or selector"),
        (["example.org", "s1", "--bits", "1024"], "1024 is not in the range 2048<=x<=4096"),
        (["example.org", "s1", "--algorithm", "dsa"], "'dsa' is not one of 'rsa', 'ed25519'"),
    ],
)
def test_keygen_refuses_bad_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], said: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("dkim", "keygen", *args)
    assert result.exit_code == 2
    assert said in result.stderr
    assert list(tmp_path.iterdir()) == []

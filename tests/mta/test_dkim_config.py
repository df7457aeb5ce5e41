"""The [dkim] section: [[dkim.sign]] entries, their defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpx.errors import ConfigError
from smtpx.mta.config import DEFAULT_TOML, DKIM_HEADERS, DKIM_OVERSIGN, DkimSign, MtaConfig
from tests.mta.dkim_helpers import write_key

ENTRY = '[[dkim.sign]]\ndomain = "example.org"\nselector = "s2026"\nkey_file = "k.key"\n'


def test_no_signing_by_default() -> None:
    assert MtaConfig.default().dkim.sign == ()
    assert "[[dkim.sign]]" in DEFAULT_TOML  # documented, commented out


def test_entries_with_defaults_and_own_header_lists(tmp_path: Path) -> None:
    text = (
        '[[dkim.sign]]\ndomain = "Bücher.Example"\nselector = "S2026.Mail"\nkey_file = "a.key"\n'
        '[[dkim.sign]]\ndomain = "bücher.example"\nselector = "e2026"\nkey_file = "/k/b.key"\n'
        'headers = ["From", "Subject", "X-Campaign", "from"]\noversign = []\n'
    )
    first, second = MtaConfig.from_toml(text, base_dir=tmp_path).dkim.sign
    assert first == DkimSign(
        domain="xn--bcher-kva.example", selector="s2026.mail", key_file=tmp_path / "a.key"
    )
    assert (first.headers, first.oversign) == (DKIM_HEADERS, DKIM_OVERSIGN)
    assert "from" in DKIM_OVERSIGN and "list-unsubscribe-post" in DKIM_HEADERS
    assert second.key_file == Path("/k/b.key")
    assert second.headers == ("from", "subject", "x-campaign")
    assert second.oversign == ()


BAD = [
    ("[dkim]\nsign = {}", "dkim.sign: expected an array, got a table"),
    ('[[dkim.sign]]\nselector = "s"\nkey_file = "k"', "dkim.sign[0].domain: required"),
    ('[[dkim.sign]]\ndomain = "example.org"\nkey_file = "k"', "dkim.sign[0].selector: required"),
    ('[[dkim.sign]]\ndomain = "example.org"\nselector = "s"', "dkim.sign[0].key_file: required"),
    (ENTRY.replace('"example.org"', '"a b"'), "dkim.sign[0].domain: not a domain name: 'a b'"),
    (ENTRY.replace('"s2026"', '"s 1"'), "dkim.sign[0].selector: not a selector"),
    (ENTRY.replace('"s2026"', '""'), "dkim.sign[0].selector: must not be empty"),
    (ENTRY + "algorithm = 'rsa'", "dkim.sign[0].algorithm: unknown key"),
    (ENTRY + "headers = ['Subject']", "dkim.sign[0].headers: must include From"),
    (
        ENTRY + "headers = ['From', 'Received']",
        "dkim.sign[0].headers[1]: Received is never signed (RFC 6376 5.4)",
    ),
    (ENTRY + "oversign = ['Bad Name']", "dkim.sign[0].oversign[0]: not a header field name"),
    (ENTRY + "headers = 'From'", "dkim.sign[0].headers: expected an array"),
    (
        ENTRY + ENTRY.replace('"example.org"', '"EXAMPLE.org"'),
        "dkim.sign[1]: the same domain and selector as dkim.sign[0]",
    ),
]


@pytest.mark.parametrize(("document", "prefix"), BAD)
def test_errors_name_the_key(document: str, prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_toml(document)
    assert str(caught.value).startswith(prefix), str(caught.value)


def test_check_files_loads_every_key_and_names_the_bad_one(tmp_path: Path) -> None:
    config = MtaConfig.from_toml(
        ENTRY + ENTRY.replace("s2026", "e2026").replace("k.key", "e.key"), base_dir=tmp_path
    )
    with pytest.raises(ConfigError, match=r"^dkim\.sign\[0\]\.key_file: cannot read .*k\.key"):
        config.check_files()
    write_key(tmp_path / "k.key", "rsa")
    (tmp_path / "e.key").write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"^dkim\.sign\[1\]\.key_file: .*e\.key: not a PEM"):
        config.check_files()
    write_key(tmp_path / "e.key", "ed25519")
    config.check_files()

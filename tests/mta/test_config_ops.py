"""Configuration in operation: the keys operators added, and ``smtpx config show``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpx.cli import main
from smtpx.errors import ConfigError
from smtpx.mta.config import MtaConfig
from smtpx.mta.config_toml import HIDDEN, to_toml
from tests.mta.test_config import FULL

CONTRIB = Path(__file__).parents[2] / "contrib" / "smtpx.toml"


def test_failed_retention_is_a_duration_or_never() -> None:
    assert MtaConfig.default().spool.failed_retention == 7 * 86_400
    assert MtaConfig.from_toml('[spool]\nfailed_retention = "3d12h"').spool.failed_retention == (
        3.5 * 86_400
    )
    assert MtaConfig.from_toml('[spool]\nfailed_retention = "Never"').spool.failed_retention is None
    with pytest.raises(ConfigError, match=r"spool.failed_retention: not a duration: 'soon'"):
        MtaConfig.from_toml('[spool]\nfailed_retention = "soon"')
    with pytest.raises(ConfigError, match=r"spool.failed_retention: must be more than 0"):
        MtaConfig.from_toml("[spool]\nfailed_retention = 0")


# -- smtpx config show ----------------------------------------------------------------------

EXTRA = """
[[dkim.sign]]
domain = "example.com"
selector = "s2026"
key_file = "dkim/example.com.key"
oversign = ["from", "subject"]

[spool.postgresql]
dsn = "postgresql://smtpx:pg-s3cret@db.internal:5432/mail"
node = "node-a"
lease = "1m30s"

[routing.mta_sts]
enabled = true

[routing.tlsrpt]
enabled = true
contact = "tls-reports@example.com"

[inbound]
listeners = ["smtp"]
dmarc_quarantine = "quarantine"

[inbound.arc_seal]
domain = "example.com"
selector = "arc"
key_file = "dkim/example.com.key"

[dns]
nameservers = ["127.0.0.1:5353"]
timeout = "2s"

[dnsbl]
threshold = 2.5
[[dnsbl.zones]]
zone = "zen.example"
codes = { "127.0.0.2" = 2, "127.0.0.10" = 0.5 }
[[dnsbl.zones]]
zone = "wl.example"
weight = -3

[[rate_limits.rules]]
by = "network"
recipients = 50
window = "10m"

[greylist]
enabled = true
delay = "1m"

[redis]
url = "redis://:r3dis-pw@127.0.0.1:6379/1"
"""


def full_config(tmp_path: Path) -> MtaConfig:
    (tmp_path / "provider.password").write_text("hunter2\n")
    file = tmp_path / "smtpx.toml"
    text = FULL.replace(
        'delay_warning_after = "4h"', 'delay_warning_after = 0.25\nfailed_retention = "never"'
    )
    file.write_text(text.replace("[routing]\n", "[routing]\nchunking = false\n") + EXTRA)
    return MtaConfig.load(file)


def test_show_round_trips_every_section(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    assert config.spool.failed_retention is None and config.dkim.sign and config.spool.postgresql
    text = to_toml(config, secrets=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert MtaConfig.from_toml(text, base_dir=elsewhere) == config  # paths are absolute
    assert 'failed_retention = "never"' in text and 'delay_warning_after = "0.25s"' in text
    assert 'max_message_size = "512K"' in text and 'data_timeout = "10m"' in text
    assert '"xn--bcher-kva.example" = ["mx.xn--bcher-kva.example:25"]' in text
    assert "threshold = 2.5" in text and "[[dnsbl.zones]]" in text and "weight = -3.0" in text


def test_show_round_trips_the_defaults_and_the_shipped_file(tmp_path: Path) -> None:
    default = MtaConfig.default(base_dir=tmp_path)
    text = to_toml(default)
    assert MtaConfig.from_toml(text) == default
    assert "# cert_file = (not set)" in text and "[routing.credentials]" in text
    shipped = MtaConfig.load(CONTRIB)
    assert MtaConfig.from_toml(to_toml(shipped)) == shipped


def test_show_hides_secrets_unless_asked(tmp_path: Path) -> None:
    text = to_toml(full_config(tmp_path))
    for secret in ("hunter2", "s3cret", "pg-s3cret", "r3dis-pw"):
        assert secret not in text
    assert 'password = "(hidden)"' in text
    assert 'dsn = "postgresql://smtpx:(hidden)@db.internal:5432/mail"' in text
    assert MtaConfig.from_toml(text).routing.credentials["10.1.2.3"].password == HIDDEN


def test_smtpx_config_show(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    shown = CliRunner().invoke(main, ["config", "show", "--config", str(config.source)])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith(f"# smtpx config show: {config.source}, with every default")
    assert "hunter2" not in shown.stdout
    with_secrets = CliRunner().invoke(
        main, ["config", "show", "--secrets"], env={"SMTPX_CONFIG": str(config.source)}
    )
    assert MtaConfig.from_toml(with_secrets.stdout) == config
    default = CliRunner().invoke(main, ["config", "show"], env={"SMTPX_CONFIG": ""})
    assert "the embedded defaults" in default.stdout
    assert MtaConfig.from_toml(default.stdout) == MtaConfig.default()
    bad = tmp_path / "bad.toml"
    bad.write_text("[spool]\nretry_interval = []\n")
    refused = CliRunner().invoke(main, ["config", "show", "--config", str(bad)])
    assert refused.exit_code == 2 and "did you mean 'retry_intervals'" in refused.output

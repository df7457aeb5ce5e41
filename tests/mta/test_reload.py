"""Reloading a running MTA (SIGHUP): what changes live, what is refused until a restart."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

import pytest

from smtpx.envelope import Address
from smtpx.mta.app import Mta
from smtpx.mta.config import MtaConfig
from smtpx.mta.recipients import Deliver, Unknown
from smtpx.mta.relay import RelayPlugin
from smtpx.mta.reload import changed_keys, merge
from smtpx.mta.routing import FakeDns
from smtpx.mta.users import Users

BASE = """
hostname = "mx.test"
[server]
listen = ["127.0.0.1:0"]
[spool]
dir = "spool"
fsync = "never"
[local]
maildir = "mail"
[control]
socket = "control.sock"
"""


def test_merge_takes_live_keys_and_keeps_the_rest(tmp_path: Path) -> None:
    running = MtaConfig.from_toml(BASE, base_dir=tmp_path)
    wanted = MtaConfig.from_toml(
        BASE.replace('"127.0.0.1:0"', '"127.0.0.1:2600"')
        .replace('"mx.test"', '"mx2.test"')
        .replace('dir = "spool"', 'dir = "elsewhere"\nretry_intervals = ["1h"]')
        + '[relay]\ntrusted_networks = ["10.0.0.0/8"]\n'
        + '[log]\nlevel = "debug"\n',
        base_dir=tmp_path,
    )
    merged, refused = merge(running, wanted)
    assert [str(r) for r in refused] == [
        'hostname cannot change without a restart: it stays "mx.test" (the file says '
        '"mx2.test"; restart smtpx to use it)',
        'server.listen cannot change without a restart: it stays ["127.0.0.1:0"] (the file '
        'says ["127.0.0.1:2600"]; restart smtpx to use it)',
        f'spool.dir cannot change without a restart: it stays "{tmp_path}/spool" (the file '
        f'says "{tmp_path}/elsewhere"; restart smtpx to use it)',
    ]
    assert merged.hostname == "mx.test" and merged.server == running.server
    assert merged.spool.dir == running.spool.dir
    assert merged.spool.retry_intervals == wanted.spool.retry_intervals
    assert merged.relay.trusted_networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert changed_keys(running, merged) == [
        "relay.trusted_networks",
        "spool.retry_intervals",
        "log.level",
    ]


def test_merge_refuses_turning_tls_on_and_hides_the_database_password(tmp_path: Path) -> None:
    running = MtaConfig.from_toml(BASE, base_dir=tmp_path)
    wanted = MtaConfig.from_toml(
        BASE.replace("[spool]", '[spool]\nbackend = "postgresql"')
        + '[spool.postgresql]\ndsn = "postgresql://u:pw@db/x"\nnode = "a"\n'
        + '[tls]\ncert_file = "cert.pem"\nmin_version = "TLSv1.3"\n',
        base_dir=tmp_path,
    )
    merged, refused = merge(running, wanted)
    assert merged.tls == running.tls and merged.spool == running.spool
    assert [r.key for r in refused] == [
        "tls.cert_file",
        "tls.min_version",
        "spool.backend",
        "spool.postgresql",
    ]
    assert "pw" not in " ".join(str(r) for r in refused)


def test_merge_keeps_what_is_built_once_resolvers_tls_policies_inbound(tmp_path: Path) -> None:
    running = MtaConfig.from_toml(BASE, base_dir=tmp_path)
    wanted = MtaConfig.from_toml(
        BASE
        + '[routing]\nsmarthost = "relay.test:587"\nresolver = "127.0.0.1:5300"\n'
        + "[routing.mta_sts]\nenabled = true\n"
        + '[inbound]\nlisteners = ["smtp"]\n[dns]\nnameservers = ["127.0.0.1:5300"]\n'
        + "[greylist]\nenabled = true\n",
        base_dir=tmp_path,
    )
    merged, refused = merge(running, wanted)
    assert [r.key for r in refused] == [
        "routing.resolver",
        "routing.mta_sts",
        "inbound.listeners",
        "dns.nameservers",
        "greylist.enabled",
    ]
    assert merged.routing.smarthost == wanted.routing.smarthost  # the route itself is live
    assert merged.inbound == running.inbound and merged.dns == running.dns


def write(tmp_path: Path, extra: str = "") -> Path:
    file = tmp_path / "smtpx.toml"
    file.write_text(BASE + extra)
    return file


async def test_reload_applies_live_keys_and_logs_refusals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpx.mta")
    users = Users()
    users.add("alice", "pw-a")
    users.save(tmp_path / "users")
    file = write(tmp_path, '[auth]\nusers_file = "users"\n')
    logging_set: list[tuple[str, str]] = []
    mta = Mta(
        MtaConfig.load(file),
        dns=FakeDns(),
        set_logging=lambda level, fmt: logging_set.append((level, fmt)),
    )
    async with mta:
        plugin = mta.server.plugin
        assert not mta.config.relay.is_trusted("10.1.2.3")
        users.add("bob", "pw-b")
        users.save(tmp_path / "users")
        file.write_text(
            BASE.replace('"127.0.0.1:0"', '"127.0.0.1:1"').replace(
                'fsync = "never"', 'fsync = "never"\nfailed_retention = "never"\nmax_deliveries = 7'
            )
            + '[auth]\nusers_file = "users"\n[relay]\ntrusted_networks = ["10.0.0.0/8"]\n'
            + '[log]\nformat = "json"\n'
        )
        assert mta.reload()
        assert mta.config.relay.is_trusted("10.1.2.3")  # live
        assert mta.server.plugin is not plugin  # new sessions get the new policy
        assert mta.users is not None and mta.users.check("bob", "pw-b")
        assert mta.spool.config.failed_retention is None
        assert mta.spool.scheduler.config.max_deliveries == 7
        assert logging_set == [("info", "json")]
        assert [str(a) for a in mta.config.server.listen] == ["127.0.0.1:0"]  # refused
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("reload: server.listen cannot change without a restart") for m in messages
    )
    assert any(
        m.startswith("reload: done (relay.trusted_networks, spool.max_deliveries") for m in messages
    )


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        ('[routing]\nsmarthost = "a b"\n', "routing.smarthost: not a host:port"),
        ('[auth]\nusers_file = "missing"\n', "auth.users_file: cannot read"),
        ("[relay\n", "not valid TOML"),
    ],
)
async def test_a_bad_reload_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, breakage: str, error: str
) -> None:
    file = write(tmp_path)
    async with Mta(MtaConfig.load(file), dns=FakeDns()) as mta:
        before: Any = (mta.config, mta.server.plugin, mta.spool.config)
        file.write_text(BASE + '[relay]\ntrusted_networks = ["10.0.0.0/8"]\n' + breakage)
        assert not mta.reload()
        assert (mta.config, mta.server.plugin, mta.spool.config) == before
    (line,) = [r for r in caplog.records if r.getMessage().startswith("reload:")]
    assert line.levelno == logging.ERROR and error in line.getMessage()
    assert line.getMessage().endswith("; nothing changed")


async def test_reload_reads_the_recipients_file_again_and_keeps_it_when_broken(
    tmp_path: Path,
) -> None:
    recipients = tmp_path / "recipients"
    recipients.write_text("alice\n")
    file = tmp_path / "smtpx.toml"
    file.write_text(
        BASE.replace('maildir = "mail"', 'maildir = "mail"\nrecipients_file = "recipients"')
        + '[relay]\nlocal_domains = ["mx.test"]\n'
    )
    async with Mta(MtaConfig.load(file), dns=FakeDns()) as mta:
        bob = Address.parse("bob@mx.test")
        assert isinstance(mta.recipients.resolve(bob), Unknown)
        recipients.write_text("alice\nbob\n")
        assert mta.reload()
        assert isinstance(mta.recipients.resolve(bob), Deliver)
        plugin = mta.server.plugin
        assert isinstance(plugin, RelayPlugin) and plugin.recipients is mta.recipients
        recipients.write_text("alice\nbroken alias: x@\n")
        assert not mta.reload()  # a broken file: nothing changed
        assert isinstance(mta.recipients.resolve(bob), Deliver)

"""The ``[inbound]`` and ``[dns]`` sections: defaults, values, and the errors naming keys."""

from __future__ import annotations

from pathlib import Path

import dns.nameserver
import pytest

from smtpx.errors import ConfigError
from smtpx.mta.config import DmarcAction, InboundSettings, ListenAddress, MtaConfig
from smtpx.mta.inbound import make_resolver
from tests.mta.dkim_helpers import key_pem


def test_defaults_judge_nothing() -> None:
    config = MtaConfig.from_dict({})
    assert config.inbound == InboundSettings()
    assert config.inbound.listeners == ()
    assert not config.inbound.judges("smtp 127.0.0.1:2525")
    assert (config.inbound.dmarc_reject, config.inbound.dmarc_quarantine) == (
        DmarcAction.REJECT,
        DmarcAction.ACCEPT,
    )
    assert not config.inbound.spf_reject_fail
    assert (config.dns.nameservers, config.dns.timeout) == ((), 5.0)


def test_every_key(tmp_path: Path) -> None:
    config = MtaConfig.from_dict(
        {
            "server": {"listen": ["0.0.0.0:25", "127.0.0.1:2525"]},
            "inbound": {
                "listeners": ["SMTP", "0.0.0.0", "smtp"],
                "authserv_id": "MX.Example.ORG",
                "spf_reject_fail": True,
                "dmarc_reject": "quarantine",
                "dmarc_quarantine": "reject",
                "arc_trusted_sealers": ["lists.example.net"],
                "arc_seal": {"domain": "example.org", "selector": "arc1", "key_file": "arc.key"},
            },
            "dns": {"nameservers": ["127.0.0.1:5300", "[::1]"], "timeout": "2s"},
        },
        base_dir=tmp_path,
    )
    inbound = config.inbound
    assert inbound.listeners == ("smtp", "0.0.0.0:25")
    assert inbound.judges("smtp 127.0.0.1:2525") and inbound.judges("smtp 0.0.0.0:25")
    assert not inbound.judges("submission 0.0.0.0:587")
    assert inbound.authserv_id == "mx.example.org"
    assert (inbound.dmarc_reject, inbound.dmarc_quarantine) == (
        DmarcAction.QUARANTINE,
        DmarcAction.REJECT,
    )
    assert inbound.arc_trusted_sealers == ("lists.example.net",)
    assert inbound.arc_seal is not None and inbound.arc_seal.key_file == tmp_path / "arc.key"
    assert config.dns.nameservers == (
        ListenAddress(host="127.0.0.1", port=5300),
        ListenAddress(host="::1", port=53),
    )
    assert config.dns.timeout == 2.0


@pytest.mark.parametrize(
    ("document", "key", "problem"),
    [
        ({"inbound": {"listeners": ["10.0.0.1:25"]}}, "inbound.listeners[0]", "not a listener"),
        ({"inbound": {"dmarc_reject": "bounce"}}, "inbound.dmarc_reject", "expected one of"),
        ({"inbound": {"spf_reject_fail": "yes"}}, "inbound.spf_reject_fail", "a boolean"),
        ({"inbound": {"arc_seal": {"domain": "x.org"}}}, "inbound.arc_seal.selector", "required"),
        (
            {"inbound": {"arc_seal": {"domain": "x.org", "selector": "s", "key_file": "k",
                                      "headers": ["subject"]}}},
            "inbound.arc_seal.headers",
            "must include From",
        ),
        ({"inbound": {"judge": []}}, "inbound.judge", "unknown key"),
        ({"dns": {"nameservers": ["ns.example.org"]}}, "dns.nameservers[0]", "IP address"),
        ({"dns": {"timeout": "0s"}}, "dns.timeout", "more than 0"),
    ],
)  # fmt: skip
def test_errors_name_the_key(document: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_dict(document)
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_check_files_loads_the_arc_key(tmp_path: Path) -> None:
    (tmp_path / "arc.key").write_bytes(key_pem("ed25519", 0))
    config = MtaConfig.from_dict(
        {"inbound": {"arc_seal": {"domain": "x.org", "selector": "s", "key_file": "arc.key"}}},
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError) as caught:
        config.check_files()
    assert caught.value.key == "inbound.arc_seal.key_file"
    assert "RSA keys only" in caught.value.problem
    (tmp_path / "arc.key").write_bytes(key_pem("rsa", 0))
    config.check_files()


def test_the_resolver_of_dns_nameservers() -> None:
    resolver = make_resolver((("127.0.0.1", 5300), ("::1", 53)), timeout=3.0)
    assert [(n.address, n.port) for n in resolver.nameservers] == [  # type: ignore[union-attr]
        ("127.0.0.1", 5300),
        ("::1", 53),
    ]
    assert all(isinstance(n, dns.nameserver.Do53Nameserver) for n in resolver.nameservers)
    assert (resolver.lifetime, resolver.timeout) == (3.0, 2.0)
    assert resolver.cache is not None

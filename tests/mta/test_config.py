"""The relay MTA's configuration: defaults, the example file, every error naming its key."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from smtpx.auth import Credentials
from smtpx.client.config import CertificateCheck, TlsConfig, TlsMode
from smtpx.envelope import HostPort, RetryInterval
from smtpx.errors import ConfigError
from smtpx.mta.config import (
    DEFAULT_TOML,
    FsyncPolicy,
    ListenAddress,
    ListenerKind,
    MtaConfig,
    a_label,
    listener_kind,
)
from smtpx.protocol.data import BareNewlines
from smtpx.server.config import Listener, ServerTls
from smtpx.server.limits import ClientLimits


@pytest.fixture(autouse=True)
def fixed_fqdn(monkeypatch: pytest.MonkeyPatch) -> None:
    # socket.getfqdn() may ask the DNS for the machine's name: tests never query real DNS.
    monkeypatch.setattr("socket.getfqdn", lambda: "mta.test.example")


# ---------------------------------------------------------------------------------------
# Defaults


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = MtaConfig.default()
    assert config.server.listen == (ListenAddress(host="127.0.0.1", port=2525),)
    assert config.server.smtps == ()
    assert config.server.submission == ()
    assert config.server.max_message_size == 35 * 1024 * 1024
    assert config.server.max_recipients == 1000
    assert config.server.max_sessions_per_listener == 1000
    assert config.server.command_timeout == 300.0
    assert config.server.data_timeout == 300.0
    assert config.server.bare_newlines is BareNewlines.REJECT
    assert config.tls.cert_file is None and config.tls.key_file is None
    assert not config.tls.enabled
    assert config.relay.local_domains == ("localhost",)
    assert config.relay.trusted_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.relay.relay_for_authenticated is True
    assert config.auth.users_file is None
    assert config.auth.allow_plaintext is False
    assert config.spool.dir == tmp_path / "var" / "spool"
    assert config.spool.fsync is FsyncPolicy.BATCH
    assert [str(i) for i in config.spool.retry_intervals] == [
        "1m",
        "5m",
        "15m",
        "30m",
        "1h",
        "2h",
        "4h",
        "8h",
        "16h",
    ]
    assert config.spool.max_deliveries == 100
    assert config.spool.max_per_destination == 10
    assert config.spool.bounce is True
    assert config.spool.delay_warning_after is None
    assert config.spool.unreachable_backoff is None  # (the first retry interval)
    assert config.local.maildir == tmp_path / "var" / "mail"
    assert config.routing.smarthost is None
    assert dict(config.routing.routes) == {}
    assert config.routing.tls == (
        ("", TlsConfig(mode=TlsMode.IF_AVAILABLE, certificate=CertificateCheck.IGNORE)),
    )
    assert dict(config.routing.credentials) == {}
    assert config.control.socket == tmp_path / "var" / "control.sock"
    assert config.control.http is None
    assert config.control.token_file is None
    assert config.log.level == "info"
    assert config.log.format == "plain"
    assert config.source is None


def test_default_hostname_is_the_fqdn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.getfqdn", lambda: "box.example.net")
    assert MtaConfig.default().hostname == "box.example.net"


def test_default_toml_loads_to_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert MtaConfig.from_toml(DEFAULT_TOML) == MtaConfig.default()
    assert MtaConfig.from_toml(DEFAULT_TOML, base_dir="/srv/mta") == MtaConfig.default(
        base_dir="/srv/mta"
    )


def test_default_toml_written_next_to_a_file_loads_relative_to_it(tmp_path: Path) -> None:
    file = tmp_path / "etc" / "smtpx.toml"
    file.parent.mkdir()
    file.write_text(DEFAULT_TOML)
    config = MtaConfig.load(file)
    assert config == MtaConfig.default(base_dir=file.parent)
    assert config.spool.dir == tmp_path / "etc" / "var" / "spool"
    assert config.source == file


def test_default_toml_documents_every_key() -> None:
    # Every key the loader knows appears in the example, set or commented out.
    text = DEFAULT_TOML
    for key in [
        "hostname",
        "listen",
        "smtps",
        "submission",
        "max_message_size",
        "max_recipients",
        "max_sessions_per_listener",
        "max_sessions_per_client",
        "max_connection_rate_per_client",
        "exempt_trusted_networks",
        "command_timeout",
        "data_timeout",
        "min_data_rate",
        "data_rate_grace",
        "bare_newlines",
        "cert_file",
        "key_file",
        "min_version",
        "local_domains",
        "trusted_networks",
        "relay_for_authenticated",
        "users_file",
        "allow_plaintext",
        "dir",
        "fsync",
        "retry_intervals",
        "max_deliveries",
        "max_per_destination",
        "bounce",
        "delay_warning_after",
        "failed_retention",
        "maildir",
        "smarthost",
        "routing.routes",
        "routing.tls",
        "routing.credentials",
        "socket",
        "http",
        "token_file",
        "level",
        "format",
    ]:
        assert key in text, key


def test_default_server_config(tmp_path: Path) -> None:
    config = MtaConfig.default(base_dir=tmp_path)
    assert config.hostname == "mta.test.example"
    server = config.server_config()
    assert server.listeners == (
        Listener(host="127.0.0.1", port=2525, max_sessions=1000, name="smtp 127.0.0.1:2525"),
    )
    assert server.hostname == config.hostname
    assert server.tls is None
    assert server.max_message_size == 35 * 1024 * 1024
    assert server.auth_without_tls is False
    assert server.client_limits == ClientLimits(
        max_sessions=20, max_rate=60, exempt=config.relay.trusted_networks
    )
    assert server.min_data_rate == 500 and server.data_rate_grace == 60.0
    client = config.client_config()
    assert client.helo_name == config.hostname
    assert client.tls_for("mx.example.com") == TlsConfig()
    assert client.chunking == "auto"
    assert config.credentials_for("mx.example.com") is None


# ---------------------------------------------------------------------------------------
# A full example


FULL = """
hostname = "MX.Example.COM"

[server]
listen = ["0.0.0.0:25", "[::]:25", "127.0.0.1"]
smtps = ["0.0.0.0:465"]
submission = ["[::1]:587", "127.0.0.1"]
max_message_size = "512K"
max_recipients = 200
max_sessions_per_listener = 50
max_sessions_per_client = 5
max_connection_rate_per_client = 0
exempt_trusted_networks = false
command_timeout = "2m"
data_timeout = 600
min_data_rate = 2000
data_rate_grace = "30s"
bare_newlines = "normalize"

[tls]
cert_file = "tls/cert.pem"
key_file = "/etc/ssl/private/mx.key"
min_version = "TLSv1.3"

[relay]
local_domains = ["example.com", "Bücher.example", "EXAMPLE.com"]
trusted_networks = ["10.0.0.0/8", "2001:db8::/32"]
relay_for_authenticated = false

[auth]
users_file = "users"
allow_plaintext = true

[spool]
dir = "/var/spool/smtpx"
fsync = "always"
retry_intervals = ["30s", "5m~30s", 3600, "1d"]
max_deliveries = 20
max_per_destination = 2
bounce = false
delay_warning_after = "4h"
unreachable_backoff = "0"

[local]
maildir = "mail"

[routing]
smarthost = "smtp.provider.net:587"

[routing.routes]
"example.org" = ["mx1.internal:2525", "[2001:db8::25]:25", "10.1.2.3"]
"bücher.example" = ["mx.bücher.example"]

[[routing.tls]]
suffix = "provider.net"
mode = "required"
certificate = "verify"
ca_file = "ca.pem"
min_version = "1.3"

[[routing.tls]]
suffix = ""
mode = "if_available"

[routing.credentials]
"smtp.provider.net" = { username = "relay", password_file = "provider.password" }
"10.1.2.3" = { username = "box", password = "s3cret" }

[control]
socket = "run/control.sock"
http = "127.0.0.1:8025"
token_file = "control.token"

[log]
level = "DEBUG"
format = "json"
"""


def test_full_example(tmp_path: Path) -> None:
    (tmp_path / "provider.password").write_text("hunter2\nignored second line\n")
    file = tmp_path / "smtpx.toml"
    file.write_text(FULL)
    config = MtaConfig.load(file)

    assert config.hostname == "mx.example.com"
    server = config.server
    assert server.listen == (
        ListenAddress(host="0.0.0.0", port=25),
        ListenAddress(host="::", port=25),
        ListenAddress(host="127.0.0.1", port=25),
    )
    assert server.smtps == (ListenAddress(host="0.0.0.0", port=465),)
    assert server.submission == (
        ListenAddress(host="::1", port=587),
        ListenAddress(host="127.0.0.1", port=587),
    )
    assert server.max_message_size == 512 * 1024
    assert server.max_recipients == 200
    assert server.max_sessions_per_listener == 50
    assert server.command_timeout == 120.0
    assert server.data_timeout == 600.0
    assert server.bare_newlines is BareNewlines.NORMALIZE

    assert config.tls.cert_file == tmp_path / "tls" / "cert.pem"
    assert config.tls.key_file == Path("/etc/ssl/private/mx.key")
    assert config.tls.min_version == "TLSv1.3"

    assert config.relay.local_domains == ("example.com", "xn--bcher-kva.example")
    assert config.relay.trusted_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert config.relay.relay_for_authenticated is False

    assert config.auth.users_file == tmp_path / "users"
    assert config.auth.allow_plaintext is True

    spool = config.spool
    assert spool.dir == Path("/var/spool/smtpx")
    assert spool.fsync is FsyncPolicy.ALWAYS
    assert spool.retry_intervals == (
        RetryInterval(span=30),
        RetryInterval(span=300, jitter=30),
        RetryInterval(span=3600),
        RetryInterval(span=86400),
    )
    assert spool.max_deliveries == 20
    assert spool.max_per_destination == 2
    assert spool.bounce is False
    assert spool.delay_warning_after == 4 * 3600.0
    assert spool.unreachable_backoff == 0.0

    assert config.local.maildir == tmp_path / "mail"

    routing = config.routing
    assert routing.smarthost == HostPort("smtp.provider.net", 587)
    assert dict(routing.routes) == {
        "example.org": (
            HostPort("mx1.internal", 2525),
            HostPort("2001:db8::25", 25),
            HostPort("10.1.2.3", 25),
        ),
        "xn--bcher-kva.example": (HostPort("mx.xn--bcher-kva.example", 25),),
    }
    assert routing.tls == (
        (
            "provider.net",
            TlsConfig(
                mode=TlsMode.REQUIRED,
                certificate=CertificateCheck.VERIFY,
                ca_file=str(tmp_path / "ca.pem"),
                min_version="TLSv1.3",
            ),
        ),
        ("", TlsConfig(mode=TlsMode.IF_AVAILABLE, certificate=CertificateCheck.IGNORE)),
    )
    assert set(routing.credentials) == {"smtp.provider.net", "10.1.2.3"}
    assert routing.credentials["smtp.provider.net"].password == "hunter2"
    assert "hunter2" not in repr(routing.credentials["smtp.provider.net"])
    assert "s3cret" not in repr(config)

    assert config.control.socket == tmp_path / "run" / "control.sock"
    assert config.control.http == ListenAddress(host="127.0.0.1", port=8025)
    assert config.control.token_file == tmp_path / "control.token"
    assert config.log.level == "debug"
    assert config.log.format == "json"

    # The lower layers' objects.
    server_config = config.server_config()
    assert [str(listener) for listener in server_config.listeners] == [
        "smtp 0.0.0.0:25",
        "smtp [::]:25",
        "smtp 127.0.0.1:25",
        "smtps 0.0.0.0:465",
        "submission [::1]:587",
        "submission 127.0.0.1:587",
    ]
    assert [listener.implicit_tls for listener in server_config.listeners] == [
        False,
        False,
        False,
        True,
        False,
        False,
    ]
    assert all(listener.max_sessions == 50 for listener in server_config.listeners)
    # Only submission listeners require TLS and AUTH (530 5.7.0 to anything else).
    assert [(lis.require_tls, lis.require_auth) for lis in server_config.listeners] == [
        (False, False),
        (False, False),
        (False, False),
        (False, False),
        (True, True),
        (True, True),
    ]
    assert server_config.hostname == "mx.example.com"
    assert server_config.tls == ServerTls(
        cert_file=str(tmp_path / "tls" / "cert.pem"),
        key_file="/etc/ssl/private/mx.key",
        min_version="TLSv1.3",
    )
    assert server_config.max_message_size == 512 * 1024
    assert server_config.max_recipients == 200
    assert server_config.command_timeout == 120.0
    assert server_config.data_timeout == 600.0
    assert server_config.min_data_rate == 2000 and server_config.data_rate_grace == 30.0
    assert server_config.client_limits == ClientLimits(max_sessions=5, max_rate=None, exempt=())
    assert server_config.bare_newlines is BareNewlines.NORMALIZE
    assert server_config.auth_without_tls is True

    client_config = config.client_config()
    assert client_config.helo_name == "mx.example.com"
    assert client_config.tls_for("smtp.provider.net").mode is TlsMode.REQUIRED
    assert client_config.tls_for("mx.other.org").mode is TlsMode.IF_AVAILABLE

    credentials = config.credentials_for("SMTP.Provider.NET.")
    assert credentials is not None
    assert repr(credentials) == "Credentials(login('relay', password=<hidden>))"
    assert [m.mechanism for m in credentials.mechanisms(tls=True)] == ["PLAIN", "LOGIN"]
    assert config.credentials_for("[10.1.2.3]") is not None
    assert config.credentials_for("10.1.2.3") == Credentials.login("box", "s3cret")
    assert config.credentials_for("mx.provider.net") is None


def test_listener_kind() -> None:
    assert listener_kind("smtp 127.0.0.1:25") is ListenerKind.SMTP
    assert listener_kind("smtps 0.0.0.0:465") is ListenerKind.SMTPS
    assert listener_kind("submission [::1]:587") is ListenerKind.SUBMISSION
    assert listener_kind("stream") is None
    assert listener_kind("") is None


def test_relay_helpers() -> None:
    config = MtaConfig.from_dict(
        {
            "relay": {
                "local_domains": ["example.com", "bücher.example"],
                "trusted_networks": ["10.0.0.0/8", "::1/128"],
            }
        }
    )
    assert config.relay.is_local("EXAMPLE.com.")
    assert config.relay.is_local("Bücher.example")
    assert config.relay.is_local("xn--bcher-kva.example")
    assert not config.relay.is_local("sub.example.com")
    assert config.relay.is_trusted("10.1.2.3")
    assert config.relay.is_trusted("::1")
    assert config.relay.is_trusted("::ffff:10.0.0.1")  # from a dual-stack socket
    assert not config.relay.is_trusted("127.0.0.1")
    assert not config.relay.is_trusted("not an address")


def test_trust_is_remembered_per_set_of_networks_never_across_them() -> None:
    # Settings made one after another (a reload, a test), each asked the same address:
    # each answers from its own networks, however many there were, and when a freed
    # tuple's place in memory is taken by the next one.
    for n in range(40):
        networks = ["10.0.0.0/8"] if n % 2 else ["192.0.2.0/24"]
        relay = MtaConfig.from_dict({"relay": {"trusted_networks": networks}}).relay
        assert relay.is_trusted("10.1.2.3") is bool(n % 2)
        assert relay.is_trusted("10.1.2.3") is bool(n % 2)  # (remembered)
        assert relay.is_trusted("192.0.2.7") is not bool(n % 2)
        del relay


def test_port_zero_listeners_are_allowed(tmp_path: Path) -> None:
    config = MtaConfig.from_dict({"server": {"listen": ["127.0.0.1:0", "127.0.0.1:0"]}})
    assert [listener.port for listener in config.server_config().listeners] == [0, 0]


def test_sizes_and_durations() -> None:
    def server(**values: object) -> Any:
        return MtaConfig.from_dict({"server": values}).server

    assert server(max_message_size=1000).max_message_size == 1000
    assert server(max_message_size="1000").max_message_size == 1000
    assert server(max_message_size="2k").max_message_size == 2048
    assert server(max_message_size="1.5M").max_message_size == 1536 * 1024
    assert server(max_message_size="1G").max_message_size == 1024**3
    assert server(max_message_size="10MiB").max_message_size == 10 * 1024**2
    assert server(command_timeout="30s").command_timeout == 30.0
    assert server(command_timeout="1d").command_timeout == 86400.0
    assert server(command_timeout=2.5).command_timeout == 2.5
    assert server(command_timeout="90").command_timeout == 90.0
    assert server(command_timeout="1.5h").command_timeout == 5400.0
    assert server(command_timeout="1h30m").command_timeout == 5400.0  # as the CLI prints
    assert server(command_timeout="2h05m").command_timeout == 7500.0


# ---------------------------------------------------------------------------------------
# Errors name their key


BAD_DOCUMENTS = [
    # (TOML, message prefix)
    ("hostname = 5", "hostname: expected a string, got the integer 5"),
    ('hostname = "a b"', "hostname: not a domain name: 'a b'"),
    ("server = 1", "server: expected a table, got the integer 1"),
    ('[server]\nlisten = "127.0.0.1:25"', "server.listen: expected an array, got the string"),
    ('[server]\nlisten = ["foo:bar"]', "server.listen[0]: not a listen address: 'foo:bar'"),
    ('[server]\nlisten = ["::1:25"]', "server.listen[0]: not a listen address: '::1:25'"),
    ('[server]\nlisten = ["1.2.3.4:70000"]', "server.listen[0]: not a listen address"),
    ("[server]\nlisten = []", "server.listen: no listeners"),
    (
        '[server]\nlisten = ["127.0.0.1:25", "127.0.0.1:25"]',
        "server.listen[1]: 127.0.0.1:25 is already server.listen[0]",
    ),
    (
        '[server]\nsmtps = ["0.0.0.0:465"]',
        "server.smtps: implicit-TLS listeners need tls.cert_file",
    ),
    ("[server]\nsmtps = [465]", "server.smtps[0]: expected a string, got the integer 465"),
    (
        '[server]\nsubmission = ["0.0.0.0:587"]',
        "server.submission: submission listeners need tls.cert_file",
    ),
    (
        '[server]\nsubmission = ["0.0.0.0:587"]\n[tls]\ncert_file = "c.pem"',
        "server.submission: submission listeners need auth.users_file",
    ),
    ('[server]\nmax_message_size = "35Q"', "server.max_message_size: not a size: '35Q'"),
    ("[server]\nmax_message_size = 0", "server.max_message_size: must be at least 1 byte"),
    ("[server]\nmax_message_size = true", "server.max_message_size: expected a size"),
    ('[server]\nmax_recipients = "10"', "server.max_recipients: expected an integer, got the"),
    ("[server]\nmax_recipients = 0", "server.max_recipients: must be at least 1, got 0"),
    ("[server]\nmax_sessions_per_listener = 1.5", "server.max_sessions_per_listener: expected"),
    ('[server]\ncommand_timeout = "5q"', "server.command_timeout: not a duration: '5q'"),
    (
        "[server]\nmax_sessions_per_client = -1",
        "server.max_sessions_per_client: must be 0 (no limit) or more, got -1",
    ),
    (
        '[server]\nmax_connection_rate_per_client = "60/m"',
        "server.max_connection_rate_per_client: expected an integer (0 for no limit), got the",
    ),
    ("[server]\nmin_data_rate = 1.5", "server.min_data_rate: expected an integer (0 for no"),
    ("[server]\nmin_data_rate = true", "server.min_data_rate: expected an integer (0 for no"),
    ("[server]\ndata_rate_grace = 0", "server.data_rate_grace: must be more than 0 seconds"),
    (
        '[server]\nexempt_trusted_networks = "yes"',
        "server.exempt_trusted_networks: expected a boolean (true or false), got the string",
    ),
    ("[server]\nmax_session_per_client = 1", "server.max_session_per_client: unknown key; did"),
    ("[server]\ncommand_timeout = 0", "server.command_timeout: must be more than 0 seconds"),
    ('[server]\ndata_timeout = "-5m"', "server.data_timeout: not a duration: '-5m'"),
    (
        '[server]\nbare_newlines = "strip"',
        "server.bare_newlines: expected one of 'reject', 'normalize', got the string 'strip'",
    ),
    ("[tls]\ncert_file = 1", "tls.cert_file: expected a string, got the integer 1"),
    ('[tls]\ncert_file = ""', "tls.cert_file: must not be empty"),
    ('[tls]\nkey_file = "k.pem"', "tls.key_file: set, but tls.cert_file is not"),
    ('[tls]\nmin_version = "SSLv3"', "tls.min_version: expected 'TLSv1.2' or 'TLSv1.3'"),
    ('[relay]\nlocal_domains = "example.com"', "relay.local_domains: expected an array"),
    (
        '[relay]\nlocal_domains = ["example.com", "bad domain"]',
        "relay.local_domains[1]: not a domain name: 'bad domain'",
    ),
    ('[relay]\ntrusted_networks = ["foo"]', "relay.trusted_networks[0]: not an IP network: 'foo'"),
    (
        '[relay]\ntrusted_networks = ["10.0.0.1/8"]',
        "relay.trusted_networks[0]: not an IP network: '10.0.0.1/8' (",
    ),
    ('[relay]\nrelay_for_authenticated = "yes"', "relay.relay_for_authenticated: expected a bool"),
    ("[auth]\nusers_file = []", "auth.users_file: expected a string, got an array"),
    ("[auth]\nallow_plaintext = 1", "auth.allow_plaintext: expected a boolean"),
    ('[spool]\nfsync = "sometimes"', "spool.fsync: expected one of 'always', 'batch', 'never'"),
    (
        '[spool]\nretry_intervals = ["1m", "5m", "5q"]',
        "spool.retry_intervals[2]: not a duration: '5q'",
    ),
    ("[spool]\nretry_intervals = [-1]", "spool.retry_intervals[0]: not a duration: -1"),
    ("[spool]\nretry_intervals = [{ a = 1 }]", "spool.retry_intervals[0]: expected a duration"),
    ("[spool]\nmax_deliveries = 0", "spool.max_deliveries: must be at least 1, got 0"),
    ("[spool]\nmax_per_destination = -3", "spool.max_per_destination: must be at least 1"),
    ('[spool]\nbounce = "no"', "spool.bounce: expected a boolean"),
    ('[spool]\ndelay_warning_after = "4x"', "spool.delay_warning_after: not a duration: '4x'"),
    ("[spool]\nunreachable_backoff = -1", "spool.unreachable_backoff: must be more than 0"),
    ("[local]\nmaildir = false", "local.maildir: expected a string, got the boolean false"),
    ('[routing]\nsmarthost = "a b:25"', "routing.smarthost: not a host:port: 'a b:25'"),
    ('[routing]\nsmarthost = "relay:99999"', "routing.smarthost: not a host:port: 'relay:99999'"),
    ("[routing]\nroutes = 1", "routing.routes: expected a table, got the integer 1"),
    (
        '[routing.routes]\n"example.com" = "mx:25"',
        'routing.routes."example.com": expected an array, got the string',
    ),
    ('[routing.routes]\n"example.com" = []', 'routing.routes."example.com": needs at least one'),
    (
        '[routing.routes]\n"example.com" = ["mx.example.com", "bad host"]',
        "routing.routes.\"example.com\"[1]: not a host:port: 'bad host'",
    ),
    ('[routing.routes]\n"bad domain" = ["mx"]', 'routing.routes."bad domain": not a domain name'),
    (
        '[routing.routes]\n"example.com" = ["mx"]\n"EXAMPLE.COM" = ["mx"]',
        'routing.routes."EXAMPLE.COM": the same domain as routing.routes."example.com"',
    ),
    ("[routing]\ntls = {}", "routing.tls: expected an array, got a table"),
    ("[routing]\ntls = [1]", "routing.tls[0]: expected a table, got the integer 1"),
    ('[[routing.tls]]\nmode = "required"', "routing.tls[0].suffix: required"),
    (
        '[[routing.tls]]\nsuffix = ""\nmode = "sometimes"',
        "routing.tls[0].mode: expected one of 'none', 'if_available', 'always_try', 'required',"
        " 'implicit', got the string 'sometimes'",
    ),
    (
        '[[routing.tls]]\nsuffix = ""\ncertificate = "trust"',
        "routing.tls[0].certificate: expected one of 'verify', 'ignore'",
    ),
    ('[[routing.tls]]\nsuffix = ""\nca_file = 3', "routing.tls[0].ca_file: expected a string"),
    ('[[routing.tls]]\nsuffix = "a b"', "routing.tls[0].suffix: not a domain suffix: 'a b'"),
    (
        '[[routing.tls]]\nsuffix = ""\n[[routing.tls]]\nsuffix = "."',
        "routing.tls[1].suffix: the same suffix as routing.tls[0].suffix, which wins",
    ),
    (
        '[[routing.tls]]\nsuffix = ""\nmod = "none"',
        "routing.tls[0].mod: unknown key; did you mean 'mode'?",
    ),
    ("[routing.credentials]\nh = 1", "routing.credentials.h: expected a table, got the integer 1"),
    (
        '[routing.credentials]\n"a b" = { username = "u", password = "p" }',
        "routing.credentials.\"a b\": not a host name or IP address: 'a b'",
    ),
    (
        '[routing.credentials]\n"smtp.example.com" = { password = "p" }',
        'routing.credentials."smtp.example.com".username: required',
    ),
    (
        '[routing.credentials]\n"smtp.example.com" = { username = "u" }',
        'routing.credentials."smtp.example.com": needs password or password_file',
    ),
    (
        '[routing.credentials]\nh = { username = "u", password = "p", password_file = "f" }',
        "routing.credentials.h: set password or password_file, not both",
    ),
    (
        '[routing.credentials]\nh = { username = "u", password = 5 }',
        "routing.credentials.h.password: expected a string, got the integer 5",
    ),
    (
        '[routing.credentials]\nh = { username = "u", password_file = "/nonexistent/pw" }',
        "routing.credentials.h.password_file: cannot read '/nonexistent/pw'",
    ),
    (
        '[routing.credentials]\nh = { username = "u", password = "a\\u0000b" }',
        "routing.credentials.h: unusable login:",
    ),
    (
        '[routing.credentials]\nh = { username = "u", pasword = "p" }',
        "routing.credentials.h.pasword: unknown key; did you mean 'password'?",
    ),
    ('[routing]\nchunking = "yes"', 'routing.chunking: expected true, false or "auto", got'),
    ("[control]\nsocket = 1", "control.socket: expected a string"),
    (
        '[control]\nhttp = "0.0.0.0:8025"',
        "control.http: must be a loopback address (like 127.0.0.1:8025), got '0.0.0.0:8025'",
    ),
    ('[control]\nhttp = "localhost:x"', "control.http: not a listen address: 'localhost:x'"),
    ("[control]\ntoken_file = true", "control.token_file: expected a string"),
    (
        '[control]\nhttp = "127.0.0.1:8025"',
        "control.http: the HTTP control listener needs control.token_file",
    ),
    (
        '[log]\nlevel = "verbose"',
        "log.level: expected one of 'debug', 'info', 'warning', 'error', 'critical', got",
    ),
    ('[log]\nformat = "xml"', "log.format: expected one of 'plain', 'json', got the string 'xml'"),
    # Unknown keys, at every level.
    ("servr = {}", "servr: unknown key; did you mean 'server'?"),
    ("[spool]\nretry_interval = []", "spool.retry_interval: unknown key; did you mean"),
    ("[server]\nlisten_on = []", "server.listen_on: unknown key; did you mean 'listen'?"),
    ("[log]\nzzz = 1", "log.zzz: unknown key (known keys: level, format, fingerprints)"),
]


@pytest.mark.parametrize(("document", "prefix"), BAD_DOCUMENTS)
def test_errors_name_the_key(document: str, prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_toml(document)
    message = str(caught.value)
    assert message.startswith(prefix), message
    assert caught.value.key is not None
    assert message.startswith(caught.value.key + ": ")
    assert caught.value.file is None


@pytest.mark.parametrize("value", ["true", "false", '"auto"', '"AUTO"'])
def test_chunking_reaches_the_client(value: str) -> None:
    config = MtaConfig.from_toml(f"[routing]\nchunking = {value}")
    expected = {"true": True, "false": False}.get(value, "auto")
    assert config.routing.chunking == expected
    assert config.client_config().chunking == expected


def test_unknown_key_suggestion_exact() -> None:
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_dict({"spool": {"retry_interval": ["1m"]}})
    assert str(caught.value) == "spool.retry_interval: unknown key; did you mean 'retry_intervals'?"
    assert caught.value.key == "spool.retry_interval"
    assert caught.value.problem == "unknown key; did you mean 'retry_intervals'?"


def test_unknown_top_level_key_lists_the_sections() -> None:
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_dict({"qqqqqq": 1})
    assert str(caught.value) == (
        "qqqqqq: unknown key (known keys: hostname, server, tls, relay, auth, spool, local,"
        " routing, dkim, inbound, dns, dnsbl, rate_limits, greylist, redis, control, log,"
        " milters)"
    )


def test_errors_from_a_file_name_the_file_then_the_key(tmp_path: Path) -> None:
    file = tmp_path / "smtpx.toml"
    file.write_text('[spool]\nretry_intervals = ["1m", "5m", "5q"]\n')
    with pytest.raises(ConfigError) as caught:
        MtaConfig.load(file)
    assert str(caught.value).startswith(f"{file}: spool.retry_intervals[2]: not a duration: '5q'")
    assert caught.value.file == str(file)
    assert caught.value.key == "spool.retry_intervals[2]"


def test_toml_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^not valid TOML: .*line 1"):
        MtaConfig.from_toml("[server\n")
    file = tmp_path / "broken.toml"
    file.write_text("a = = 1\n")
    with pytest.raises(ConfigError) as caught:
        MtaConfig.load(file)
    assert str(caught.value).startswith(f"{file}: not valid TOML: ")


def test_missing_file(tmp_path: Path) -> None:
    file = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        MtaConfig.load(file)
    assert str(caught.value) == f"{file}: cannot read the config file: No such file or directory"


def test_empty_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\nsecond\n")
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_dict(
            {"routing": {"credentials": {"h": {"username": "u", "password_file": "pw"}}}},
            base_dir=tmp_path,
        )
    assert str(caught.value).startswith("routing.credentials.h.password_file: ")
    assert "the first line (the password) is empty" in str(caught.value)


def test_config_error_is_an_smtpx_error() -> None:
    from smtpx.errors import SMTPXError

    assert issubclass(ConfigError, SMTPXError)
    assert str(ConfigError("bad", key="a.b", file="f.toml")) == "f.toml: a.b: bad"
    assert str(ConfigError("bad")) == "bad"


# ---------------------------------------------------------------------------------------
# Paths


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    file = conf_dir / "smtpx.toml"
    file.write_text(
        "[spool]\ndir = 'queue'\n[auth]\nusers_file = '../secrets/users'\n"
        "[local]\nmaildir = '/abs/mail'\n"
    )
    config = MtaConfig.load(file)
    assert config.spool.dir == conf_dir / "queue"
    assert config.auth.users_file == conf_dir / "../secrets/users"
    assert config.local.maildir == Path("/abs/mail")
    # Keys left out take their defaults, relative to the file as well.
    assert config.control.socket == conf_dir / "var" / "control.sock"


def test_relative_paths_without_a_file_are_relative_to_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = MtaConfig.from_toml("[spool]\ndir = 'q'\n")
    assert config.spool.dir == tmp_path / "q"
    assert config.local.maildir == tmp_path / "var" / "mail"


def test_relative_config_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("")
    config = MtaConfig.load("c.toml")
    assert config.source == tmp_path / "c.toml"
    assert config.spool.dir.is_absolute()
    assert config.spool.dir == tmp_path / "var" / "spool"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = MtaConfig.from_toml("[spool]\ndir = '~/q'\n", base_dir="/elsewhere")
    assert config.spool.dir == tmp_path / "q"


# ---------------------------------------------------------------------------------------
# Small parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("例え。テスト", "xn--r8jz45g.xn--zckzah"),
        ("localhost", "localhost"),
    ],
)
def test_a_label(text: str, expected: str) -> None:
    assert a_label(text) == expected


@pytest.mark.parametrize(
    "text", ["", ".", "a..b", "a b", "-a.example", "a-.example", "a" * 64 + ".example", "a@b"]
)
def test_a_label_rejects(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        a_label(text)


@pytest.mark.parametrize(
    ("text", "default_port", "expected"),
    [
        ("127.0.0.1:2525", 25, ListenAddress(host="127.0.0.1", port=2525)),
        ("127.0.0.1", 465, ListenAddress(host="127.0.0.1", port=465)),
        ("[::1]:2525", 25, ListenAddress(host="::1", port=2525)),
        ("[::]", 587, ListenAddress(host="::", port=587)),
        ("localhost:0", 25, ListenAddress(host="localhost", port=0)),
    ],
)
def test_listen_address_parse(text: str, default_port: int, expected: ListenAddress) -> None:
    address = ListenAddress.parse(text, default_port=default_port)
    assert address == expected
    assert ListenAddress.parse(str(address), default_port=1) == address


def test_default_toml_is_plain_toml() -> None:
    document = tomllib.loads(DEFAULT_TOML)
    assert document["server"]["listen"] == ["127.0.0.1:2525"]
    assert "hostname" not in document  # machine-specific: left to socket.getfqdn()


def test_records_are_frozen(tmp_path: Path) -> None:
    config = MtaConfig.default(base_dir=tmp_path)
    with pytest.raises(AttributeError):
        config.hostname = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.routing.routes["x"] = ()  # type: ignore[index]


def test_users_file_is_not_read_by_the_config(tmp_path: Path) -> None:
    # The config names the file; smtpx.mta.users reads it (so a missing one is reported
    # when the MTA starts, with line numbers for bad lines).
    config = MtaConfig.from_dict({"auth": {"users_file": "absent"}}, base_dir=tmp_path)
    assert config.auth.users_file == tmp_path / "absent"
    assert not os.path.exists(tmp_path / "absent")


def test_check_files_names_the_unreadable_file(tmp_path: Path, ca: Any) -> None:
    config = MtaConfig.from_dict(
        {
            "tls": {"cert_file": "cert.pem", "key_file": "key.pem"},
            "control": {"http": "127.0.0.1:0", "token_file": "token"},
        },
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError) as caught:
        config.check_files()
    assert caught.value.key == "tls.cert_file"
    assert str(tmp_path / "cert.pem") in str(caught.value)
    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    with pytest.raises(ConfigError, match=r"cannot load the certificate .*cert\.pem with the key"):
        config.check_files()
    issued = ca.issue_cert("mx.test")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.issue_cert("other.test").private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    with pytest.raises(ConfigError) as caught:
        config.check_files()
    assert caught.value.key == "tls.cert_file"  # a key that does not match
    issued.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    with pytest.raises(ConfigError) as caught:
        config.check_files()
    assert caught.value.key == "control.token_file"
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        config.check_files()
    (tmp_path / "token").write_text("s3cret\n")
    config.check_files()

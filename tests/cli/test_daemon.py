"""smtpx daemon status|cache|reload-tls against a real smtpx serve."""

from __future__ import annotations

import json

from tests.cli.helpers import Daemon


def test_status(daemon: Daemon) -> None:
    result = daemon.cli("daemon", "status")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("smtpx ") and "listeners: " in result.stdout
    data = json.loads(daemon.cli("daemon", "status", "--json").stdout)
    assert data["health"]["status"] == "ok"
    assert data["server"]["listeners"][0]["port"] > 0


def test_cache(daemon: Daemon) -> None:
    result = daemon.cli("daemon", "cache", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"open", "opened", "reused", "destinations"}
    assert daemon.cli("daemon", "cache").stdout.startswith("open ")


def test_reload_tls_without_tls_is_a_usage_error(daemon: Daemon) -> None:
    result = daemon.cli("daemon", "reload-tls")
    assert result.exit_code == 2
    assert "TLS is not configured" in result.stderr

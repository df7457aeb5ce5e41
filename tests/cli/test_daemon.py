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


def test_errors_until_the_first_heartbeat(daemon: Daemon) -> None:
    result = daemon.cli("daemon", "errors", "--json", "--timeout", "0.4s")
    assert result.exit_code == 0, result.output
    assert "watching errors of" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and lines[-1]["kind"] == "heartbeat" and isinstance(lines[-1]["seq"], int)
    assert daemon.cli("daemon", "errors", "--timeout", "0.2s", "--recent", "0").exit_code == 0


def test_an_error_as_text() -> None:
    from smtpx.cli.daemon import _error_text

    text = _error_text(
        {
            "kind": "error",
            "seq": 7,
            "time": 0,
            "level": "error",
            "logger": "smtpx.spool",
            "message": "it failed",
            "fields": {"component": "spool", "flows": ["out##1"], "spool_id": "X"},
            "exception": "Traceback ...\nValueError: boom",
        }
    )
    assert text == (
        "#7 1970-01-01T00:00:00Z error smtpx.spool: it failed component=spool spool_id=X\n"
        "Traceback ...\nValueError: boom"
    )

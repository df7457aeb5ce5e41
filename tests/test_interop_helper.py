"""The interop helper checks what a peer can do, not only that its binary exists."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import tests.conftest as helper


def fake_swaks(folder: Path, support: str) -> None:
    script = folder / "swaks"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' {support}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


LACKING_TLS = "'=== Basic AUTH supported' '*** TLS not available: requires Net::SSLeay'"
WITH_TLS = "'=== Basic AUTH supported' '=== TLS supported'"


def test_a_capable_peer_is_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_swaks(tmp_path, WITH_TLS)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert helper.require_tool("swaks", "TLS", "Basic AUTH") == str(tmp_path / "swaks")


def test_a_missing_capability_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_swaks(tmp_path, LACKING_TLS)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(helper, "REQUIRE_INTEROP", False)
    with pytest.raises(pytest.skip.Exception, match="lacks TLS"):
        helper.require_tool("swaks", "TLS")


def test_a_missing_capability_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_swaks(tmp_path, LACKING_TLS)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(helper, "REQUIRE_INTEROP", True)
    with pytest.raises(pytest.fail.Exception, match=r"lacks TLS .*SMTPX_REQUIRE_INTEROP=1"):
        helper.require_tool("swaks", "TLS")


def test_a_missing_tool_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(helper, "REQUIRE_INTEROP", True)
    with pytest.raises(pytest.fail.Exception, match="'no-such-peer' is not installed"):
        helper.require_tool("no-such-peer")

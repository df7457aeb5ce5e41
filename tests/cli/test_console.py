"""``smtpx console``: the web console's address with its token, from the configuration."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpx.cli import main


def _config(tmp_path: Path, control: str) -> Path:
    path = tmp_path / "smtpx.toml"
    path.write_text(f'[spool]\ndir = "{tmp_path / "spool"}"\n\n[control]\n{control}\n')
    return path


def test_it_prints_the_address_with_the_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("a/b+c=\n")
    path = _config(tmp_path, 'http = "127.0.0.1:8025"\ntoken_file = "token"')
    result = CliRunner().invoke(main, ["console", "--config", str(path)])
    assert (result.exit_code, result.output) == (
        0,
        "http://127.0.0.1:8025/console/#token=a%2Fb%2Bc%3D\n",
    )


def test_open_starts_a_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("t\n")
    path = _config(tmp_path, 'http = "127.0.0.1:8025"\ntoken_file = "token"')
    opened: list[str] = []

    def browse(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr(webbrowser, "open", browse)
    result = CliRunner().invoke(main, ["console", "--config", str(path), "--open"])
    assert result.exit_code == 0 and opened == ["http://127.0.0.1:8025/console/#token=t"]
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    result = CliRunner().invoke(main, ["console", "--config", str(path), "--open"])
    assert result.exit_code == 1 and "no web browser" in result.output


def test_without_an_http_listener_it_says_what_is_missing(tmp_path: Path) -> None:
    path = _config(tmp_path, f'socket = "{tmp_path / "control.sock"}"')
    result = CliRunner().invoke(main, ["console", "--config", str(path)])
    assert result.exit_code == 2
    assert "the console needs [control] http" in result.output
    assert "forward the control socket" in result.output

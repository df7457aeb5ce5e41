"""Finding the running smtpx serve from any directory (smtpx.cli.locate): a real daemon
records itself, the CLI finds it from elsewhere, and says so plainly when it is down."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpx.cli import locate
from tests.cli.helpers import Daemon, invoke, smtpx_process


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "runtime"
    monkeypatch.setenv("SMTPX_RUNTIME_DIR", str(directory))
    return directory


@pytest.fixture
def running(tmp_path: Path, runtime: Path) -> Iterator[Daemon]:
    (tmp_path / "mta").mkdir()
    daemon = Daemon(tmp_path / "mta", runtime)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    process = smtpx_process(*args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_the_cli_finds_the_daemon_from_another_directory(
    running: Daemon, runtime: Path, tmp_path: Path
) -> None:
    [record] = runtime.glob("serve-*.json")
    data = json.loads(record.read_text(encoding="utf-8"))
    assert data["pid"] == running.process.pid  # type: ignore[union-attr]
    assert data["control_socket"] == str(running.socket)
    assert data["listeners"] == [["smtp", f"127.0.0.1:{running.port}"]]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = _run("daemon", "status", cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    assert f"smtp 127.0.0.1:{running.port} (port {running.port})" in status.stdout.decode()
    running.inject("a@example.org", ["b@example.net"])
    count = _run("spool", "count", "--json", cwd=elsewhere)
    assert count.returncode == 0, count.stderr
    assert json.loads(count.stdout)["count"] == 1
    running.stop()
    assert not list(runtime.glob("serve-*.json"))  # removed on the way out
    down = _run("spool", "status", cwd=elsewhere)
    assert down.returncode == 3
    message = down.stderr.decode()
    assert "smtpx serve is not running" in message and "--offline" in message
    assert str(elsewhere / "var" / "control.sock") in message and "Traceback" not in message


def test_down_says_so_and_suggests_offline_where_it_exists(tmp_path: Path) -> None:
    stale = tmp_path / "control.sock"
    stale.touch()  # a socket file left behind: nobody answers on it
    status = invoke("spool", "status", "--socket", str(stale))
    assert status.exit_code == 3
    assert (
        f"smtpx serve is not running: nothing answers on {stale} (a stale socket; found "
        "from --socket)" in status.stderr
    )
    assert "read the spool on disk with --offline" in status.stderr
    freeze = invoke("spool", "freeze", "x", "--socket", str(tmp_path / "none.sock"))
    assert freeze.exit_code == 3 and "no socket there" in freeze.stderr
    assert "--offline" not in freeze.stderr  # freeze cannot work offline


def test_smtpx_config_names_the_socket(tmp_path: Path) -> None:
    config = tmp_path / "smtpx.toml"
    config.write_text('[control]\nsocket = "run/ctl.sock"\n', encoding="utf-8")
    result = invoke("spool", "status", SMTPX_CONFIG=str(config))
    assert result.exit_code == 3
    assert f"nothing answers on {tmp_path / 'run' / 'ctl.sock'}" in result.stderr
    assert f"found from control.socket of {config}" in result.stderr


def _fake_record(directory: Path, pid: int, socket: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": pid,
        "config": None,
        "cwd": "/nowhere",
        "control_socket": socket,
        "listeners": [["smtp", "0.0.0.0:2600"], ["submission", "[::]:2587"]],
    }
    (directory / f"serve-{pid}.json").write_text(json.dumps(record), encoding="utf-8")


def test_several_running_daemons_are_a_question(runtime: Path) -> None:
    _fake_record(runtime, os.getpid(), "/a/control.sock")
    _fake_record(runtime, os.getppid(), "/b/control.sock")
    result = invoke("spool", "status")
    assert result.exit_code == 2
    question = "several smtpx serve are running; say which with --config or --socket"
    assert question in result.stderr


def test_records_of_dead_daemons_are_ignored_and_pruned(runtime: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _fake_record(runtime, dead.pid, "/dead/control.sock")
    _fake_record(runtime, os.getpid(), "/live/control.sock")
    (runtime / "serve-9.json").write_text("{half a rec", encoding="utf-8")
    [alive] = locate.records()
    assert alive.control_socket == Path("/live/control.sock")
    assert locate.control_socket() == (Path("/live/control.sock"), alive.describe())
    # the wildcard listener is reached on loopback
    server, how = locate.smtp_server(None)
    assert (server.host, server.port, how) == ("127.0.0.1", 2600, alive.describe())
    written = locate.write_record(os.getpid(), None, Path("/live/control.sock"), [])
    assert written == runtime / f"serve-{os.getpid()}.json"
    assert not (runtime / f"serve-{dead.pid}.json").exists()


def test_the_standard_config_comes_before_the_default(
    tmp_path: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    standard = tmp_path / "etc" / "smtpx.toml"
    standard.parent.mkdir()
    # A password file nobody can read: finding the MTA reads only listen and socket.
    standard.write_text(
        '[server]\nlisten = ["0.0.0.0:25"]\n[control]\nsocket = "/run/x/control.sock"\n'
        '[routing.credentials]\n"h.example" = { username = "u", password_file = "/no/such" }\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(locate, "STANDARD_CONFIG", standard)
    assert locate.control_socket()[0] == Path("/run/x/control.sock")
    server, how = locate.smtp_server(None)
    assert (server.host, server.port) == ("127.0.0.1", 25) and str(standard) in how
    monkeypatch.setattr(locate, "STANDARD_CONFIG", tmp_path / "absent.toml")
    monkeypatch.chdir(tmp_path)
    assert locate.control_socket()[0] == tmp_path / "var" / "control.sock"
    server, how = locate.smtp_server(None)
    assert (server.port, how) == (2525, "the embedded default configuration")


def test_a_shared_tmp_directory_is_used_only_when_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMTPX_RUNTIME_DIR")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    (tmp_path / "file").touch()  # /run/smtpx cannot be made (the tests may run as root)
    monkeypatch.setattr(locate, "SYSTEM_RUNTIME", tmp_path / "file" / "run")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    private = tmp_path / f"smtpx-{os.getuid()}"
    private.mkdir(mode=0o755)  # made by someone else, or carelessly: not trusted
    private.chmod(0o755)
    assert locate.write_record(os.getpid(), None, Path("/x.sock"), []) is None
    _fake_record(private, os.getpid(), "/planted/control.sock")
    assert locate.records() == []
    private.chmod(0o700)
    assert locate.write_record(os.getpid(), None, Path("/x.sock"), []) is not None
    assert [r.control_socket for r in locate.records()] == [Path("/x.sock")]

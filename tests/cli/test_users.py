"""``smtpx users add|remove|list``: the submission users file of :mod:`smtpx.mta.users`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from smtpx.mta.users import Users, hash_password, verify_password
from tests.cli.helpers import invoke


def _hashes(path: Path) -> dict[str, str]:
    """name -> hash, read back from the file's lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = (line.partition(":") for line in lines if line and not line.startswith("#"))
    return {name: hashed for name, _, hashed in pairs}


def _add(path: Path, name: str, password: str, *options: str) -> None:
    result = invoke(
        "users",
        "add",
        name,
        "--file",
        str(path),
        "--password-stdin",
        *options,
        input=password + "\n",
    )
    assert result.exit_code == 0, result.output


def test_add_from_stdin_creates_a_0600_file_the_server_accepts(tmp_path: Path) -> None:
    path = tmp_path / "users"
    result = invoke(
        "users", "add", "alice", "--file", str(path), "--password-stdin", input="s3cret pw\n"
    )
    assert result.exit_code == 0, result.output
    assert "added alice" in result.stdout and "restart smtpx serve" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    hashed = _hashes(path)["alice"]
    assert verify_password("s3cret pw", hashed)  # the newline is not part of it
    assert not verify_password("s3cret pw\n", hashed)
    users = Users.load(path)
    assert list(users) == ["alice"] and users.check("alice", "s3cret pw")
    assert not list(tmp_path.glob(".users.*"))  # no temporary file left


def test_add_prompts_twice(tmp_path: Path) -> None:
    path = tmp_path / "users"
    result = invoke("users", "add", "bob", "--file", str(path), input="pw1\npw1\n")
    assert result.exit_code == 0, result.output
    assert "pw1" not in result.stdout  # hidden input
    assert Users.load(path).check("bob", "pw1")


def test_add_existing_user_needs_update(tmp_path: Path) -> None:
    path = tmp_path / "users"
    _add(path, "alice", "old")
    before = path.read_text(encoding="utf-8")
    again = invoke("users", "add", "alice", "--file", str(path), "--password-stdin", input="new\n")
    assert again.exit_code == 1
    assert "exists" in again.stderr and "--update" in again.stderr
    assert path.read_text(encoding="utf-8") == before
    _add(path, "alice", "new", "--update")
    assert Users.load(path).check("alice", "new")
    assert not Users.load(path).check("alice", "old")
    assert list(_hashes(path)) == ["alice"]
    _add(path, "carol", "pw", "--update")  # --update adds a missing user too
    assert list(Users.load(path)) == ["alice", "carol"]


def test_remove_and_list(tmp_path: Path) -> None:
    path = tmp_path / "users"
    for name in ("alice", "bob", "carol"):
        _add(path, name, f"pw-{name}")
    listed = invoke("users", "list", "--file", str(path))
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == ["alice", "bob", "carol"]
    removed = invoke("users", "remove", "bob", "--file", str(path))
    assert removed.exit_code == 0, removed.output
    assert "removed bob" in removed.stdout
    assert invoke("users", "list", "--file", str(path)).stdout.splitlines() == ["alice", "carol"]
    assert Users.load(path).check("carol", "pw-carol")
    missing = invoke("users", "remove", "bob", "--file", str(path))
    assert missing.exit_code == 1 and "no user 'bob'" in missing.stderr


def test_other_lines_and_mode_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "users"
    carol = hash_password("pw-carol")
    dave = hash_password("pw-dave")
    original = (
        "# managed by hand\r\n"
        f"carol:{carol}\r\n"
        "\n"
        "  # indented comment\n"
        f"dave:{dave}"  # no final newline
    )
    path.write_bytes(original.encode("utf-8"))
    path.chmod(0o640)
    _add(path, "alice", "pw")
    text = path.read_bytes().decode("utf-8")
    assert text.startswith(original + "\n")
    assert text.count("\n") == original.count("\n") + 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    _add(path, "carol", "new", "--update")
    assert invoke("users", "remove", "dave", "--file", str(path)).exit_code == 0
    lines = path.read_bytes().decode("utf-8").splitlines(keepends=True)
    assert lines[0] == "# managed by hand\r\n"
    assert lines[1].startswith("carol:scrypt$") and lines[1].endswith("\r\n")
    assert lines[2:4] == ["\n", "  # indented comment\n"]
    assert lines[4].startswith("alice:") and len(lines) == 5
    users = Users.load(path)
    assert list(users) == ["carol", "alice"]
    assert users.check("carol", "new") and users.check("alice", "pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_symlinked_file_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real-users"
    link = tmp_path / "users"
    link.symlink_to(real.name)
    _add(link, "alice", "pw")
    _add(link, "bob", "pw")
    assert link.is_symlink() and list(Users.load(real)) == ["alice", "bob"]


@pytest.mark.parametrize("name", ["bad:name", "two words", "tab\there", "#comment", ""])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "users"
    for command in (["add", "--password-stdin"], ["remove"]):
        result = invoke("users", *command, name, "--file", str(path), input="pw\n")
        assert result.exit_code == 2, result.output
        assert "Invalid value for 'NAME'" in result.stderr
    assert not path.exists()


def test_empty_password_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users"
    for given in ("\n", ""):
        result = invoke(
            "users", "add", "alice", "--file", str(path), "--password-stdin", input=given
        )
        assert result.exit_code == 2, result.output
        assert "empty password" in result.stderr
    assert not path.exists()


def test_which_file(tmp_path: Path) -> None:
    for command in (["add", "alice", "--password-stdin"], ["remove", "alice"], ["list"]):
        result = invoke("users", *command, input="pw\n")
        assert result.exit_code == 2, result.output
        assert "--file" in result.stderr and "--config" in result.stderr
    bare = tmp_path / "bare.toml"
    bare.write_text('hostname = "mx.test"\n', encoding="utf-8")
    unset = invoke("users", "list", "--config", str(bare))
    assert unset.exit_code == 2 and "users_file is not set" in unset.stderr
    config = tmp_path / "smtpx.toml"
    config.write_text('[auth]\nusers_file = "etc/users"\n', encoding="utf-8")
    (tmp_path / "etc").mkdir()
    added = invoke(
        "users", "add", "alice", "--config", str(config), "--password-stdin", input="pw\n"
    )
    assert added.exit_code == 0, added.output
    assert Users.load(tmp_path / "etc" / "users").check("alice", "pw")
    from_env = invoke("users", "list", SMTPX_CONFIG=str(config))
    assert from_env.stdout.splitlines() == ["alice"]
    # --file wins over --config
    other = tmp_path / "other"
    _add(other, "bob", "pw")
    both = invoke("users", "list", "--config", str(config), "--file", str(other))
    assert both.stdout.splitlines() == ["bob"]


def test_missing_file_for_list_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    for command in (["list"], ["remove", "alice"]):
        result = invoke("users", *command, "--file", str(path))
        assert result.exit_code == 2, result.output
        assert f"{path}: cannot read the users file" in result.stderr


def test_a_corrupt_file_names_the_line_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "users"
    text = f"# users\nalice:{hash_password('pw')}\nbob:scrypt$3$8$1$AAAA$AAAA\n"
    path.write_text(text, encoding="utf-8")
    for command in (["list"], ["remove", "alice"], ["add", "carol", "--password-stdin"]):
        result = invoke("users", *command, "--file", str(path), input="pw\n")
        assert result.exit_code == 2, result.output
        assert f"{path}:3: n must be a power of 2" in result.stderr
    assert path.read_text(encoding="utf-8") == text


def test_a_write_failure_exits_with_1(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "users"
    result = invoke("users", "add", "bob", "--file", str(path), "--password-stdin", input="pw\n")
    assert result.exit_code == 1, result.output
    assert f"cannot write {path}" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_the_owner_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "users"
    _add(path, "alice", "pw")
    os.chown(path, 65534, 65534)
    _add(path, "bob", "pw")
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

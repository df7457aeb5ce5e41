"""The submission users file: scrypt hashes, checks, bad lines, atomic 0600 saves."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from smtpx.errors import ConfigError
from smtpx.mta import users as users_module
from smtpx.mta.users import Users, hash_password, verify_password

# A cheap hash for lines written by hand in these tests (n=2**4 runs in microseconds).
SALT = base64.b64encode(b"0123456789abcdef").decode()


def cheap_hash(password: str, *, n: int = 16, r: int = 8, p: int = 1) -> str:
    digest = hashlib.scrypt(password.encode(), salt=b"0123456789abcdef", n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${SALT}${base64.b64encode(digest).decode()}"


def test_hash_format() -> None:
    hashed = hash_password("s3cret")
    scheme, n, r, p, salt, digest = hashed.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32
    assert verify_password("s3cret", hashed)
    assert not verify_password("S3cret", hashed)
    assert hash_password("s3cret") != hashed  # a fresh salt each time


def test_hash_matches_stdlib_scrypt() -> None:
    hashed = hash_password("pässword")
    _, n, r, p, salt, digest = hashed.split("$")
    expected = hashlib.scrypt(
        "pässword".encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    assert base64.b64decode(digest) == expected
    assert verify_password("pässword".encode(), hashed)


def test_round_trip(tmp_path: Path) -> None:
    users = Users()
    users.add("alice", "wonderland")
    users.add("bob@example.com", "builder")
    path = tmp_path / "users"
    users.save(path)

    loaded = Users.load(path)
    assert sorted(loaded) == ["alice", "bob@example.com"]
    assert len(loaded) == 2
    assert "alice" in loaded
    assert loaded.check("alice", "wonderland")
    assert loaded.check("bob@example.com", "builder")
    assert loaded.dumps() == users.dumps()


def test_wrong_password_and_unknown_user(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{cheap_hash('wonderland')}\n")
    users = Users.load(path)
    assert users.check("alice", "wonderland")
    assert not users.check("alice", "Wonderland")
    assert not users.check("alice", "")
    assert not users.check("Alice", "wonderland")  # names are case-sensitive
    assert not users.check("mallory", "wonderland")


def test_unknown_users_cost_one_scrypt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{cheap_hash('wonderland')}\n")
    users = Users.load(path)
    users_module._dummy_hash()  # made once, on first use; not part of a check's cost
    calls: list[int] = []
    real_scrypt = hashlib.scrypt

    def counting_scrypt(password: bytes, **kwargs: Any) -> bytes:
        calls.append(kwargs["n"])
        return real_scrypt(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)
    assert not users.check("mallory", "x")
    assert calls == [2**14]  # the default cost, like a real user's hash
    calls.clear()
    assert not users.check("alice", "x")
    assert calls == [16]


def test_compare_is_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{cheap_hash('pw')}\n")
    users = Users.load(path)
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert users.check("alice", "pw")
    assert not users.check("nobody", "pw")
    assert len(compared) == 2


async def test_check_async(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{cheap_hash('pw')}\n")
    users = Users.load(path)
    assert await users.check_async("alice", "pw")
    assert not await users.check_async("alice", "nope")


def test_file_mode_is_0600_and_no_temporary_files_remain(tmp_path: Path) -> None:
    users = Users()
    users.add("alice", "pw")
    path = tmp_path / "users"
    path.write_text("old\n")
    path.chmod(0o644)
    users.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["users"]
    assert Users.load(path).check("alice", "pw")


def test_save_failure_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{cheap_hash('old')}\n")
    users = Users()
    users.add("alice", "new")

    def broken_replace(src: str, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        users.save(path)
    assert Users.load(path).check("alice", "old")
    assert [p.name for p in tmp_path.iterdir()] == ["users"]


def test_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(
        "# submission users\n\n"
        f"alice:{cheap_hash('a')}\n"
        "   # indented comment\n"
        f"  bob:{cheap_hash('b')}  \n"
    )
    users = Users.load(path)
    assert sorted(users) == ["alice", "bob"]
    assert users.check("bob", "b")


def test_other_cost_parameters_load(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{cheap_hash('a', n=1024, r=4, p=2)}\n")
    assert Users.load(path).check("alice", "a")


def test_add_replaces_and_remove(tmp_path: Path) -> None:
    users = Users()
    users.add("alice", "one")
    users.add("alice", "two")
    assert len(users) == 1
    assert users.check("alice", "two")
    assert not users.check("alice", "one")
    users.remove("alice")
    assert "alice" not in users
    with pytest.raises(KeyError):
        users.remove("alice")


@pytest.mark.parametrize("name", ["", "a:b", "a b", "a\tb", "tab\t", "nul\x00", "#root"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="user name"):
        Users().add(name, "pw")


def test_repr_shows_no_hashes() -> None:
    users = Users()
    users.add("alice", "pw")
    assert repr(users) == "Users(['alice'])"


GOOD = cheap_hash("pw")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alice", "expected name:scrypt$n$r$p$salt$hash"),
        ("alice:" + GOOD.replace("scrypt", "bcrypt"), "expected scrypt$n$r$p$salt$hash"),
        ("alice:scrypt$16$8$1$" + SALT, "expected scrypt$n$r$p$salt$hash"),
        ("alice:" + GOOD.replace("$16$", "$x$"), "n, r and p must be decimal integers"),
        ("alice:" + GOOD.replace("$16$", "$15$"), "n must be a power of 2 greater than 1"),
        ("alice:" + GOOD.replace("$16$8$1$", "$16$0$1$"), "r must be at least 1"),
        ("alice:" + GOOD.replace("$16$8$1$", "$16$8$99$"), "r must be at least 1 and p in 1..16"),
        ("alice:" + GOOD.replace("$16$8$", "$1048576$8$"), "n * r too large"),
        ("alice:" + GOOD.replace(SALT, "not base64!"), "salt and hash must be base64"),
        ("alice:" + GOOD.replace(SALT, base64.b64encode(b"abc").decode()), "salt shorter"),
        ("alice:" + GOOD.rsplit("$", 1)[0] + "$AAAA", "hash must be 16 to 64 bytes long"),
        ("a b:" + GOOD, "a user name may not hold"),
    ],
)
def test_bad_lines_name_the_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "users"
    path.write_text(f"# users\nbob:{GOOD}\n\n{line}\ncarol:{GOOD}\n")
    with pytest.raises(ConfigError) as caught:
        Users.load(path)
    assert str(caught.value).startswith(f"{path}:4: {problem}"), str(caught.value)
    assert caught.value.file == f"{path}:4"


def test_duplicate_user(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{GOOD}\nbob:{GOOD}\nalice:{GOOD}\n")
    with pytest.raises(ConfigError) as caught:
        Users.load(path)
    assert str(caught.value) == f"{path}:3: user 'alice' again (first on line 1)"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(ConfigError) as caught:
        Users.load(path)
    assert str(caught.value) == f"{path}: cannot read the users file: No such file or directory"


def test_verify_password_rejects_a_bad_hash() -> None:
    with pytest.raises(ValueError, match="expected scrypt"):
        verify_password("pw", "plain:text")

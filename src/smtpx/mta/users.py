"""The submission users file: names with salted scrypt password hashes.

One user per line, ``name:scrypt$n$r$p$salt$hash`` (``salt`` and ``hash`` in standard
base64); blank lines and lines starting with ``#`` are ignored::

    # smtpx users
    alice:scrypt$16384$8$1$3q2+7w...==$Vt1l...=

Hashes use the stdlib :func:`hashlib.scrypt` (RFC 7914) with n = 2**14, r = 8, p = 1 (16
MiB and some tens of milliseconds per check) and a 16-byte random salt. Lines with other
parameters load as long as they stay within sane bounds, so the cost can be raised later
without breaking old lines.

:meth:`Users.check` is deliberately slow and blocks: call it from a thread
(:meth:`Users.check_async` does) so the event loop keeps serving other sessions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smtpx.errors import ConfigError
from smtpx.spool.manifest import fsync_directory

__all__ = ["Users", "hash_password", "verify_password"]

SCHEME = "scrypt"
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Bounds for hashes read from a file: a hostile or mistyped line must not make one check
# take minutes or gigabytes. scrypt needs about 128 * n * r bytes.
_MAX_MEMORY = 256 * 1024**2
_MAX_P = 16
_MIN_SALT = 8
_MIN_HASH = 16
_MAX_HASH = 64

_NAME_BAD_RE = re.compile(r"[:\s\x00-\x1f\x7f]")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("a user name must be a non-empty string")
    if _NAME_BAD_RE.search(name):
        raise ValueError(
            f"a user name may not hold ':', whitespace or control characters: {name!r}"
        )
    if name.startswith("#"):
        raise ValueError(f"a user name may not start with '#' (comment lines do): {name!r}")
    return name


def _to_bytes(password: str | bytes) -> bytes:
    return password.encode("utf-8") if isinstance(password, str) else password


@dataclass(frozen=True, slots=True, repr=False)
class _Hash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> _Hash:
        """Read ``scrypt$n$r$p$salt$hash``; raises ValueError naming what is wrong."""
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError("expected scrypt$n$r$p$salt$hash")
        try:
            n, r, p = (int(part, 10) for part in parts[1:4])
        except ValueError:
            raise ValueError("n, r and p must be decimal integers") from None
        if n < 2 or n & (n - 1):
            raise ValueError(f"n must be a power of 2 greater than 1, got {n}")
        if r < 1 or p < 1 or p > _MAX_P:
            raise ValueError(f"r must be at least 1 and p in 1..{_MAX_P}")
        if 128 * n * r > _MAX_MEMORY:
            raise ValueError(f"n * r too large (scrypt would need {128 * n * r} bytes)")
        try:
            salt = base64.b64decode(parts[4], validate=True)
            digest = base64.b64decode(parts[5], validate=True)
        except binascii.Error:
            raise ValueError("salt and hash must be base64") from None
        if len(salt) < _MIN_SALT:
            raise ValueError(f"salt shorter than {_MIN_SALT} bytes")
        if not _MIN_HASH <= len(digest) <= _MAX_HASH:
            raise ValueError(f"hash must be {_MIN_HASH} to {_MAX_HASH} bytes long")
        return cls(n, r, p, salt, digest)

    def compute(self, password: bytes) -> bytes:
        return hashlib.scrypt(
            password,
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            dklen=len(self.digest),
            # OpenSSL's default cap (32 MiB) is too tight for r * n near our bound.
            maxmem=128 * self.r * (self.n + self.p + 2) + 1024**2,
        )

    def matches(self, password: str | bytes) -> bool:
        return hmac.compare_digest(self.compute(_to_bytes(password)), self.digest)

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        return f"{SCHEME}${self.n}${self.r}${self.p}${salt}${digest}"


def _new_hash(password: str | bytes, *, n: int, r: int, p: int) -> _Hash:
    template = _Hash(n, r, p, secrets.token_bytes(SALT_BYTES), bytes(HASH_BYTES))
    return _Hash(n, r, p, template.salt, template.compute(_to_bytes(password)))


def hash_password(
    password: str | bytes, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """A fresh ``scrypt$n$r$p$salt$hash`` for ``password`` (UTF-8 when a str), with a
    random 16-byte salt."""
    hashed = _new_hash(password, n=n, r=r, p=p)
    _Hash.parse(str(hashed))  # the bounds apply to what we write, too
    return str(hashed)


def verify_password(password: str | bytes, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed`` (constant-time comparison). Raises
    ValueError when ``hashed`` is not a valid hash."""
    return _Hash.parse(hashed).matches(password)


@functools.cache
def _dummy_hash() -> _Hash:
    # Checked against for unknown names, so that a miss costs one scrypt like a hit (the
    # timing does not tell which names exist). Made on first use: it costs a hash.
    return _new_hash(secrets.token_bytes(16), n=DEFAULT_N, r=DEFAULT_R, p=DEFAULT_P)


class Users:
    """The users allowed to authenticate on submission listeners: name -> password hash.

    Build with :meth:`load` (or empty, then :meth:`add`), check with :meth:`check`, write
    with :meth:`save`. Names are case-sensitive.
    """

    def __init__(self) -> None:
        self._hashes: dict[str, _Hash] = {}

    @classmethod
    def load(cls, path: Path | str) -> Users:
        """Read a users file. Raises :class:`~smtpx.errors.ConfigError` naming the file
        and line (``users:3: ...``) for a bad line or a name given twice, or the file when
        it cannot be read."""
        users = cls()
        file = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read the users file: {detail}", file=file) from None
        first_line: dict[str, int] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, colon, hashed = line.partition(":")
            where = f"{file}:{number}"
            if not colon:
                raise ConfigError("expected name:scrypt$n$r$p$salt$hash", file=where)
            try:
                _check_name(name)
                entry = _Hash.parse(hashed)
            except ValueError as exc:
                raise ConfigError(str(exc), file=where) from None
            if name in first_line:
                raise ConfigError(
                    f"user {name!r} again (first on line {first_line[name]})", file=where
                )
            first_line[name] = number
            users._hashes[name] = entry
        return users

    def check(self, name: str, password: str | bytes) -> bool:
        """Whether ``name`` exists and ``password`` is its password.

        Costs one scrypt whether or not the user exists, and compares in constant time.
        Blocks for tens of milliseconds: from async code, use :meth:`check_async`.
        """
        entry = self._hashes.get(name)
        if entry is None:
            _dummy_hash().matches(password)
            return False
        return entry.matches(password)

    async def check_async(self, name: str, password: str | bytes) -> bool:
        """:meth:`check` in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.check, name, password)

    def add(self, name: str, password: str | bytes) -> None:
        """Add ``name`` with a fresh hash of ``password``, or replace its password.
        Raises ValueError for a name with ':', whitespace or control characters."""
        _check_name(name)
        self._hashes[name] = _Hash.parse(hash_password(password))

    def remove(self, name: str) -> None:
        """Remove ``name``; KeyError when there is no such user."""
        del self._hashes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._hashes

    def __iter__(self) -> Iterator[str]:
        return iter(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def __repr__(self) -> str:
        return f"Users({sorted(self._hashes)!r})"

    def dumps(self) -> str:
        """The file's text: a header comment, then one line per user (sorted by name)."""
        lines = ["# smtpx users: name:scrypt$n$r$p$salt$hash (salt and hash in base64)"]
        lines += [f"{name}:{self._hashes[name]}" for name in sorted(self._hashes)]
        return "\n".join(lines) + "\n"

    def save(self, path: Path | str) -> None:
        """Write the file atomically with mode 0600: a temporary file in the same
        directory, flushed to disk, renamed over ``path``, then the directory flushed.
        A reader sees the old file or the new one, never a mix."""
        target = Path(path)
        directory = target.parent
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)  # mkstemp already does; say it
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.dumps())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is (POSIX fsync(2)); a
    # directory that cannot be flushed leaves the file written, as before.
    with contextlib.suppress(OSError):
        fsync_directory(directory)

"""The journal's manifest: which segments it must hold, and where each sealed one ends.

Without it, replay cannot tell a segment lost to disk damage (or an operator's ``rm``)
from one that compaction deleted, nor the end of a sealed segment from bytes that a
failed write left behind it. ``journal/manifest.json``::

    {"v": 1, "first": 3, "current": 7, "sealed": {"3": 67108912, "4": 67109001, ...}}

* ``first``: the oldest segment that must exist (compaction moves it up, before it
  deletes anything: a segment below ``first`` is dead and may be removed);
* ``current``: the segment appended to; a segment above it exists only in the instant
  between creating a new segment and recording it here (replay adopts exactly one);
* ``sealed``: every segment from ``first`` to ``current - 1`` with its length when it was
  sealed. Octets past that length are void: a group whose write or fsync failed, never
  acknowledged. A segment shorter than its sealed length has been truncated.

The manifest changes only when a segment is sealed or deleted (every 64 MB by default),
and is replaced atomically: written to a temporary file, synced, renamed, directory
synced.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpx import compactjson
from smtpx.errors import SMTPXError

__all__ = ["MANIFEST_NAME", "Manifest", "ManifestError", "load_manifest", "store_manifest"]

MANIFEST_NAME = "manifest.json"
VERSION = 1


class ManifestError(SMTPXError):
    """The manifest exists but cannot be read (damaged, or written by a newer smtpx)."""


@dataclass(slots=True)
class Manifest:
    first: int = 1
    current: int = 1
    sealed: dict[int, int] = field(default_factory=dict)

    def expected(self) -> range:
        """The segments that must exist, oldest first."""
        return range(self.first, self.current + 1)

    def seal(self, segment: int, length: int, next_segment: int) -> None:
        """``segment`` ends at ``length``; appends go on in ``next_segment``."""
        self.sealed[segment] = length
        self.current = next_segment

    def drop_before(self, first: int) -> None:
        """Segments below ``first`` are gone (compaction)."""
        self.first = max(self.first, first)
        self.sealed = {n: size for n, size in self.sealed.items() if n >= self.first}

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "v": VERSION,
            "first": self.first,
            "current": self.current,
            "sealed": {str(n): size for n, size in sorted(self.sealed.items())},
        }
        return compactjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = compactjson.loads(raw)
            if data.get("v") != VERSION:
                raise ManifestError(f"manifest version {data.get('v')!r} is not {VERSION}")
            sealed = {int(n): int(size) for n, size in data["sealed"].items()}
            manifest = cls(int(data["first"]), int(data["current"]), sealed)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(f"manifest is unreadable: {exc}") from None
        if manifest.first < 1 or manifest.current < manifest.first:
            raise ManifestError(
                f"manifest is inconsistent: first {manifest.first}, current {manifest.current}"
            )
        return manifest


def load_manifest(directory: Path) -> Manifest | None:
    """The manifest in the journal ``directory``; None when there is none (a new spool,
    or one written before manifests existed)."""
    try:
        raw = (directory / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return Manifest.from_json(raw)


def store_manifest(directory: Path, manifest: Manifest, *, sync: bool) -> None:
    """Replace the manifest atomically (and durably, with ``sync``)."""
    target = directory / MANIFEST_NAME
    partial = target.with_name(MANIFEST_NAME + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        data = manifest.to_json()
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {partial}")
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(partial, target)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    if sync:
        fsync_directory(directory)


def fsync_directory(path: Path) -> None:
    """Flush the directory ``path``: a file created or renamed in it survives a crash
    only once its entry is on disk (POSIX fsync(2)). OSError when it cannot be."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

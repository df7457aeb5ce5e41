"""A journal spool directory shared out between workers (``[server] workers``): worker 0
keeps the directory itself, worker ``I`` its ``shard-I`` subdirectory, each a spool of its
own. Offline tools (``smtpx spool status --spool-dir``, ``show``, ``fsck``) read them all.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["SHARD_RE", "shard_dir", "shard_dirs", "spool_of_shard"]

SHARD_RE = re.compile(r"shard-([1-9][0-9]*)")


def shard_dir(spool_dir: Path, index: int) -> Path:
    """Worker ``index``'s part of the spool: the spool itself for worker 0."""
    return spool_dir if index == 0 else spool_dir / f"shard-{index}"


def spool_of_shard(shard: Path, index: int) -> Path:
    """The spool directory whose worker ``index``'s shard is ``shard`` (the inverse of
    :func:`shard_dir`)."""
    return shard if index == 0 else shard.parent


def shard_dirs(spool_dir: Path) -> list[Path]:
    """The spool and each shard in it that holds a journal, worker 0 first, then by
    index."""
    found = []
    if spool_dir.is_dir():
        for path in spool_dir.iterdir():
            match = SHARD_RE.fullmatch(path.name)
            if match is not None and (path / "journal").is_dir():
                found.append((int(match[1]), path))
    return [spool_dir] + [path for _, path in sorted(found)]

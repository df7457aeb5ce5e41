"""Checking a spool directory (the journal's counterpart of the reference's multispool
monitor, F103): read-only, safe to run next to a live ``smtpx serve``.

It reports:

* what replaying the journal finds (:mod:`smtpx.spool.replay`): damaged records, missing
  or truncated segments (checked against the manifest), messages whose records were lost,
  torn tails and void octets;
* files kept in ``corrupt/`` (torn tails moved aside at an earlier start);
* bodies whose checksum no longer matches (every body is read, unless
  ``verify_bodies=False``);
* messages that point outside their segment, or at a segment that is gone;
* stray files in ``journal/``;
* messages stuck: due for longer than ``max_due_age`` without being tried, or frozen for
  longer than ``max_frozen_age`` (both optional).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpx.spool.journal import SEGMENT_SUFFIX, BodyDamaged, Journal, Location
from smtpx.spool.manifest import MANIFEST_NAME
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.shards import shard_dirs

__all__ = ["Problem", "check", "check_all"]


@dataclass(frozen=True, slots=True)
class Problem:
    # "not-a-spool" | "corrupt-file" | "bad-body" | "missing-body" | "stray-file" |
    # "too-old" | a replay problem's kind ("damaged", "missing-segment", "lost-records"...)
    kind: str
    where: str
    description: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.description}"


def check(
    directory: str | Path,
    *,
    verify_bodies: bool = True,
    max_due_age: float | None = None,
    max_frozen_age: float | None = None,
    now: float | None = None,
) -> list[Problem]:
    """Every problem found in the spool at ``directory`` (an empty list: all is well)."""
    root = Path(directory)
    journal = Journal(root)
    problems: list[Problem] = []
    if not journal.journal_dir.is_dir():
        return [Problem("not-a-spool", str(root), "not a spool: no journal/ directory")]
    replay = journal.replay_readonly()
    for damage in replay.problems:
        prefix = f"segment {damage.segment} offset {damage.offset}: "
        description = damage.description.removeprefix(prefix)
        if damage.segment:
            where = f"{journal.segment_path(damage.segment)} offset {damage.offset}"
        else:
            where = str(journal.journal_dir)
        problems.append(Problem(damage.kind, where, description))
    corrupt = root / "corrupt"
    if corrupt.is_dir():
        for path in sorted(corrupt.iterdir()):
            problems.append(
                Problem(
                    "corrupt-file", str(path), f"{path.stat().st_size} octets kept for inspection"
                )
            )
    for path in sorted(journal.journal_dir.iterdir()):
        if path.name == MANIFEST_NAME:
            continue
        if path.suffix != SEGMENT_SUFFIX or not path.stem.isdigit():
            problems.append(Problem("stray-file", str(path), "not a journal segment"))
    sizes = {n: journal.segment_path(n).stat().st_size for n in journal.segment_numbers()}
    moment = time.time() if now is None else now
    for meta, location in replay.messages.values():
        message_id = str(meta.get("id"))
        size = sizes.get(location.segment)
        if size is None or location.offset + location.length > size:
            problems.append(
                Problem(
                    "missing-body", message_id, f"its body is not in segment {location.segment}"
                )
            )
            continue
        if verify_bodies and not _body_ok(journal, location):
            problems.append(Problem("bad-body", message_id, "the body does not match its checksum"))
        try:
            message = SpooledMessage.from_meta(meta, location)
        except (KeyError, ValueError, TypeError) as exc:
            problems.append(Problem("damaged", message_id, f"unreadable metadata: {exc}"))
            continue
        problems.extend(_age_problems(message, moment, max_due_age, max_frozen_age))
    return problems


def _body_ok(journal: Journal, location: Location) -> bool:
    try:
        journal.check_body(location)
    except BodyDamaged:
        return False
    return True


def _age_problems(
    message: SpooledMessage, now: float, max_due_age: float | None, max_frozen_age: float | None
) -> list[Problem]:
    found = []
    if max_due_age is not None and message.status in (Status.SEND_NOW, Status.SEND_AT):
        due = message.next_attempt if message.next_attempt is not None else message.spool_date
        if now - due > max_due_age:
            found.append(
                Problem("too-old", message.id, f"due for {now - due:.0f}s and not attempted")
            )
    if max_frozen_age is not None and message.status is Status.FROZEN:
        age = now - message.spool_date
        if age > max_frozen_age:
            found.append(Problem("too-old", message.id, f"frozen, {age:.0f}s on the spool"))
    return found


def check_all(directory: str | Path, **options: Any) -> list[Problem]:
    """:func:`check` of the spool and of each worker's shard in it (``shard-I``,
    :mod:`smtpx.spool.shards`), their problems together."""
    root = Path(directory)
    problems = check(root, **options)
    if any(p.kind == "not-a-spool" for p in problems):
        return problems
    for shard in shard_dirs(root)[1:]:
        problems += check(shard, **options)
    return problems

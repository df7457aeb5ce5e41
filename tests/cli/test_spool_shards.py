"""The offline spool commands read every worker's shard of a spool directory
(``spool.dir`` and ``spool.dir/shard-I``, :mod:`smtpx.spool.shards`), not only the first."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from smtpx.envelope import Envelope
from smtpx.spool.journal import Journal
from smtpx.spool.shards import shard_dir, shard_dirs
from smtpx.spool.spool import Delivery, Spool, SpoolConfig
from tests.cli.helpers import invoke


def _fill(directory: Path, senders: list[str]) -> list[str]:
    async def add() -> list[str]:
        spool = Spool(SpoolConfig(directory=directory))
        await spool.start()
        try:
            ids = []
            for sender in senders:  # one at a time: their dates are in this order
                envelope = Envelope.create(
                    sender=sender,
                    recipients=["u@example.net"],
                    message=f"From: {sender}\r\nSubject: from {sender}\r\n\r\nhi\r\n".encode(),
                )
                ids += await spool.add([Delivery(envelope, route="example.net")], frozen=True)
            return ids
        finally:
            await spool.kill_and_flush(0)

    return asyncio.run(add())


def test_status_show_and_fsck_read_every_shard(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    first = _fill(shard_dir(spool_dir, 0), ["a@example.com"])
    second = _fill(shard_dir(spool_dir, 2), ["b@example.com", "c@example.com"])
    (spool_dir / "shard-9").mkdir()  # no journal in it: not a shard
    assert shard_dirs(spool_dir) == [spool_dir, spool_dir / "shard-2"]

    listed = invoke("spool", "status", "--spool-dir", str(spool_dir), "--format", "ids")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split() == first + second  # all of them, oldest first
    filtered = invoke("spool", "status", "--spool-dir", str(spool_dir), "--sender", "^<c@")
    assert second[1] in filtered.stdout and first[0] not in filtered.stdout

    shown = invoke("spool", "show", second[1], "--spool-dir", str(spool_dir))
    assert shown.exit_code == 0, shown.output
    assert "from c@example.com" in shown.stdout

    assert invoke("spool", "fsck", "--spool-dir", str(spool_dir)).exit_code == 0
    # A body rots in the second worker's shard: fsck finds it there.
    shard = spool_dir / "shard-2"
    (message,) = [m for m in Spool.status_from_disk(shard) if m.id == second[0]]
    with open(Journal(shard).segment_path(message.location.segment), "r+b") as file:
        file.seek(message.location.offset + 2)
        file.write(b"#")
    found = invoke("spool", "fsck", "--spool-dir", str(spool_dir), "--json")
    assert found.exit_code == 1
    problems = json.loads(found.stdout)["problems"]
    assert [(p["kind"], p["where"]) for p in problems] == [("bad-body", second[0])]

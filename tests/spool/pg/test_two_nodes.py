"""Two real ``smtpx serve`` nodes on one PostgreSQL queue: mail accepted by node A is
delivered; A is killed with ``kill -9`` in the middle of delivery, and node B delivers
everything A had claimed once A's leases lapse. Nothing is lost; duplicates (what A had
in flight) are counted and bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smtpx.testing import Handler, ScriptedServer
from tests.mta.test_crash import Daemon, delivered, free_port, send_until_stopped, wait_for

LEASE = 10  # seconds: the shortest the configuration takes


def node_config(directory: Path, name: str, listen: int, sink: int, dsn: str) -> Path:
    directory.mkdir()
    path = directory / "smtpx.toml"
    path.write_text(
        f"""
hostname = "{name}.test"
[server]
listen = ["127.0.0.1:{listen}"]
[spool]
dir = "spool"
backend = "postgresql"
retry_intervals = ["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
[spool.postgresql]
dsn = "{dsn}"
node = "{name}"
lease = "{LEASE}s"
[local]
maildir = "mail"
[control]
socket = "control.sock"
[routing.routes]
"example.net" = ["127.0.0.1:{sink}"]
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.timeout(180)
async def test_a_node_killed_mid_delivery_leaves_its_mail_to_the_other(
    tmp_path: Path, pg_dsn: str
) -> None:
    sink_port = free_port()
    a_port, b_port = free_port(), free_port()
    a = Daemon(node_config(tmp_path / "a", "a", a_port, sink_port, pg_dsn), a_port)
    b = Daemon(node_config(tmp_path / "b", "b", b_port, sink_port, pg_dsn), b_port)
    try:
        await a.start()
        await b.start()
        acknowledged: set[int] = set()
        # The destination is down while 300 messages are accepted by A alone.
        await asyncio.gather(
            *(
                send_until_stopped(a_port, range(k * 50, k * 50 + 50), acknowledged)
                for k in range(6)
            )
        )
        assert len(acknowledged) == 300
        async with ScriptedServer(Handler, port=sink_port) as sink:
            while len(delivered(sink)) < 60:
                await asyncio.sleep(0.002)
            a.kill()  # in the middle of delivery, holding leases on what it claimed
            seen = await wait_for(sink, acknowledged, timeout=LEASE * 6)
            assert await b.terminate() == 0
    finally:
        a.cleanup()
        b.cleanup()
    lost = acknowledged - set(seen)
    assert not lost, f"{len(lost)} messages lost: {sorted(lost)[:10]}"
    duplicates = sum(c - 1 for c in seen.values())
    print(f"delivered {len(seen)}, duplicates after the kill {duplicates}")
    assert duplicates <= 40  # what A had in flight: its connections' pipelined messages

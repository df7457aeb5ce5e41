"""The PostgreSQL spool engine beside the journal (and Postfix), in one run.

    .venv/bin/python bench/cluster.py [--messages 5000] [--size 4096] [--sessions 20]
                                      [--no-postfix] [--quick]

A private PostgreSQL cluster (``smtpx.testing.postgres``: fsync on, on this machine) and
``smtp-source``/``smtp-sink`` from Postfix, as bench/relay.py. Cases, each on a fresh
queue:

1. durable intake with delivery paused (a closed next hop), one node: the journal, then
   PostgreSQL, then a private Postfix (``defer_transports = smtp``);
2. relay end to end into ``smtp-sink``, one node: journal, PostgreSQL;
3. relay end to end with two nodes on one database: half the load to each node, the
   sink counts all of it.

For the PostgreSQL cases, what the database did per message, read from its statistics
before and after: transactions committed (each statement of the queue is one: about
the round trips), rows inserted, updated and deleted, and WAL bytes written. Those are
the figures docs/scaling.md reasons from.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchlib import free_port, tool
from relay import (
    HOSTNAME,
    Load,
    Postfix,
    Smtpx,
    cpu_seconds,
    postfix_intake,
    smtp_sink,
    timed_intake,
    timed_relay,
)
from smtpx.testing.postfix import PostfixUnavailable
from smtpx.testing.postgres import Cluster, MissingPostgres, start_cluster

STATS = """SELECT xact_commit, tup_inserted, tup_updated, tup_deleted,
    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
FROM pg_stat_database WHERE datname = current_database()"""


@dataclass(frozen=True)
class DbCost:
    commits: float
    inserted: float
    updated: float
    deleted: float
    wal_bytes: float

    def __str__(self) -> str:
        return (
            f"{self.commits:.1f} commits, {self.inserted:.1f} rows in, {self.updated:.1f} "
            f"updated, {self.deleted:.1f} deleted, {self.wal_bytes / 1024:.1f} KiB of WAL"
        )


def reading(cluster: Cluster, database: str) -> list[int]:
    # (pg_stat counters are updated at transaction end, with a delay of up to a second)
    time.sleep(1.1)
    out = cluster.sql(STATS, database).strip().split("|")
    return [int(value) for value in out]


def cost(before: list[int], after: list[int], messages: int) -> DbCost:
    diff = [(b - a) / messages for a, b in zip(before, after, strict=True)]
    return DbCost(*diff)


class Node(Smtpx):
    """smtpx serve on the shared queue."""

    def __init__(self, workdir: Path, fsync: str, loop: str, dsn: str, name: str) -> None:
        super().__init__(workdir, fsync, loop)
        self.dsn = dsn
        self.name = name

    def config(
        self, name: str, port: int, spool: Path, next_hop: int, *, paused: bool, workers: int = 1
    ) -> Path:
        path = super().config(name, port, spool, next_hop, paused=paused, workers=workers)
        text = path.read_text()
        head, _, rest = text.partition("[routing]")
        spool_keys = 'backend = "postgresql"\n'
        text = head + spool_keys + f'[spool.postgresql]\ndsn = "{self.dsn}"\nnode = "{self.name}"\n'
        path.write_text(text + "[routing]" + rest)
        return path


@contextlib.contextmanager
def database(cluster: Cluster, name: str) -> Iterator[str]:
    cluster.sql(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        yield cluster.dsn(name)
    finally:
        cluster.sql(f"DROP DATABASE {name} WITH (FORCE)")


def intake(mta: Smtpx, load: Load, name: str) -> float:
    port = free_port()
    config = mta.config(name, port, mta.workdir / name, free_port(), paused=True)
    with mta.serve(config, port) as process:
        return timed_intake(load, port, lambda: cpu_seconds(process.pid)).rate


def relay(mta: Smtpx, load: Load, name: str) -> float:
    port, sink_port = free_port(), free_port()
    config = mta.config(name, port, mta.workdir / name, sink_port, paused=False)
    with smtp_sink(sink_port, load.messages) as sink, mta.serve(config, port) as process:
        return timed_relay(load, port, sink, lambda: cpu_seconds(process.pid)).rate


def two_node_relay(a: Node, b: Node, load: Load) -> float:
    """Half the load to each node at once; messages/s until the sink has it all."""
    sink_port = free_port()
    ports = [free_port(), free_port()]
    configs = [
        node.config(
            f"two-{node.name}", port, node.workdir / f"two-{node.name}", sink_port, paused=False
        )
        for node, port in zip((a, b), ports, strict=True)
    ]
    half = Load(load.messages // 2, load.size, max(1, load.sessions // 2))
    with (
        smtp_sink(sink_port, half.messages * 2) as sink,
        a.serve(configs[0], ports[0]),
        b.serve(configs[1], ports[1]),
    ):
        start = time.perf_counter()
        sources = [subprocess.Popen(half.argv(port)) for port in ports]
        for source in sources:
            source.wait(600)
        sink.wait(600)
        return half.messages * 2 / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1,000 messages")
    args = parser.parse_args()
    load = Load(1000 if args.quick else args.messages, args.size, args.sessions)
    tool("smtp-source")
    try:
        cluster = start_cluster()
    except MissingPostgres as exc:
        sys.exit(f"no PostgreSQL: {exc}")
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="smtpx-cluster-bench-", dir="/tmp") as scratch:
        os.chmod(scratch, 0o755)  # Postfix's unprivileged daemons work under it
        work = Path(scratch)
        try:
            journal = Smtpx(work, "batch", "asyncio")
            rows.append(("intake, journal", f"{intake(journal, load, 'j-in'):,.0f} msg/s", ""))
            with database(cluster, "bench_in") as dsn:
                before = reading(cluster, "bench_in")
                node = Node(work, "batch", "asyncio", dsn, "n1")
                in_rate = intake(node, load, "pg-in")
                db = cost(before, reading(cluster, "bench_in"), load.messages)
                rows.append(("intake, PostgreSQL", f"{in_rate:,.0f} msg/s", str(db)))
            if not args.no_postfix:
                rows.append(("intake, Postfix", postfix_rate(work, load), ""))
            rows.append(("relay, journal", f"{relay(journal, load, 'j-relay'):,.0f} msg/s", ""))
            with database(cluster, "bench_relay") as dsn:
                before = reading(cluster, "bench_relay")
                node = Node(work, "batch", "asyncio", dsn, "n1")
                rate = relay(node, load, "pg-relay")
                db = cost(before, reading(cluster, "bench_relay"), load.messages)
                rows.append(("relay, PostgreSQL, one node", f"{rate:,.0f} msg/s", str(db)))
            with database(cluster, "bench_two") as dsn:
                a = Node(work, "batch", "asyncio", dsn, "a")
                b = Node(work, "batch", "asyncio", dsn, "b")
                rate = two_node_relay(a, b, load)
                rows.append(("relay, PostgreSQL, two nodes", f"{rate:,.0f} msg/s", ""))
        finally:
            cluster.stop()
    print(f"{load.messages} x {load.size} octets, {load.sessions} sessions, {HOSTNAME}:")
    for name, shown, detail in rows:
        print(f"  {name:<30} {shown:>12}  {detail}")
    return 0


def postfix_rate(work: Path, load: Load) -> str:
    try:
        postfix = Postfix(work / "postfix", free_port())
    except PostfixUnavailable as exc:
        return f"unavailable: {exc}"
    run, _ = postfix_intake(postfix, load)  # both shapes; the kept connections compare here
    return f"{run.kept.rate:,.0f} msg/s"


if __name__ == "__main__":
    sys.exit(main())

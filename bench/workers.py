"""Workers benchmark: ``smtpx serve`` with ``[server] workers = 1`` against ``workers = N``
(default: the number of cores), the same load, durable (fsync "batch").

    .venv/bin/python bench/workers.py [--workers N] [--messages 10000] [--size 4096]
                                      [--sessions 40] [--loop auto|asyncio|uvloop] [--keep]

Two cases for each count of workers, as in ``bench/relay.py`` (whose helpers it uses):

1. Intake with delivery paused (the next hop is a port where nothing listens, retries in
   1h): ``smtp-source -s SESSIONS -m MESSAGES -l SIZE -d``, messages/s over its wall time;
   then every message is counted in the spool, shard by shard.
2. End-to-end relay into ``smtp-sink``: messages/s from the start of smtp-source until
   smtp-sink has them all.

Each run waits until every worker answers on the control plane (``/healthz``) before the
load starts. Issue 15's target (on >= 8 cores, not on a small machine): N = cores gives
>= 0.7 x cores the one-worker throughput. On fewer cores the figure says how much a second
process helps there, with smtp-source on the same cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from benchlib import free_port
from relay import HOSTNAME, Load, smtp_sink, smtp_source, stop
from smtpx.spool.spool import Spool

HEALTHY_WITHIN = 120.0


def config(work: Path, name: str, workers: int, port: int, next_hop: int, *, paused: bool) -> Path:
    retry = 'retry_intervals = ["1h"]\n' if paused else ""
    path = work / f"{name}.toml"
    path.write_text(
        f'hostname = "{HOSTNAME}"\n'
        f'[server]\nlisten = ["127.0.0.1:{port}"]\nworkers = {workers}\n'
        f'[spool]\ndir = "{work / name}"\nfsync = "batch"\n{retry}'
        f'[routing]\nsmarthost = "127.0.0.1:{next_hop}"\n'
        '[[routing.tls]]\nsuffix = ""\nmode = "none"\n'
        f'[control]\nsocket = "{work / (name + ".sock")}"\n'
        '[log]\nlevel = "warning"\n'
    )
    return path


def healthy(socket_path: Path) -> bool:
    import asyncio

    async def ask() -> bool:
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://smtpx/healthz") as reply,
        ):
            return reply.status == 200

    try:
        return asyncio.run(ask())
    except (aiohttp.ClientError, OSError):
        return False


@contextlib.contextmanager
def serve(path: Path, loop: str) -> Iterator[subprocess.Popen[bytes]]:
    log = path.with_suffix(".log")
    with open(log, "ab") as log_file:
        argv = [sys.executable, "-m", "smtpx", "serve", "--config", str(path), "--loop", loop]
        process = subprocess.Popen(argv, stdout=log_file, stderr=log_file)
    try:
        deadline = time.monotonic() + HEALTHY_WITHIN
        while not healthy(path.with_suffix(".sock")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"smtpx serve did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process, 120)


def queued(spool: Path) -> int:
    shards = [spool, *sorted(spool.glob("shard-*"))]
    return sum(Spool.count_from_disk(shard) for shard in shards)


def intake(work: Path, workers: int, load: Load, loop: str) -> float:
    port, name = free_port(), f"intake-{workers}"
    with serve(config(work, name, workers, port, free_port(), paused=True), loop):
        start = time.perf_counter()
        smtp_source(load, port)
        elapsed = time.perf_counter() - start
    got = queued(work / name)
    if got != load.messages:
        raise RuntimeError(f"{workers} workers spooled {got} of {load.messages} messages")
    shutil.rmtree(work / name)
    return load.messages / elapsed


def relay(work: Path, workers: int, load: Load, loop: str) -> float:
    port, sink_port, name = free_port(), free_port(), f"relay-{workers}"
    with (
        serve(config(work, name, workers, port, sink_port, paused=False), loop),
        smtp_sink(sink_port, load.messages) as sink,
    ):
        start = time.perf_counter()
        smtp_source(load, port)
        sink.wait(60 + load.messages / 100)
        elapsed = time.perf_counter() - start
    shutil.rmtree(work / name)
    return load.messages / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    load = Load(args.messages, args.size, args.sessions)
    work = Path(tempfile.mkdtemp(prefix="smtpx-workers-bench-", dir="/tmp"))
    cores = os.cpu_count() or 1
    print(
        f"workers benchmark: smtp-source -s {load.sessions} -m {load.messages} -l {load.size}"
        f" -d; {cores} CPUs, load average {os.getloadavg()[0]:.2f}; fsync batch",
        flush=True,
    )
    try:
        for case, run in (("intake, delivery paused", intake), ("relay into smtp-sink", relay)):
            one = run(work, 1, load, args.loop)
            many = run(work, args.workers, load, args.loop)
            print(
                f"{case}: 1 worker {one:,.0f} msg/s, {args.workers} workers {many:,.0f} msg/s"
                f" = {many / one:.2f} x (target on >= 8 cores: >= {0.7 * args.workers:.1f} x)",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

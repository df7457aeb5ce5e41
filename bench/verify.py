"""What checking every body before delivery costs the relay (issue: "never send a damaged
body"; target: under 5% of relay throughput).

    .venv/bin/python bench/verify.py [--messages 5000] [--size 4096] [--rounds 3]

In one process: a ``Spool`` (fsync "batch", as ``smtpx serve``) holds ``--messages``
frozen messages; they are released at once and relayed over up to 10 connections into
Postfix's ``smtp-sink``; the time until the spool is empty gives messages/s. The same run
is made with the check on (as shipped) and with ``Journal.check_bodies`` replaced by one
that checks nothing, alternating, ``--rounds`` times each; the medians and their ratio
are printed, with the check's own cost per message measured alone (read + CRC32).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, tool, wait_listening
from smtpx.client import ClientConfig, TlsConfig, TlsMode
from smtpx.envelope import Envelope, HostPort
from smtpx.spool.journal import BodyDamaged, FsyncPolicy, Location
from smtpx.spool.spool import Delivery, Spool, SpoolConfig


def envelope(n: int, size: int) -> Envelope:
    line = b"x" * 70 + b"\r\n"
    head = f"Message-ID: <{n}@bench>\r\nSubject: {n}\r\n\r\n".encode()
    return Envelope.create(
        sender="a@example.com",
        recipients=["b@example.net"],
        message=head + line * max(1, (size - len(head)) // len(line)),
    )


def unchecked(locations: list[Location], *, cached_only: bool = False) -> list[BodyDamaged | None]:
    return [None] * len(locations)


async def relay_once(directory: Path, port: int, count: int, size: int, check: bool) -> float:
    config = SpoolConfig(directory=directory, fsync=FsyncPolicy.BATCH)
    client = ClientConfig(tls=[("", TlsConfig(mode=TlsMode.NONE))])
    async with Spool(config, client_config=client) as spool:
        if not check:
            spool.journal.check_bodies = unchecked  # type: ignore[method-assign]
        hop = (HostPort("127.0.0.1", port),)
        for start in range(0, count, 500):
            batch = [Delivery(envelope(n, size), next_hops=hop) for n in range(start, start + 500)]
            await spool.add(batch[: count - start], frozen=True)
        began = time.perf_counter()
        await spool.send()
        while spool.messages:
            await asyncio.sleep(0.005)
        return count / (time.perf_counter() - began)


def check_cost(directory: Path, count: int, size: int) -> float:
    """Microseconds per message for the check alone (the spool's journal, warm cache)."""

    async def run() -> float:
        async with Spool(SpoolConfig(directory=directory, fsync=FsyncPolicy.NEVER)) as spool:
            ids = await spool.add([Delivery(envelope(n, size)) for n in range(count)], frozen=True)
            locations = [spool.get(i).location for i in ids]
            spool.journal.check_bodies(locations)  # warm
            began = time.perf_counter()
            spool.journal.check_bodies(locations)
            return (time.perf_counter() - began) / count * 1e6

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for round_ in range(args.rounds):
            for check in (True, False):
                port = free_port()
                argv = [tool("smtp-sink"), "-u", "nobody", f"127.0.0.1:{port}", "256"]
                process = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
                try:
                    wait_listening(port)
                    directory = root / f"spool-{round_}-{check}"
                    rate = asyncio.run(relay_once(directory, port, args.messages, args.size, check))
                finally:
                    process.terminate()
                    process.wait(10)
                rates[check].append(rate)
                print(f"round {round_ + 1}: check {'on ' if check else 'off'} {rate:8.0f} msg/s")
        alone = check_cost(root / "alone", min(args.messages, 2000), args.size)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"{args.messages} x {args.size} octets, median of {args.rounds}:")
    print(f"  relay with the check {on:8.0f} msg/s, without {off:8.0f} msg/s")
    print(f"  cost of the check: {(1 - on / off) * 100:+.1f}% of throughput (target < 5%)")
    share = alone / (1e6 / off) * 100
    print(f"  the check alone: {alone:.1f} us per message (read + CRC32), {share:.2f}% of the")
    print(f"  {1e6 / off:.0f} us a relayed message takes (the end-to-end ratio above is noisier)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

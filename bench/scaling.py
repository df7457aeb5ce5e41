"""Scaling of ``smtpx serve`` with ``[server] workers``: 1 .. the machine's cores, one run.

    .venv/bin/python bench/scaling.py [--messages 10000] [--size 4096] [--sessions 20]
                                      [--max-workers N] [--fsync batch|always]
                                      [--loop auto|asyncio|uvloop] [--quick]

For each worker count N from 1 to ``--max-workers`` (default: ``os.cpu_count()``), the
cases of bench/relay.py on ``smtpx serve`` with ``workers = N`` in its config (left out for
1): intake with delivery paused (kept connections, then a new connection per message,
with one message's round trip timed idle and under load) and relay end to end into
smtp-sink. It prints messages/s and the speed-up over one worker for each case, and the
CPU time per message of the MTA's whole process tree.

Run it on machines with more cores too: the load generator (smtp-source, one process)
and the MTA share the machine, so on 2 cores the speed-up is bounded by the cores left
for smtp-source; raise ``--sessions`` with the cores (each worker wants concurrent
sessions to fill it). A build whose ``smtpx serve --check`` refuses the workers key prints
"workers=N: not supported by this build" for those counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from benchlib import Latency, event_loop, tool
from relay import IntakeRun, Load, Relay, Smtpx, note, smtpx_intake, smtpx_relay

CASES = ("intake, kept connections", "intake, new connection per message", "relay end to end")


def rates(intake: IntakeRun, relay: Relay) -> list[tuple[float, float]]:
    """(messages/s, CPU us per message) of each case, in CASES order."""
    return [
        (intake.kept.rate, intake.kept.cpu_us),
        (intake.new.rate, intake.new.cpu_us),
        (relay.rate, relay.cpu_us),
    ]


def latency(intake: IntakeRun) -> str:
    def ms(value: Latency | None) -> str:
        return "-" if value is None else f"{value.p50:.2f} / {value.p99:.2f} ms"

    return f"idle {ms(intake.idle)}, under the kept-connection load {ms(intake.loaded)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fsync", choices=("always", "batch"), default="batch")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--quick", action="store_true", help="1,000 messages")
    args = parser.parse_args()
    tool("smtp-source")
    tool("smtp-sink")
    loop = event_loop(args.loop)
    load = Load(1_000 if args.quick else args.messages, args.size, args.sessions)
    print(
        f"scaling benchmark: smtpx serve, workers 1..{args.max_workers}; smtp-source -s "
        f"{load.sessions} -m {load.messages} -l {load.size}; python "
        f"{platform.python_version()}, {loop}, {os.cpu_count()} CPUs, fsync={args.fsync}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="smtpx-scaling-bench-", dir="/tmp"))
    results: dict[int, list[tuple[float, float]] | str] = {}
    latencies: dict[int, str] = {}
    try:
        mta = Smtpx(work, args.fsync, loop)
        for count in range(1, args.max_workers + 1):
            note(f"workers={count}: intake, delivery paused")
            intake = smtpx_intake(mta, load, count)
            if isinstance(intake, str):
                results[count] = intake
                continue
            latencies[count] = latency(intake)
            note(f"workers={count}: relay into smtp-sink")
            relay = smtpx_relay(mta, load, count)
            results[count] = relay if isinstance(relay, str) else rates(intake, relay)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    print("one message's round trip (MAIL to the 250 after the content), p50 / p99:")
    for count, text in latencies.items():
        print(f"  workers={count}: {text}")
    return 0


def print_table(results: dict[int, list[tuple[float, float]] | str]) -> None:
    base = results.get(1)
    print(f"{'case':<38}{'workers':>8}{'msg/s':>10}{'speed-up':>10}{'CPU/msg':>12}")
    for index, case in enumerate(CASES):
        for count, figures in results.items():
            if isinstance(figures, str):
                continue
            rate, cpu_us = figures[index]
            speedup = (
                "" if isinstance(base, str) or base is None else f"{rate / base[index][0]:.2f}x"
            )
            print(f"{case:<38}{count:>8}{rate:>10,.0f}{speedup:>10}{cpu_us:>9,.0f} us")
    for figures in results.values():
        if isinstance(figures, str):
            print(figures)


if __name__ == "__main__":
    sys.exit(main())

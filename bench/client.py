"""Client throughput against Postfix's smtp-sink: smtpx vs aiosmtplib vs smtplib, one run.

    .venv/bin/python bench/client.py [--messages 10000] [--size 4096] [--uvloop] [--quick]

Each client sends the same 4 KB message to one recipient, over one connection and over ten
connections (the messages split evenly), to an ``smtp-sink`` on 127.0.0.1 that accepts
and discards. smtpx uses PIPELINING (advertised by smtp-sink) and keeps its connections;
"smtpx" calls ``send()`` once per message (two round trips each), "smtpx batch" hands
the messages to ``send_many()``, which pipelines each message's content with the next
envelope (one round trip each), as a relay draining a queue for one destination does.
aiosmtplib and smtplib are used the usual way (``sendmail`` on a kept connection).
Reports messages/s and smtpx's ratio to each peer.

Issue #3 targets: >= 2x aiosmtplib on one connection, >= 1.5x on ten.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import aiosmtplib

from benchlib import free_port, tool, wait_listening
from smtpx.client import ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope

SENDER = "bench@example.com"
RECIPIENT = "sink@example.org"


def message(size: int) -> bytes:
    head = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: benchmark\r\n\r\n".encode()
    line = b"x" * 70 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


@contextmanager
def smtp_sink() -> Iterator[int]:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen([tool("smtp-sink"), *user, f"127.0.0.1:{port}", "256"])
    try:
        wait_listening(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --- the three clients ---------------------------------------------------------------


async def smtpx_connection(port: int, count: int, body: bytes) -> None:
    envelope = Envelope.create(sender=SENDER, recipients=[RECIPIENT], message=body)
    config = ClientConfig(helo_name="bench.example", tls=[("", TlsConfig(mode=TlsMode.NONE))])
    async with connect("127.0.0.1", port, config=config) as client:
        for _ in range(count):
            status = await client.send(envelope)
            if not status.ok:
                raise RuntimeError(str(status))


async def smtpx_batch_connection(port: int, count: int, body: bytes) -> None:
    envelope = Envelope.create(sender=SENDER, recipients=[RECIPIENT], message=body)
    config = ClientConfig(helo_name="bench.example", tls=[("", TlsConfig(mode=TlsMode.NONE))])
    async with connect("127.0.0.1", port, config=config) as client:
        async for status in client.send_many(envelope for _ in range(count)):
            if not status.ok:
                raise RuntimeError(str(status))


async def aiosmtplib_connection(port: int, count: int, body: bytes) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, use_tls=False)
    await client.connect()
    try:
        for _ in range(count):
            await client.sendmail(SENDER, [RECIPIENT], body)
    finally:
        await client.quit()


def smtplib_connection(port: int, count: int, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        for _ in range(count):
            client.sendmail(SENDER, [RECIPIENT], body)


OneConnection = Callable[[int, int, bytes], Awaitable[None]]


def run_async(one: OneConnection, port: int, total: int, conns: int, body: bytes) -> float:
    async def all_of_them() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(one(port, n, body) for n in split(total, conns)))
        return total / (time.perf_counter() - start)

    return asyncio.run(all_of_them())


def run_threads(port: int, total: int, conns: int, body: bytes) -> float:
    threads = [
        threading.Thread(target=smtplib_connection, args=(port, n, body))
        for n in split(total, conns)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--uvloop", action="store_true", help="run both async clients on uvloop")
    parser.add_argument("--quick", action="store_true", help="1,000 messages (a smoke run)")
    args = parser.parse_args()
    total = 1_000 if args.quick else args.messages
    body = message(args.size)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(
        f"client benchmark: {total} messages of {len(body)} octets to smtp-sink, "
        f"python {platform.python_version()}, {loop_name}, {os.cpu_count()} CPUs"
    )
    results: dict[tuple[str, int], float] = {}
    with smtp_sink() as port:
        for conns in (1, 10):
            results[("smtpx", conns)] = run_async(smtpx_connection, port, total, conns, body)
            results[("smtpx batch", conns)] = run_async(
                smtpx_batch_connection, port, total, conns, body
            )
            results[("aiosmtplib", conns)] = run_async(
                aiosmtplib_connection, port, total, conns, body
            )
            results[("smtplib", conns)] = run_threads(port, total, conns, body)
    print(f"{'client':<12}{'1 connection':>16}{'10 connections':>18}")
    names = ("smtpx", "smtpx batch", "aiosmtplib", "smtplib")
    for name in names:
        print(f"{name:<12}{results[(name, 1)]:>12,.0f} m/s{results[(name, 10)]:>14,.0f} m/s")
    for ours in ("smtpx", "smtpx batch"):
        for peer in ("aiosmtplib", "smtplib"):
            one = results[(ours, 1)] / results[(peer, 1)]
            ten = results[(ours, 10)] / results[(peer, 10)]
            print(f"{ours + ' / ' + peer:<26} {one:>6.2f}x {ten:>16.2f}x")
    for ours in ("smtpx", "smtpx batch"):
        one = results[(ours, 1)] / results[("aiosmtplib", 1)]
        ten = results[(ours, 10)] / results[("aiosmtplib", 10)]
        verdict = "met" if one >= 2 and ten >= 1.5 else "NOT MET"
        print(f"{ours}: targets (>= 2x and >= 1.5x aiosmtplib) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

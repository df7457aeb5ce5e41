"""DATA against BDAT (RFC 3030 CHUNKING) from the smtpx client, one run.

    .venv/bin/python bench/chunking.py [--rounds 3] [--small 2000] [--large 10]
                                       [--no-postfix] [--quick]

The client sends the same messages twice, with ``ClientConfig(chunking=False)`` (DATA)
and ``chunking=True`` (BDAT), taking turns round by round, into two servers that offer
CHUNKING and PIPELINING:

* smtpx's own server (``smtpx.server.Server`` with a plugin that discards, in a child
  process: ``bench/server.py --serve smtpx``);
* a private Postfix ``smtpd`` (``postfix -c DIR``, as bench/relay.py sets it up, root
  only) whose ``smtpd_end_of_data_restrictions`` DISCARD every message. Postfix's
  ``smtp-sink`` would be the lighter peer, but up to Postfix 3.7 at least it does not
  offer CHUNKING.

Messages: 4 KB (``--small`` of them, with ``send()`` one by one and with ``send_many()``;
and a twentieth of them with ``send()`` through a proxy that adds a 20 ms round trip, as
between two sites: the client's CPU time there includes the proxy's)
and 10 MB (``--large`` of them, ``send()``), each as ``bytes`` and as a wire-ready file
(the spool's form: a ``WireFile``, sent with sendfile under DATA, unstuffed into runs
under BDAT), plus a 10 MB wire file in which every line starts with a dot (the worst case
for unstuffing). Reported: messages/s, the client's CPU time per message (this process)
and the server's (the child; Postfix: the master and its children), the median of
``--rounds``, and BDAT's ratio to DATA. ``ClientConfig.chunking``'s default ("auto" with
its threshold) comes from these figures; docs/operators-guide.md has a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchlib import free_port
from relay import Postfix
from server import child
from smtpx.client import ClientConfig, TlsConfig, TlsMode, WireFile, connect
from smtpx.envelope import EnvelopeInfo
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.data import dot_stuff
from smtpx.testing.postfix import PostfixUnavailable

SENDER = "bench@bench.local"
RECIPIENT = "sink@example.net"


def message(size: int, *, dotted: bool = False) -> bytes:
    head = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: benchmark\r\n\r\n".encode()
    line = (b"." if dotted else b"x") + b"x" * 69 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes | WireFile
    count: int
    batch: bool  # send_many rather than one send() per message
    rtt: float = 0.0  # a round trip added by a delaying proxy, in seconds


async def delayed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, quickack: Any
) -> None:
    """Copy ``reader`` to ``writer``, each piece ``delay`` seconds late, in order.
    ``quickack``: the reading socket acknowledges at once, as the smtpx client's does
    (else a server with Nagle on waits up to 40 ms for the proxy's delayed ACK)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    task = loop.create_task(forward())
    while data := await reader.read(65536):
        if quickack is not None:
            quickack.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        queue.put_nowait((loop.time() + delay, data))
    queue.put_nowait((loop.time() + delay, b""))
    await task


@contextlib.asynccontextmanager
async def latency(port: int, rtt: float) -> AsyncIterator[int]:
    """A proxy on 127.0.0.1 to ``port`` that adds ``rtt`` seconds to every round trip
    (half each way), as a wide-area path would; yields its port."""

    relays: set[asyncio.Task[Any]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relays.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        upstream = up_writer.get_extra_info("socket")
        await asyncio.gather(
            delayed(reader, up_writer, rtt / 2, None), delayed(up_reader, writer, rtt / 2, upstream)
        )

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        await asyncio.wait(relays, timeout=10)  # both ends have closed after QUIT


@dataclass
class Figures:
    rate: float  # messages/s
    client_us: float  # client CPU per message
    server_us: float  # server CPU per message


async def send(port: int, case: Case, chunking: bool) -> None:
    if case.rtt:
        async with latency(port, case.rtt) as proxy:
            await send(proxy, replace(case, rtt=0.0), chunking)
        return
    config = ClientConfig(
        helo_name="bench.local",
        tls=[("", TlsConfig(mode=TlsMode.NONE))],
        chunking=chunking,
    )
    info = EnvelopeInfo(
        sender=Sender(Address.parse(SENDER)), recipients=(Address.parse(RECIPIENT),)
    )
    async with connect("127.0.0.1", port, config=config) as client:
        if not client.extensions.chunking:
            raise RuntimeError("the server does not offer CHUNKING")
        if case.batch:
            async for status in client.send_many((info, case.body) for _ in range(case.count)):
                if not status.ok:
                    raise RuntimeError(str(status))
            return
        for _ in range(case.count):
            status = await client.send_envelope(info, case.body)
            if not status.ok:
                raise RuntimeError(str(status))


def measure(port: int, case: Case, chunking: bool, server_cpu: Callable[[], float]) -> Figures:
    cpu0, server0, start = time.process_time(), server_cpu(), time.perf_counter()
    asyncio.run(send(port, case, chunking))
    wall = time.perf_counter() - start
    cpu, server = time.process_time() - cpu0, server_cpu() - server0
    return Figures(case.count / wall, cpu / case.count * 1e6, server / case.count * 1e6)


def median(runs: list[Figures]) -> Figures:
    return Figures(
        statistics.median(r.rate for r in runs),
        statistics.median(r.client_us for r in runs),
        statistics.median(r.server_us for r in runs),
    )


def cases(workdir: Path, small: int, large: int) -> list[Case]:
    def wire(name: str, body: bytes) -> WireFile:
        path = workdir / name
        path.write_bytes(dot_stuff(body)[:-3])
        return WireFile(path)

    four_kb, ten_mb = message(4096), message(10 * 1024 * 1024)
    dotted = message(10 * 1024 * 1024, dotted=True)
    return [
        Case("4 KB bytes, send(), 20 ms RTT", four_kb, max(1, small // 20), False, rtt=0.02),
        Case("4 KB bytes, send()", four_kb, small, False),
        Case("4 KB bytes, send_many()", four_kb, small, True),
        Case("4 KB wire file, send_many()", wire("small", four_kb), small, True),
        Case("10 MB bytes, send()", ten_mb, large, False),
        Case("10 MB wire file, send()", wire("large", ten_mb), large, False),
        Case("10 MB wire file, all lines dotted", wire("dotted", dotted), large, False),
    ]


def run_server(
    label: str, port: int, server_cpu: Callable[[], float], todo: list[Case], rounds: int
) -> None:
    print(f"\n{label}")
    print(
        f"{'case':<36}{'DATA m/s':>10}{'BDAT m/s':>10}{'ratio':>7}{'client us DATA/BDAT':>22}"
        f"{'server us DATA/BDAT':>22}"
    )
    for case in todo:
        runs: dict[bool, list[Figures]] = {False: [], True: []}
        for _ in range(rounds):
            for chunking in (False, True):
                runs[chunking].append(measure(port, case, chunking, server_cpu))
        data, bdat = median(runs[False]), median(runs[True])
        print(
            f"{case.name:<36}{data.rate:>10,.1f}{bdat.rate:>10,.1f}{bdat.rate / data.rate:>6.2f}x"
            f"{data.client_us:>12,.0f} /{bdat.client_us:>8,.0f}"
            f"{data.server_us:>12,.0f} /{bdat.server_us:>8,.0f}",
            flush=True,
        )


@contextlib.contextmanager
def postfix(root: Path) -> Iterator[tuple[int, Callable[[], float]]]:
    instance = Postfix(root, free_port())
    instance.configure(
        queue="queue",
        relay_port=0,
        paused=True,
        settings={
            "smtpd_end_of_data_restrictions": "check_client_access static:DISCARD",
            "message_size_limit": str(64 * 1024 * 1024),
            # Nothing reaches the queue manager, so it hands out no in-flow tokens: without
            # this, cleanup waits a second for one per message.
            "in_flow_delay": "0",
        },
    )
    instance.start()
    try:
        yield instance.port, instance.cpu_seconds
    finally:
        instance.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=2000, help="4 KB messages per run")
    parser.add_argument("--large", type=int, default=10, help="10 MB messages per run")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--only", default="", help="run the cases whose name holds this")
    parser.add_argument("--quick", action="store_true", help="1 round, 300 and 3 messages")
    args = parser.parse_args()
    rounds, small, large = args.rounds, args.small, args.large
    if args.quick:
        rounds, small, large = 1, 300, 3
    print(
        f"chunking benchmark: DATA vs BDAT, python {platform.python_version()}, asyncio, "
        f"{os.cpu_count()} CPUs, median of {rounds} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="smtpx-chunking-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)  # Postfix's unprivileged daemons work under it
        todo = [c for c in cases(workdir, small, large) if args.only in c.name]
        with child("smtpx", False, 1024) as server:
            run_server("into smtpx.server", server.port, server.cpu_seconds, todo, rounds)
        if args.no_postfix:
            return 0
        try:
            with postfix(workdir / "postfix") as (port, cpu):
                run_server("into a private Postfix smtpd (DISCARD)", port, cpu, todo, rounds)
        except PostfixUnavailable as exc:
            print(f"postfix unavailable: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

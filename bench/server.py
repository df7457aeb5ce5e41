"""Server throughput and idle-session memory: smtpx.server vs aiosmtpd, one run.

    .venv/bin/python bench/server.py [--messages 10000] [--size 4096] [--sessions 20]
                                     [--idle 1000] [--rounds 3] [--uvloop] [--quick]
                                     [--probe 200] [--workers 1,2]

Throughput: Postfix's ``smtp-source`` (``-s 20 -m 10000 -l 4096``, the same sender,
recipient and flags for both) against (a) an ``smtpx.server.Server`` whose plugin accepts
and discards (``process`` returns "Ok") and (b) aiosmtpd (a ``Controller`` whose handler's
``handle_DATA`` returns "250 OK"). It runs twice per server: with connections kept
(``-d``, each session sends its share of messages over one connection) and with a new
connection per message (smtp-source's default), ``--rounds`` times, alternating the two
servers; the table shows the median run of each case. Each server runs in its own child process
(``bench/server.py --serve smtpx|aiosmtpd --port N``), so the load generator and the
server share the machine but not an event loop. Both servers answer with the same host
name, take up to 35 MiB messages, cap nothing else and have 300 s timeouts. The wall time
of smtp-source gives messages/s; the child's user+system CPU time (from /proc) gives its
CPU cost per message; the child's own count confirms every message arrived.

Latency: one more client (bench/benchlib.py's ``LatencyProbe``) sends single messages one
after another over one connection, lock-step as smtp-source, and times each round trip
from MAIL to the 250 after the content: ``--probe`` of them on the idle server before the
load, and then, 20 ms apart, all through each kept-connection run (their messages are
counted on top of smtp-source's). The table gives p50 / p99 of each.

Workers: ``--workers 1,2`` runs smtpx once per count; above 1 ("smtpx w2") the sink is
that many processes, each a ``Server`` listening on the same port with ``reuse_port``
(``SO_REUSEPORT``: the kernel spreads the connections over them, as it does for ``smtpx
serve``'s ``[server] workers``, which bench/relay.py and bench/scaling.py measure).
Their messages and CPU time are added up. aiosmtpd's ``Controller`` runs one event loop
in one process (it has no workers), so it runs once, and each smtpx count is compared
with it.

Memory: a fresh child of each server is warmed up with a few short sessions, then the
parent opens ``--idle`` TCP connections (reads the greeting, sends EHLO, reads the reply)
and holds them. The child's VmRSS (``/proc/<pid>/status``) before and after gives KB per
idle session (target for smtpx: <= 30 KB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from benchlib import (
    Latency,
    LatencyProbe,
    free_port,
    parse_workers,
    read_reply,
    rss_kb,
    smtpx_build,
    tool,
)

SENDER = "bench@example.com"
RECIPIENT = "sink@example.org"
HOSTNAME = "bench.local"
MAX_MESSAGE = 35 * 1024 * 1024
TIMEOUT = 300.0
SERVERS = ("smtpx", "aiosmtpd")


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# --- child mode: one server ------------------------------------------------------------------


def serve_smtpx(port: int, use_uvloop: bool, reuse_port: bool = False) -> None:
    from smtpx.envelope import Envelope
    from smtpx.server import Listener, Plugin, Server, ServerConfig, Session, Transaction

    class Discard(Plugin):
        hostname = HOSTNAME

        async def process(
            self, session: Session, transaction: Transaction, envelope: Envelope
        ) -> str:
            return "Ok"

    config = ServerConfig(
        listeners=[Listener(host="127.0.0.1", port=port, max_sessions=None)],
        hostname=HOSTNAME,
        max_message_size=MAX_MESSAGE,
        command_timeout=TIMEOUT,
        data_timeout=TIMEOUT,
        reuse_port=reuse_port,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with Server(Discard(), config) as server:
            print(f"port {server.ports[0]}", flush=True)
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                print(f"messages {server.stats['messages']}", flush=True)
            await server.close(timeout=0)

    if use_uvloop:
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())


def serve_aiosmtpd(port: int, use_uvloop: bool) -> None:
    from aiosmtpd.controller import Controller

    class Discard:
        def __init__(self) -> None:
            self.messages = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.messages += 1
            return "250 OK"

    handler = Discard()
    loop: asyncio.AbstractEventLoop
    if use_uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    controller = Controller(
        handler,
        loop=loop,
        hostname="127.0.0.1",
        port=port,
        server_hostname=HOSTNAME,
        data_size_limit=MAX_MESSAGE,
        timeout=TIMEOUT,
    )
    controller.start()
    try:
        print(f"port {port}", flush=True)
        for _ in sys.stdin:
            print(f"messages {handler.messages}", flush=True)
    finally:
        controller.stop()


# --- parent: driving the children -------------------------------------------------------------


@dataclass
class Child:
    """A server in child processes (several: workers accepting on one port with
    SO_REUSEPORT), each with a line protocol on its stdin/stdout."""

    name: str
    processes: list[subprocess.Popen[str]]
    port: int

    def messages(self) -> int:
        """The messages the processes received, added up."""
        total = 0
        for process in self.processes:
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write("stats\n")
            process.stdin.flush()
            total += int(process.stdout.readline().split()[1])
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time of the processes (all their threads)."""
        ticks = 0
        for process in self.processes:
            with open(f"/proc/{process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            # Fields 14 and 15 (utime, stime), counted from 1 with the pid and name cut off.
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> int:
        return sum(rss_kb(process.pid) for process in self.processes)


@contextlib.contextmanager
def child(name: str, use_uvloop: bool, files: int, workers: int = 1) -> Iterator[Child]:
    """``name``'s server in ``workers`` processes (each an smtpx ``Server`` with
    ``reuse_port``: the kernel spreads connections over them, as with ``smtpx serve``'s
    ``[server] workers``); aiosmtpd's Controller is one process, so 1 only."""
    if workers > 1 and name != "smtpx":
        raise ValueError(f"{name} runs in one process")
    port = 0 if name == "smtpx" and workers == 1 else free_port()
    argv = [sys.executable, os.path.abspath(__file__), "--serve", name]
    argv += ["--port", str(port), "--files", str(files)]
    if use_uvloop:
        argv.append("--uvloop")
    if workers > 1:
        argv.append("--reuse-port")
    processes: list[subprocess.Popen[str]] = []
    try:
        for _ in range(workers):
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            processes.append(process)
            assert process.stdout is not None
            ready = process.stdout.readline().split()  # once it listens
            if len(ready) != 2 or ready[0] != "port":
                raise RuntimeError(f"{name} server did not start (said {ready!r})")
        yield Child(name, processes, int(ready[1]))
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Throughput:
    rate: float  # messages/s
    cpu_us: float  # server CPU microseconds per message


def smtp_source(
    source: str,
    server: Child,
    *,
    messages: int,
    size: int,
    sessions: int,
    reuse: bool,
    probe: LatencyProbe | None = None,
) -> Throughput:
    argv = [source, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    argv += ["-f", SENDER, "-t", RECIPIENT]
    if reuse:
        argv.append("-d")
    argv.append(f"127.0.0.1:{server.port}")
    before, cpu_before = server.messages(), server.cpu_seconds()
    if probe is not None:
        probe.start()
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - start
    probed = 0
    if probe is not None:
        probe.stop()
        probed = probe.sent
    cpu = server.cpu_seconds() - cpu_before
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source against {server.name} failed: {result.stderr.strip()}")
    got = server.messages() - before
    if got != messages + probed:
        raise RuntimeError(f"{server.name} received {got} of {messages + probed} messages")
    return Throughput(messages / elapsed, cpu / (messages + probed) * 1e6)


def median(results: list[Throughput]) -> Throughput:
    ordered = sorted(results, key=lambda r: r.rate)
    return ordered[len(ordered) // 2]


def open_idle(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        if not read_reply(sock).startswith(b"220"):
            raise RuntimeError("no greeting")
        sock.sendall(b"EHLO idle.example\r\n")
        if not read_reply(sock).startswith(b"250"):
            raise RuntimeError("EHLO refused")
    except BaseException:
        sock.close()
        raise
    return sock


def idle_memory(server: Child, count: int) -> float:
    """KB of server RSS per idle session (greeted, EHLO answered, held open)."""
    for _ in range(20):  # warm up: first-use allocations are not per-session costs
        with open_idle(server.port) as sock:
            sock.sendall(b"QUIT\r\n")
            read_reply(sock)
    server.messages()  # a round trip through the child: it has settled
    before = server.rss_kb()
    socks = [open_idle(server.port) for _ in range(count)]
    try:
        server.messages()
        after = server.rss_kb()
    finally:
        for sock in socks:
            sock.close()
    return (after - before) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--idle", type=int, default=1000, help="idle sessions to hold")
    parser.add_argument("--rounds", type=int, default=3, help="runs per case (the median)")
    parser.add_argument("--uvloop", action="store_true", help="run both servers on uvloop")
    parser.add_argument("--quick", action="store_true", help="1,000 messages, 200 idle, 1 round")
    parser.add_argument("--probe", type=int, default=200, help="latency probes on the idle server")
    parser.add_argument(
        "--workers", default="1", help="smtpx worker process counts to run, e.g. 1,2"
    )
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        raise_open_files(args.files)
        if args.serve == "smtpx":
            serve_smtpx(args.port, args.uvloop, args.reuse_port)
        else:
            serve_aiosmtpd(args.port, args.uvloop)
        return 0

    source = tool("smtp-source")
    workers = parse_workers(args.workers)
    total = 1_000 if args.quick else args.messages
    idle = 200 if args.quick else args.idle
    rounds = 1 if args.quick else args.rounds
    files = idle + args.sessions + 256
    if raise_open_files(files) < files:
        sys.exit(f"cannot raise the open-file limit to {files} (ulimit -Hn)")
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(
        f"server benchmark: smtp-source -s {args.sessions} -m {total} -l {args.size} "
        f"(median of {rounds}), python {platform.python_version()}, {loop_name}, "
        f"{os.cpu_count()} CPUs, smtpx {smtpx_build()}"
    )
    modes = (("kept (-d)", True), ("new per message", False))
    # smtpx once per worker count ("smtpx w2": two processes on one port), then aiosmtpd.
    lineup = [(_label(count), "smtpx", count) for count in workers] + [("aiosmtpd", "aiosmtpd", 1)]
    labels = [label for label, _, _ in lineup]
    runs: dict[tuple[str, str], list[Throughput]] = {}
    idle_latency: dict[str, Latency | None] = {}
    loaded: dict[str, list[float]] = {label: [] for label in labels}
    with contextlib.ExitStack() as stack:
        servers = {
            label: stack.enter_context(child(name, args.uvloop, files, count))
            for label, name, count in lineup
        }
        for label, server in servers.items():
            idle_latency[label] = LatencyProbe(server.port, SENDER, RECIPIENT).run(args.probe)
        # Rounds alternate the servers, so a slow spell of the machine hits each alike.
        for _ in range(rounds):
            for mode, reuse in modes:
                for label, server in servers.items():
                    probe = LatencyProbe(server.port, SENDER, RECIPIENT) if reuse else None
                    result = smtp_source(
                        source,
                        server,
                        messages=total,
                        size=args.size,
                        sessions=args.sessions,
                        reuse=reuse,
                        probe=probe,
                    )
                    runs.setdefault((label, mode), []).append(result)
                    if probe is not None:
                        loaded[label].extend(probe.seconds)
    rates = {key: median(results) for key, results in runs.items()}
    memory: dict[str, float] = {}
    for name in SERVERS:
        with child(name, args.uvloop, files) as server:
            memory[name] = idle_memory(server, idle)

    print(f"{'server':<10}{'connections':<18}{'msg/s':>10}{'server CPU/msg':>17}")
    for label in labels:
        for mode, _ in modes:
            result = rates[(label, mode)]
            print(f"{label:<10}{mode:<18}{result.rate:>10,.0f}{result.cpu_us:>14,.0f} us")
    for label in labels[:-1]:
        for mode, _ in modes:
            ratio = rates[(label, mode)].rate / rates[("aiosmtpd", mode)].rate
            print(f"{label + ' / aiosmtpd, ' + mode:<40}{ratio:>6.2f}x")
    print("one message's round trip (MAIL to the 250 after the content), p50 / p99:")
    for label in labels:
        busy = Latency.of(loaded[label])
        print(
            f"{label:<10}idle {_cell(idle_latency[label]):>20}   "
            f"under the kept-connection load {_cell(busy):>20} ({busy.count if busy else 0})"
        )
    print(f"idle sessions ({idle}, greeted + EHLO), server RSS per session:")
    for name in SERVERS:
        print(f"{name:<10}{memory[name]:>8.1f} KB")
    verdict = "met" if memory["smtpx"] <= 30 else "NOT MET"
    print(f"smtpx: target (<= 30 KB per idle session) {verdict}")
    return 0


def _label(workers: int) -> str:
    return "smtpx" if workers == 1 else f"smtpx w{workers}"


def _cell(latency: Latency | None) -> str:
    return "-" if latency is None else str(latency)


if __name__ == "__main__":
    sys.exit(main())

"""Relay MTA benchmark: ``smtpx serve`` against Postfix as the same relay, one run.

    .venv/bin/python bench/relay.py [--messages 10000] [--size 4096] [--sessions 20]
                                    [--queued 100000] [--fsync batch|always]
                                    [--loop auto|asyncio|uvloop] [--quick] [--keep]
                                    [--no-postfix] [--workers 1,2]

Both MTAs relay everything from 127.0.0.0/8 to one next hop on 127.0.0.1 and make mail
durable before their 250 (smtpx: ``[spool] fsync``, default "batch": concurrent messages
share one fdatasync of the journal; Postfix: a file per message, fsynced by cleanup). Each
runs as its own processes: ``smtpx serve --config FILE --loop L`` in a child (``--loop``
as smtpx serve's default: uvloop when installed, else asyncio), and a private
Postfix instance (``postfix -c DIR``) with its own main.cf, master.cf, queue and data
directories under a temporary directory (chroot off, logging to a file there; each case
on a fresh queue directory). Both log every message (smtpx at its default level, info).
The two MTAs take turns case by case (smtpx, then Postfix), so a busy spell of a shared
machine hits both. Cases:

1. Intake with delivery paused: ``smtp-source -s 20 -m 10000 -l 4096 -d`` (each session
   keeps its connection), then the same without ``-d`` (a new connection per message);
   messages/s is smtp-source's wall time. Delivery is paused for both: smtpx routes to a
   port where nothing listens with retry intervals of 1h (the first messages' attempt
   fails and suspends the destination for the first interval, so the rest are queued
   already deferred, each with its own record and mail-log line: see
   smtpx.spool.unreachable), Postfix has ``defer_transports = smtp`` (its queue manager
   defers each message: a move to the deferred queue, a log line). One message's round trip (MAIL
   to the 250 after the content, bench/benchlib.py's ``LatencyProbe``) is timed 200 times
   on the idle MTA and all through the kept-connection run: p50 / p99. Every message, the
   probe's too, is counted in the queue afterwards (smtpx: ``Spool.count_from_disk``;
   Postfix: files in its queue).
2. End-to-end relay into ``smtp-sink -M 10000`` (which exits after the 10,000th message):
   the same load; messages/s from the start of smtp-source until smtp-sink exits.
3. 100,000 queued messages of the same size:
   - smtpx, in-process (``smtpx.spool.spool.Spool`` with the same fsync policy, in child
     processes so RSS is clean): ``add`` of frozen messages, 1,000 concurrent one-message
     calls at a time (group commit, as concurrent sessions), then VmRSS growth per message;
     then a fresh ``Spool(...).start()`` on that directory: its wall time and the RSS it
     holds afterwards, per message.
   - Both MTAs whole: the time from starting the MTA on a spool/queue of 100,000 to the
     first 220 greeting on its port, and the RSS (all its processes) 1 s later, against the
     same MTA started on an empty queue. Postfix's 100,000 arrive through smtp-source with
     delivery paused (case 1's 10,000 are the first of them) and are all deferred before
     it is stopped; its start runs postsuper's queue check. smtpx serve starts on the
     spool the in-process run filled.

Alongside: the MTA's CPU time per message (smtpx serve's process with its threads;
Postfix's master, the children it reaped and the live ones; not smtp-source or smtp-sink),
the disk's fsync latency measured at the start, and the load average (this machine may be
shared: other work slows both MTAs and the ratios move from run to run). With
``--rounds`` over 1, each intake case also shows its slowest and fastest round, for
either MTA: the ratio is of the medians, and the spread says how far to trust it (on a
two-core VM, Postfix's rate with a new connection per message has moved by 20-40%
between the rounds of one run: 1,019-1,217 and 892-1,266 msg/s).

``--workers 1,2`` runs smtpx's cases 1 and 2 for each count, ``[server] workers = N`` in
the config (left out for 1, the default); Postfix runs once. A build whose ``smtpx serve
--check`` refuses the key prints "workers=N: not supported by this build" instead.
smtpx's CPU time is that of its whole process tree.

Issue 15 targets: intake >= 2.5x Postfix's messages/s (both shapes), relay >= 2x. Issue
#5's: <= 2 KB resident
memory per queued message (checked after adding and after a restart), restart with 100,000
queued <= 10 s (checked for Spool.start and for smtpx serve's first 220). When Postfix
cannot be set up (not root, no postfix user, a failing command), the smtpx half still runs
and a "postfix unavailable" line says why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from benchlib import (
    Latency,
    LatencyProbe,
    event_loop,
    free_port,
    parse_workers,
    read_reply,
    rss_kb,
    smtpx_build,
    tool,
    wait_listening,
)
from smtpx.testing.postfix import PostfixUnavailable, PrivatePostfix

SENDER = "bench@bench.local"
RECIPIENT = "sink@example.net"
HOSTNAME = "bench.local"
TIMEOUT = 600.0  # for any one step
SEP = "-" * 104
STARTED = time.monotonic()


def note(text: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {text}", file=sys.stderr, flush=True)


def message(size: int) -> bytes:
    """A message of about ``size`` octets (headers and 72-octet lines), CRLF endings."""
    head = (
        f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: benchmark\r\n"
        f"Message-ID: <bench@{HOSTNAME}>\r\n\r\n"
    ).encode()
    line = b"x" * 70 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


# --- machine measurements -------------------------------------------------------------------


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU time of a process (all its threads); with ``reaped``, also that of
    the children it has waited for."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:  # gone
        return 0.0
    # Fields 14-17 (utime, stime, cutime, cstime), counted from 1, name and pid cut off.
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


CpuMeter = Callable[[], float]  # CPU seconds used so far by all of one MTA's processes


def fsync_latency(directory: Path, rounds: int = 200) -> tuple[float, float]:
    """p50 in ms of (a) a 4 KiB append + fdatasync to one file (a journal, smtpx) and
    (b) creating a 4 KiB file + fsync + close (a file per message, Postfix)."""
    block = b"x" * 4096
    appends, creates = [], []
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            appends.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    path.unlink()
    for i in range(rounds):
        name = directory / f"fsync-probe-{i}"
        start = time.perf_counter()
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, block)
        os.fsync(fd)
        os.close(fd)
        creates.append(time.perf_counter() - start)
    for i in range(rounds):
        (directory / f"fsync-probe-{i}").unlink()
    return statistics.median(appends) * 1e3, statistics.median(creates) * 1e3


# --- SMTP helpers ----------------------------------------------------------------------------


def wait_for_greeting(
    port: int, timeout: float = TIMEOUT, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll until a connection to ``port`` gets a 220 greeting (then QUIT)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                greeting = read_reply(sock)
                if not greeting.startswith(b"220"):
                    raise RuntimeError(f"port {port} greeted with {greeting!r}")
                sock.sendall(b"QUIT\r\n")
                with contextlib.suppress(OSError):
                    read_reply(sock)
                return
        except (ConnectionRefusedError, ConnectionResetError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered on port {port} in {timeout:.0f} s") from None
            time.sleep(0.005)


def wait_healthy(control: Path, process: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> None:
    """Poll ``GET /healthz`` on the control socket until it answers 200. With workers the
    supervisor answers so only once every worker does: the first worker to listen gets
    every connection made before the others listen (SO_REUSEPORT picks among listening
    sockets), so a run started at the first greeting measured one worker."""
    deadline = time.monotonic() + timeout
    status = b""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(control))
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: smtpx\r\n\r\n")
            status = sock.recv(64).split(b"\r\n", 1)[0]
            if status.split()[1:2] == [b"200"]:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{control}: /healthz did not answer 200 in {timeout:.0f} s ({status!r})")


@dataclass(frozen=True)
class Load:
    messages: int
    size: int
    sessions: int
    # smtp-source processes that share the messages and the sessions. One is one core:
    # past some thousands of new connections a second it is the limit, not the MTA
    # (Intake.load_busy tells).
    sources: int = 1

    def argv(self, port: int, messages: int | None = None, *, reuse: bool = True) -> list[str]:
        """smtp-source's command: ``reuse``, each session keeps its connection (``-d``);
        else a new connection per message."""
        return self._argv(port, messages or self.messages, self.sessions, reuse=reuse)

    def argvs(
        self, port: int, messages: int | None = None, *, reuse: bool = True
    ) -> list[list[str]]:
        """The commands of the :attr:`sources` processes: the messages and the sessions
        shared out (the first takes what does not divide)."""
        total = messages or self.messages
        count = max(1, min(self.sources, total, self.sessions))
        return [
            self._argv(
                port,
                total // count + (total % count if index == 0 else 0),
                self.sessions // count + (self.sessions % count if index == 0 else 0),
                reuse=reuse,
            )
            for index in range(count)
        ]

    def _argv(self, port: int, messages: int, sessions: int, *, reuse: bool) -> list[str]:
        argv = [tool("smtp-source"), "-s", str(sessions), "-m", str(messages)]
        argv += ["-l", str(self.size), *(["-d"] if reuse else [])]
        argv += ["-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"]
        return argv


def smtp_source(load: Load, port: int, messages: int | None = None, *, reuse: bool = True) -> float:
    """Run the load's smtp-source processes at once, to their end; the CPU seconds they
    used (all of them)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    processes = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for argv in load.argvs(port, messages, reuse=reuse)
    ]
    failures = []
    for process in processes:
        try:
            _, errors = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
        if process.returncode != 0:
            failures.append(f"({process.returncode}): {errors.strip()}")
    if failures:
        raise RuntimeError(f"smtp-source failed {'; '.join(failures)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


@contextlib.contextmanager
def smtp_sink(port: int, count: int) -> Iterator[subprocess.Popen[bytes]]:
    """smtp-sink on ``port`` that exits after ``count`` messages."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    argv = [tool("smtp-sink"), *user, "-M", str(count), f"127.0.0.1:{port}", "256"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(10)


@dataclass(frozen=True)
class Intake:
    rate: float  # messages/s (smtp-source wall time)
    cpu_us: float  # the MTA's CPU time per message (all its processes and threads)
    # How busy the smtp-source processes were: their CPU over the wall time, per process
    # (1.0: each used a whole core, and the figure is the load generator's limit).
    load_busy: float = 0.0


@dataclass(frozen=True)
class Relay:
    rate: float  # messages/s, until smtp-sink has all of them
    intake: float  # messages/s, smtp-source's own wall time
    cpu_us: float
    load_busy: float = 0.0  # as Intake's, over smtp-source's own wall time


def timed_intake(
    load: Load, port: int, cpu: CpuMeter, *, reuse: bool = True, probe: LatencyProbe | None = None
) -> Intake:
    """One smtp-source run; with ``probe``, the probe sends its messages all through it
    (they count in the CPU per message, not in the rate)."""
    cpu_before = cpu()
    if probe is not None:
        probe.start()
    start = time.perf_counter()
    source_cpu = 0.0
    try:
        source_cpu = smtp_source(load, port, reuse=reuse)
    finally:
        elapsed = time.perf_counter() - start
        probed = 0
        if probe is not None:
            probe.stop()
            probed = probe.sent
    return Intake(
        load.messages / elapsed,
        (cpu() - cpu_before) / (load.messages + probed) * 1e6,
        source_cpu / elapsed / len(load.argvs(port, reuse=reuse)),
    )


PROBES = 200  # round trips timed on the idle MTA


@dataclass(frozen=True)
class IntakeRun:
    """Intake with delivery paused, both shapes, and one message's round trip."""

    kept: Intake  # smtp-source -d: each session keeps its connection
    new: Intake  # a new connection per message
    idle: Latency | None  # round trip on the idle MTA
    loaded: Latency | None  # round trip during the kept-connection run
    total: int  # messages the MTA must now hold (smtp-source's and the probe's)


def intake_cases(load: Load, port: int, cpu: CpuMeter) -> IntakeRun:
    idle_probe = LatencyProbe(port, SENDER, RECIPIENT, load.size)
    idle = idle_probe.run(PROBES)
    probe = LatencyProbe(port, SENDER, RECIPIENT, load.size)
    kept = timed_intake(load, port, cpu, probe=probe)
    new = timed_intake(load, port, cpu, reuse=False)
    total = 2 * load.messages + idle_probe.sent + probe.sent
    return IntakeRun(kept, new, idle, Latency.of(probe.seconds), total)


def timed_relay(load: Load, port: int, sink: subprocess.Popen[bytes], cpu: CpuMeter) -> Relay:
    cpu_before = cpu()
    start = time.perf_counter()
    source_cpu = smtp_source(load, port)
    accepted = time.perf_counter() - start
    patience = 30 + load.messages / 100  # far below any relay worth measuring
    try:
        sink.wait(patience)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"smtp-sink did not get {load.messages} messages in {patience:.0f} s "
            "(run with --keep and read the MTA's log)"
        ) from None
    elapsed = time.perf_counter() - start
    return Relay(
        load.messages / elapsed,
        load.messages / accepted,
        (cpu() - cpu_before) / load.messages * 1e6,
        source_cpu / accepted / len(load.argvs(port)),
    )


# --- smtpx ------------------------------------------------------------------------------------


@dataclass
class Smtpx:
    """``smtpx serve`` in a child process, on a config file written for the case."""

    workdir: Path
    fsync: str
    loop: str  # "asyncio" or "uvloop" (smtpx serve --loop)

    def config(
        self, name: str, port: int, spool: Path, next_hop: int, *, paused: bool, workers: int = 1
    ) -> Path:
        """A config file for one case. ``workers`` above 1 sets ``[server] workers``; 1
        leaves it out (the default), so a build without workers runs it too."""
        retry = 'retry_intervals = ["1h"]\n' if paused else ""
        worker_line = f"workers = {workers}\n" if workers != 1 else ""
        text = (
            f'hostname = "{HOSTNAME}"\n'
            f'[server]\nlisten = ["127.0.0.1:{port}"]\n{worker_line}'
            f'[spool]\ndir = "{spool}"\nfsync = "{self.fsync}"\n{retry}'
            f'[routing]\nsmarthost = "127.0.0.1:{next_hop}"\n'
            '[[routing.tls]]\nsuffix = ""\nmode = "none"\n'
            f'[control]\nsocket = "{self.workdir / (name + ".sock")}"\n'
        )
        path = self.workdir / f"{name}.toml"
        path.write_text(text)
        return path

    def unsupported(self, config: Path, workers: int) -> str | None:
        """Why ``smtpx serve --check`` refuses ``config`` when it is the workers key
        (this build has no ``[server] workers``), else None; another refusal raises."""
        argv = [sys.executable, "-m", "smtpx", "serve", "--config", str(config), "--check"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode == 0:
            return None
        said = (result.stdout + result.stderr).strip()
        if "workers" in said:
            return f"workers={workers}: not supported by this build"
        raise RuntimeError(f"smtpx serve --check refused {config}: {said[-2000:]}")

    @contextlib.contextmanager
    def serve(self, config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
        log_path = config.with_suffix(".log")
        argv = [sys.executable, "-m", "smtpx", "serve", "--config", str(config)]
        argv += ["--loop", self.loop]
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(argv, stdout=log_file, stderr=log_file)
        try:
            try:
                wait_for_greeting(port, process=process)
                wait_healthy(config.with_suffix(".sock"), process)
            except RuntimeError as exc:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"smtpx serve: {exc}\n{tail}") from None
            yield process
        finally:
            stop(process, 120)


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tree_cpu(pid: int) -> CpuMeter:
    """A meter of the CPU time of ``pid`` (with the children it reaped) and of its live
    descendants: smtpx serve with workers is several processes."""

    def used() -> float:
        total = cpu_seconds(pid, reaped=True)
        pending = children(pid)
        while pending:
            child = pending.pop()
            total += cpu_seconds(child, reaped=True)
            pending.extend(children(child))
        return total

    return used


def smtpx_queued(spool: Path) -> int:
    """Messages on disk in ``spool`` and, with workers, in its shards (``shard-I``)."""
    from smtpx.spool.spool import Spool

    shards = sorted(p for p in spool.glob("shard-*") if p.is_dir())
    return sum(Spool.count_from_disk(directory) for directory in [spool, *shards])


def spool_child(mode: str, directory: Path, count: int, size: int, mta: Smtpx) -> dict[str, float]:
    """Run ``--child fill|restart`` in a fresh interpreter; its one JSON line."""
    argv = [sys.executable, os.path.abspath(__file__), "--child", mode, "--dir", str(directory)]
    argv += ["--queued", str(count), "--size", str(size), "--fsync", mta.fsync]
    argv += ["--loop", mta.loop]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"spool {mode} child failed: {result.stderr.strip()[-2000:]}")
    values: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return values


def run_on(loop: str, main: Coroutine[None, None, dict[str, float]]) -> dict[str, float]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def child_fill(directory: Path, count: int, size: int, fsync: str, loop: str) -> dict[str, float]:
    """In this process: add ``count`` frozen messages, 1,000 concurrent calls at a time."""
    import gc

    from smtpx.envelope import Envelope
    from smtpx.spool.journal import FsyncPolicy
    from smtpx.spool.spool import Delivery, Spool, SpoolConfig

    body = message(size)

    async def run() -> dict[str, float]:
        spool = Spool(SpoolConfig(directory=directory, fsync=FsyncPolicy(fsync)))
        await spool.start()
        gc.collect()
        before = rss_kb(os.getpid())
        start = time.perf_counter()
        done = 0
        while done < count:
            n = min(1000, count - done)
            # One call per message, as concurrent SMTP sessions do (a call of many would make
            # them one batch whose members all list each other as "related").
            await asyncio.gather(
                *(
                    spool.add(
                        [
                            Delivery(
                                Envelope.create(
                                    sender=SENDER, recipients=[RECIPIENT], message=body
                                ),
                                route="example.net",
                            )
                        ],
                        frozen=True,
                    )
                    for _ in range(n)
                )
            )
            done += n
        elapsed = time.perf_counter() - start
        gc.collect()
        after = rss_kb(os.getpid())
        fsyncs = spool.journal.fsyncs
        await spool.kill_and_flush()
        return {
            "seconds": elapsed,
            "kb_per_message": (after - before) / count,
            "fsyncs": fsyncs,
            "bytes": sum(p.stat().st_size for p in (directory / "journal").iterdir()),
        }

    return run_on(loop, run())


def child_restart(directory: Path, fsync: str, loop: str) -> dict[str, float]:
    """In this process: time ``Spool.start()`` on a filled spool, and the RSS it keeps."""
    import gc

    from smtpx.spool.journal import FsyncPolicy
    from smtpx.spool.spool import Spool, SpoolConfig

    async def run() -> dict[str, float]:
        gc.collect()
        before = rss_kb(os.getpid())
        start = time.perf_counter()
        spool = Spool(SpoolConfig(directory=directory, fsync=FsyncPolicy(fsync)))
        await spool.start()
        elapsed = time.perf_counter() - start
        gc.collect()
        after = rss_kb(os.getpid())
        count = len(spool.messages)
        await spool.kill_and_flush()
        return {
            "seconds": elapsed,
            "messages": count,
            "kb_per_message": (after - before) / max(count, 1),
        }

    return run_on(loop, run())


# --- Postfix -----------------------------------------------------------------------------------


class Postfix(PrivatePostfix):
    """smtpx.testing's private Postfix, with what the benchmark reads off it."""

    def __init__(self, root: Path, port: int) -> None:
        super().__init__(root, port, hostname=HOSTNAME)

    def settle(self, expected: int) -> None:
        """Wait until every message has left incoming and active (all deferred)."""
        deadline = time.monotonic() + TIMEOUT
        while self.queued("incoming", "active") and time.monotonic() < deadline:
            time.sleep(0.1)
        got = self.queued()
        if got != expected:
            raise RuntimeError(f"Postfix holds {got} messages, not {expected}")

    def master_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.queue / "pid" / "master.pid").read_text().split()[0])
            os.kill(pid, 0)
            return pid
        return None

    def pids(self) -> list[int]:
        """The master and its children."""
        master = self.master_pid()
        return [] if master is None else [master, *children(master)]

    def cpu_seconds(self) -> float:
        """CPU time of the master, of the children it has reaped, and of the live ones:
        the difference of two readings is what the whole instance used in between."""
        master = self.master_pid()
        if master is None:
            return 0.0
        used = cpu_seconds(master, reaped=True)
        return used + sum(cpu_seconds(pid) for pid in children(master))

    def rss_kb(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, RuntimeError):
                total += rss_kb(pid)
        return total


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Queued:
    fill_rate: float | None = None
    kb_after_fill: float | None = None
    restart_s: float | None = None  # in-process Spool.start()
    kb_after_restart: float | None = None
    to_greeting_s: float | None = None  # whole MTA: start to the first 220
    kb_whole: float | None = None  # whole MTA: RSS over an empty start, per message
    disk_bytes: float | None = None  # per message


def smtpx_intake(mta: Smtpx, load: Load, workers: int = 1) -> IntakeRun | str:
    """Intake with delivery paused (the next hop is a port where nothing listens), both
    shapes, on one spool; or why this build cannot run ``workers``."""
    port = free_port()
    spool = mta.workdir / "smtpx-intake"
    config = mta.config("intake", port, spool, free_port(), paused=True, workers=workers)
    problem = mta.unsupported(config, workers)
    if problem is not None:
        return problem
    with mta.serve(config, port) as process:
        run = intake_cases(load, port, tree_cpu(process.pid))
    got = smtpx_queued(spool)
    if got != run.total:
        raise RuntimeError(f"smtpx spooled {got} of {run.total} messages")
    shutil.rmtree(spool)
    return run


def smtpx_relay(mta: Smtpx, load: Load, workers: int = 1) -> Relay | str:
    port, sink_port = free_port(), free_port()
    spool = mta.workdir / "smtpx-relay"
    config = mta.config("relay", port, spool, sink_port, paused=False, workers=workers)
    problem = mta.unsupported(config, workers)
    if problem is not None:
        return problem
    with mta.serve(config, port) as process, smtp_sink(sink_port, load.messages) as sink:
        relay = timed_relay(load, port, sink, tree_cpu(process.pid))
    shutil.rmtree(spool)
    return relay


def smtpx_queued_cases(mta: Smtpx, load: Load, queued: int) -> Queued:
    """100,000 queued: in-process, then the whole MTA restarting on that spool."""
    result = Queued()
    spool = mta.workdir / "smtpx-queue"
    fill = spool_child("fill", spool, queued, load.size, mta)
    result.fill_rate = queued / fill["seconds"]
    result.kb_after_fill = fill["kb_per_message"]
    result.disk_bytes = fill["bytes"] / queued
    restart = spool_child("restart", spool, queued, load.size, mta)
    if restart["messages"] != queued:
        raise RuntimeError(f"smtpx restarted with {restart['messages']:.0f} of {queued}")
    result.restart_s = restart["seconds"]
    result.kb_after_restart = restart["kb_per_message"]
    port = free_port()
    config = mta.config("empty", port, mta.workdir / "smtpx-empty", free_port(), paused=True)
    with mta.serve(config, port) as process:
        time.sleep(1)
        empty_kb = rss_kb(process.pid)
    config = mta.config("restart", port, spool, free_port(), paused=True)
    start = time.perf_counter()
    with mta.serve(config, port) as process:
        result.to_greeting_s = time.perf_counter() - start
        time.sleep(1)
        result.kb_whole = (rss_kb(process.pid) - empty_kb) / queued
    shutil.rmtree(spool)
    return result


def postfix_intake(postfix: Postfix, load: Load) -> tuple[IntakeRun, int]:
    """Intake with delivery paused (defer_transports = smtp) on an empty queue, both
    shapes, whose messages stay: they are the first of the queued ones. Also the RSS of
    the empty instance (master, qmgr, pickup and the smtpd that greeted)."""
    postfix.configure(queue="queue-paused", relay_port=0, paused=True)
    already = postfix.queued()  # an earlier round's
    postfix.start()
    try:
        time.sleep(1)
        empty_kb = postfix.rss_kb()
        run = intake_cases(load, postfix.port, postfix.cpu_seconds)
        postfix.settle(already + run.total)
    finally:
        postfix.stop()
    return run, empty_kb


def postfix_relay(postfix: Postfix, load: Load) -> Relay:
    sink_port = free_port()
    postfix.configure(queue="queue-relay", relay_port=sink_port, paused=False)
    with smtp_sink(sink_port, load.messages) as sink:
        postfix.start()
        try:
            relay = timed_relay(load, postfix.port, sink, postfix.cpu_seconds)
        finally:
            postfix.stop()
    return relay


def postfix_queued_cases(postfix: Postfix, load: Load, queued: int, empty_kb: int) -> Queued:
    """Fill the intake's queue up to 100,000 (all deferred), stop, and time a start."""
    result = Queued()
    postfix.configure(queue="queue-paused", relay_port=0, paused=True)
    # The intake's messages are the first (more than ``queued`` after many rounds: then
    # all of them count).
    present = postfix.queued()
    queued = max(queued, present)
    postfix.start()
    try:
        more = queued - present
        if more > 0:
            start = time.perf_counter()
            smtp_source(load, postfix.port, more)
            result.fill_rate = more / (time.perf_counter() - start)
        postfix.settle(queued)
    finally:
        postfix.stop()
    result.disk_bytes = (
        sum(
            os.path.getsize(os.path.join(folder, name))
            for queue in ("deferred", "defer")
            for folder, _, names in os.walk(postfix.queue / queue)
            for name in names
        )
        / queued
    )
    start = time.perf_counter()
    postfix.start()  # runs postsuper (a queue structure check) and postfix-script's checks
    try:
        result.to_greeting_s = time.perf_counter() - start
        time.sleep(1)
        result.kb_whole = (postfix.rss_kb() - empty_kb) / queued
    finally:
        postfix.stop()
    return result


def run_child(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if args.child == "fill":
        values = child_fill(directory, args.queued, args.size, args.fsync, args.loop)
    else:
        values = child_restart(directory, args.fsync, args.loop)
    print(json.dumps(values))
    return 0


def cell(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def _spread(runs: Sequence[IntakeRun | str], shape: str) -> str:
    """The slowest and fastest round's msg/s of ``shape`` ("kept" or "new")."""
    rates = [getattr(run, shape).rate for run in runs if not isinstance(run, str)]
    return f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--queued", type=int, default=100_000, help="messages for memory/restart")
    parser.add_argument("--fsync", choices=("always", "batch"), default="batch", help="smtpx's")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="smtpx's event loop (smtpx serve --loop; auto: uvloop when installed)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="intake and relay runs (median)")
    parser.add_argument("--quick", action="store_true", help="1,000 messages, 5,000 queued")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-postfix", action="store_true", help="measure smtpx only")
    parser.add_argument(
        "--workers", default="1", help="smtpx serve's [server] workers, each measured: 1,2"
    )
    parser.add_argument("--child", choices=("fill", "restart"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)

    tool("smtp-source")
    tool("smtp-sink")
    loop = event_loop(args.loop)
    load = Load(1_000 if args.quick else args.messages, args.size, args.sessions)
    queued = 5_000 if args.quick else args.queued
    if queued < 3 * load.messages:
        parser.error("--queued must be at least 3x --messages (the intake's are the first)")
    workers = parse_workers(args.workers)
    rounds = max(1, args.rounds)
    work = Path(tempfile.mkdtemp(prefix="smtpx-relay-bench-", dir="/tmp"))
    os.chmod(work, 0o755)  # Postfix's unprivileged daemons work under it
    postfix: Postfix | None = None
    unavailable: str | None = "not measured (--no-postfix)" if args.no_postfix else None
    try:
        append_ms, create_ms = fsync_latency(work)
        print(
            f"relay benchmark: smtp-source -s {load.sessions} -m {load.messages} "
            f"-l {load.size} -d; {queued:,} queued; python {platform.python_version()}, "
            f"smtpx on {loop} ({smtpx_build()}), {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        print(
            f"durability: smtpx fsync={args.fsync} (journal, group commit), Postfix fsync per "
            f"queue file; disk here: 4 KiB append+fdatasync p50 {append_ms:.2f} ms, "
            f"create+write+fsync p50 {create_ms:.2f} ms",
            flush=True,
        )
        # The two MTAs take turns case by case, so a busy spell of the machine hits both.
        mta = Smtpx(work, args.fsync, loop)
        pf_queued = Queued()
        empty_kb = 0

        def postfix_step(name: str, step: Callable[[Postfix], None]) -> None:
            nonlocal postfix, unavailable
            if unavailable is not None:
                return
            note(f"postfix: {name}")
            try:
                if postfix is None:
                    postfix = Postfix(work / "postfix", free_port())
                step(postfix)
            except PostfixUnavailable as exc:
                unavailable = str(exc)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                # A broken Postfix run must not cost the smtpx half: say what happened.
                unavailable = f"the Postfix run failed ({name}): {type(exc).__name__}: {exc}"

        pf_intakes: list[IntakeRun] = []
        pf_relays: list[Relay] = []

        def pf_intake_step(pf: Postfix) -> None:
            nonlocal empty_kb
            run, empty_kb = postfix_intake(pf, load)
            pf_intakes.append(run)

        def pf_relay_step(pf: Postfix) -> None:
            pf_relays.append(postfix_relay(pf, load))

        def pf_queued_step(pf: Postfix) -> None:
            nonlocal pf_queued
            pf_queued = postfix_queued_cases(pf, load, queued, empty_kb)

        sx_intakes: dict[int, list[IntakeRun | str]] = {count: [] for count in workers}
        sx_relays: dict[int, list[Relay | str]] = {count: [] for count in workers}
        for round_ in range(1, rounds + 1):
            for count in workers:
                where = f"smtpx, workers={count}, round {round_}/{rounds}"
                note(f"{where}: intake, delivery paused (kept, then new connections)")
                sx_intakes[count].append(smtpx_intake(mta, load, count))
                if count == workers[0]:
                    postfix_step(f"intake, delivery paused, round {round_}", pf_intake_step)
                note(f"{where}: relay into smtp-sink")
                sx_relays[count].append(smtpx_relay(mta, load, count))
                if count == workers[0]:
                    postfix_step(f"relay into smtp-sink, round {round_}", pf_relay_step)
        sx_intake = {count: median_intake(runs) for count, runs in sx_intakes.items()}
        sx_relay = {count: median_relay(runs) for count, runs in sx_relays.items()}
        pf_middle = median_intake(pf_intakes) if pf_intakes else None
        pf_intake = pf_middle if isinstance(pf_middle, IntakeRun) else None
        pf_relay_middle = median_relay(pf_relays) if pf_relays else None
        pf_relay = pf_relay_middle if isinstance(pf_relay_middle, Relay) else None
        note(f"smtpx: {queued:,} queued (in-process, then smtpx serve)")
        sx_queued = smtpx_queued_cases(mta, load, queued)
        postfix_step(f"filling to {queued:,} queued, restart", pf_queued_step)
        note(f"done; load average {os.getloadavg()[0]:.2f}")
    finally:
        if postfix is not None:
            with contextlib.suppress(PostfixUnavailable):
                postfix.stop()
        if args.keep:
            note(f"kept {work}")
        else:
            note("removing the temporary directory")
            shutil.rmtree(work, ignore_errors=True)

    def ratio(ours: float | None, theirs: float | None) -> float | None:
        return None if ours is None or theirs is None else ours / theirs

    def verdict(ok: bool | None) -> str:
        return "" if ok is None else "met" if ok else "NOT MET"

    memory = max(sx_queued.kb_after_fill or 0.0, sx_queued.kb_after_restart or 0.0)
    restart = max(sx_queued.restart_s or 0.0, sx_queued.to_greeting_s or 0.0)
    rows: list[tuple[str, str, str, str, str]] = []
    targets: list[tuple[str, bool | None]] = []
    unsupported: list[str] = []
    for count in workers:
        tag = f", workers={count}"
        intake, relay = sx_intake[count], sx_relay[count]
        if isinstance(intake, str) or isinstance(relay, str):
            unsupported.append(intake if isinstance(intake, str) else str(relay))
            continue
        for shape, ours, theirs in (
            ("kept connections", intake.kept, pf_intake.kept if pf_intake else None),
            ("new connection per message", intake.new, pf_intake.new if pf_intake else None),
        ):
            times = ratio(ours.rate, theirs.rate if theirs else None)
            rows.append(
                (
                    f"intake, {shape}{tag}",
                    cell(ours.rate, ",.0f"),
                    cell(theirs.rate if theirs else None, ",.0f"),
                    cell(times, ".2f", "x"),
                    ">= 2.5x " + verdict(None if times is None else times >= 2.5),
                )
            )
            rows.append(_cpu_row(ours.cpu_us, theirs.cpu_us if theirs else None))
            if rounds > 1:  # how far the rounds lie apart: this machine's noise
                pick = "kept" if shape.startswith("kept") else "new"
                rows.append(
                    (
                        "  msg/s, slowest-fastest round",
                        _spread(sx_intakes[count], pick),
                        _spread(pf_intakes, pick),
                        "",
                        "",
                    )
                )
            targets.append((f"intake ({shape}{tag}) >= 2.5x Postfix", _met(times, 2.5)))
        for when, ours_latency, theirs_latency in (
            ("idle", intake.idle, pf_intake.idle if pf_intake else None),
            ("loaded (kept)", intake.loaded, pf_intake.loaded if pf_intake else None),
        ):
            rows.append(
                (
                    f"  round trip p50 / p99, {when}",
                    _latency(ours_latency),
                    _latency(theirs_latency),
                    "",
                    "one message, ms",
                )
            )
        relay_ratio = ratio(relay.rate, pf_relay.rate if pf_relay else None)
        rows.append(
            (
                f"relay end to end{tag}",
                cell(relay.rate, ",.0f"),
                cell(pf_relay.rate if pf_relay else None, ",.0f"),
                cell(relay_ratio, ".2f", "x"),
                ">= 2x " + verdict(_met(relay_ratio, 2)),
            )
        )
        rows.append(
            (
                "  intake while relaying (msg/s)",
                cell(relay.intake, ",.0f"),
                cell(pf_relay.intake if pf_relay else None, ",.0f"),
                "",
                "",
            )
        )
        rows.append(_cpu_row(relay.cpu_us, pf_relay.cpu_us if pf_relay else None))
        targets.append((f"relay{tag} >= 2x Postfix", _met(relay_ratio, 2)))
    rows += [
        (
            f"{queued:,} queued: filling (msg/s)",
            cell(sx_queued.fill_rate, ",.0f"),
            cell(pf_queued.fill_rate, ",.0f"),
            "",
            "smtpx: in-process add",
        ),
        (
            "  disk per message",
            cell(
                None if sx_queued.disk_bytes is None else sx_queued.disk_bytes / 1024, ".1f", " KB"
            ),
            cell(
                None if pf_queued.disk_bytes is None else pf_queued.disk_bytes / 1024, ".1f", " KB"
            ),
            "",
            "file sizes",
        ),
        (
            "  spool RSS per msg, after adding",
            cell(sx_queued.kb_after_fill, ".2f", " KB"),
            "",
            "",
            "<= 2 KB " + verdict((sx_queued.kb_after_fill or 0.0) <= 2),
        ),
        (
            "  spool RSS per msg, after restart",
            cell(sx_queued.kb_after_restart, ".2f", " KB"),
            "",
            "",
            "<= 2 KB " + verdict((sx_queued.kb_after_restart or 0.0) <= 2),
        ),
        (
            "  spool restart (Spool.start)",
            cell(sx_queued.restart_s, ".2f", " s"),
            "",
            "",
            "<= 10 s " + verdict((sx_queued.restart_s or 0.0) <= 10),
        ),
        (
            "  MTA start to first 220",
            cell(sx_queued.to_greeting_s, ".2f", " s"),
            cell(pf_queued.to_greeting_s, ".2f", " s"),
            "",
            "<= 10 s " + verdict((sx_queued.to_greeting_s or 0.0) <= 10),
        ),
        (
            "  MTA RSS per msg over empty start",
            cell(sx_queued.kb_whole, ".2f", " KB"),
            cell(pf_queued.kb_whole, ".2f", " KB"),
            "",
            "all processes",
        ),
    ]
    print(SEP)
    print(f"{'case':<44}{'smtpx':>16}{'postfix':>16}{'ratio':>8}  target")
    for label, smtpx_cell, postfix_cell, ratio_cell, target in rows:
        # Wide enough that a p99 over a second does not run into the next column.
        print(f"{label:<44}{smtpx_cell:>16}{postfix_cell:>16}{ratio_cell:>8}  {target}")
    print(SEP)
    for line in unsupported:
        print(line)
    if unavailable is not None:
        print(f"postfix unavailable: {unavailable}")
    targets += [
        ("<= 2 KB per queued message", memory <= 2),
        (f"restart with {queued:,} queued <= 10 s", restart <= 10),
    ]
    print(
        "smtpx targets: "
        + "; ".join(f"{name} {verdict(ok) or 'not measured'}" for name, ok in targets)
    )
    return 0


def median_intake(runs: Sequence[IntakeRun | str]) -> IntakeRun | str:
    """Each figure's median over the rounds (a build without workers: why not)."""
    done = [run for run in runs if not isinstance(run, str)]
    if len(done) < len(runs):
        return next(run for run in runs if isinstance(run, str))
    idle = [run.idle for run in done if run.idle is not None]
    loaded = [run.loaded for run in done if run.loaded is not None]
    return IntakeRun(
        kept=_middle([run.kept for run in done], key=lambda r: r.rate),
        new=_middle([run.new for run in done], key=lambda r: r.rate),
        idle=_middle(idle, key=lambda r: r.p50) if idle else None,
        loaded=_middle(loaded, key=lambda r: r.p50) if loaded else None,
        total=0,
    )


def median_relay(runs: Sequence[Relay | str]) -> Relay | str:
    done = [run for run in runs if not isinstance(run, str)]
    if len(done) < len(runs):
        return next(run for run in runs if isinstance(run, str))
    return _middle(done, key=lambda r: r.rate)


T = TypeVar("T")


def _middle(items: list[T], key: Callable[[T], float]) -> T:
    return sorted(items, key=key)[len(items) // 2]


def _met(times: float | None, target: float) -> bool | None:
    return None if times is None else times >= target


def _cpu_row(ours: float | None, theirs: float | None) -> tuple[str, str, str, str, str]:
    """The CPU each MTA spent per message, and how many times less smtpx spent: steadier
    than the rates on a machine whose speed varies (both run on the same cores)."""
    less = None if not ours or theirs is None else theirs / ours
    ratio = "" if less is None else f"{less:.2f}x"
    return (
        "  MTA CPU per message",
        cell(ours, ",.0f", " us"),
        cell(theirs, ",.0f", " us"),
        ratio,
        "Postfix's / smtpx's" if ratio else "",
    )


def _latency(latency: Latency | None) -> str:
    return "-" if latency is None else f"{latency.p50:.2f} / {latency.p99:.2f}"


if __name__ == "__main__":
    sys.exit(main())

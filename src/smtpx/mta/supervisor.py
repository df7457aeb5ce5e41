"""The supervisor of ``[server] workers = N`` (N > 1): ``smtpx serve`` itself.

::

    supervisor = Supervisor(config, command)   # command: how to run ``smtpx serve ...``
    async with supervisor:                     # ports reserved, shards adopted, N running
        with supervisor.signals():             # SIGTERM/SIGINT: drain all; SIGHUP: forward
            await supervisor.wait()

It takes no mail itself. It reserves the listeners' ports (:func:`~smtpx.mta.workers.
reserve_ports`), moves the mail of shards no worker owns any more into those that remain
(:func:`~smtpx.mta.workers.adopt_shards`), starts the workers (``command`` plus
``--worker I/N --ports P,... --fds F,... --balance B``: they inherit the reserved
sockets and share them, :mod:`smtpx.io.accept`, with their counts of sessions,
:mod:`smtpx.io.balance`), serves the public control plane
(:mod:`smtpx.mta.aggregate`), and restarts a worker that dies, after a pause that doubles
from :data:`RESTART_MIN` up to :data:`RESTART_MAX` while it keeps dying young (a worker
that ran :data:`STABLE_AFTER` seconds starts over at the minimum). A restarted worker
replays its shard: the journal holds everything it acknowledged. A worker that serves
but whose event loop has not turned for :data:`WATCHDOG` seconds (its beat in the shared
counts is that old: stuck in a call that does not return, or stopped) is killed and
restarted the same way, as Postfix's daemons' watchdog (``daemon_timeout``) does.

SIGTERM and SIGINT are passed to every worker (each finishes its sessions and deliveries,
as a single MTA does) and the supervisor waits for all of them; SIGHUP is passed on (each
worker reloads). A worker that notices its supervisor gone stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from smtpx.errors import SMTPXError
from smtpx.io.balance import Beats, make_balance
from smtpx.io.tasks import cancel_and_wait
from smtpx.mta.aggregate import Aggregator
from smtpx.mta.config import MtaConfig, SpoolBackend
from smtpx.mta.fanout import WorkerDown
from smtpx.mta.workers import adopt_shards, reserve_ports, worker_socket

__all__ = [
    "RESTART_MAX",
    "RESTART_MIN",
    "STABLE_AFTER",
    "WATCHDOG",
    "Supervisor",
    "WorkerFailed",
    "split_state_warnings",
    "watch_parent",
]

log = logging.getLogger("smtpx.mta")

RESTART_MIN = 0.1
RESTART_MAX = 10.0
STABLE_AFTER = 30.0
READY_TIMEOUT = 60.0
ORPHAN_GRACE = 60.0  # a worker whose supervisor is gone exits this long after, drained or not
# A worker still running this long after SIGTERM is killed: its deliveries had 30 s, its
# spool's close is bounded; past this it hangs, and what it acknowledged is durable.
DRAIN_DEADLINE = 120.0
CONFIG_ERROR = 2  # the exit status of smtpx serve for a bad configuration
# A serving worker whose loop has not turned (no beat, smtpx.io.balance) for this long is
# killed and restarted; checked every WATCHDOG_EVERY seconds. Nothing a worker does on its
# loop takes seconds (files and DKIM go to threads), so this is a hang, not a slow spell.
WATCHDOG = 120.0
WATCHDOG_EVERY = 5.0


class WorkerFailed(SMTPXError):
    """A worker could not start (the message says which, and how it ended)."""


class _Worker:
    """One worker process and its history."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started = 0.0
        self.running = False

    def status(self) -> dict[str, Any]:
        pid = None if self.process is None else self.process.pid
        return {
            "worker": self.index,
            "pid": pid,
            "running": self.running,
            "restarts": self.restarts,
        }

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


class Supervisor:
    """N workers under one process (see the module docstring)."""

    def __init__(self, config: MtaConfig, command: Sequence[str]) -> None:
        self.config = config
        self.command = list(command)
        self.count = config.server.workers
        self.workers = [_Worker(index) for index in range(self.count)]
        self.ports: list[int] = []
        self._held: list[socket.socket] = []
        self._balance: int | None = None  # the workers' counts of sessions (smtpx.io.balance)
        self._beats: Beats | None = None  # and their beats, as the watchdog reads them
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        control = config.control
        token = (
            control.token_file.read_text(encoding="utf-8").strip() if control.token_file else None
        )
        self.control = Aggregator(
            self,
            [worker_socket(control.socket, index) for index in range(self.count)],
            shared_queue=config.spool.backend is SpoolBackend.POSTGRESQL,
            socket_path=control.socket,
            http=None if control.http is None else (control.http.host, control.http.port),
            token=token,
        )

    def status(self) -> list[dict[str, Any]]:
        return [worker.status() for worker in self.workers]

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Reserve the ports, adopt leftover shards, start the control plane and the
        workers; return once every worker answers on its control socket."""
        for warning in split_state_warnings(self.config):
            log.warning("workers: %s", warning)
        self._held, self.ports = reserve_ports(self.config.server)
        self._balance = make_balance(self.count)
        try:
            for index, moved in (await adopt_shards(self.config, self.count)).items():
                log.warning("workers: shard-%d adopted (%d messages)", index, moved)
            await self.control.start()
            for worker in self.workers:
                await self._spawn(worker)
            await asyncio.gather(*(self._ready(worker) for worker in self.workers))
            # Every worker is ready: now they listen, all together.
            await asyncio.gather(*(self._serve(worker) for worker in self.workers))
        except BaseException:
            await self.close()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(worker)) for worker in self.workers]
        if self._balance is not None:
            self._beats = Beats(self._balance, self.count, loop.time)
            self._tasks.append(loop.create_task(self._watchdog(self._beats)))

    async def close(self) -> None:
        """Stop every worker (SIGTERM: each drains) and wait for them."""
        self._stop.set()
        # The listening sockets end with the last worker's (no restart now): a client
        # then finds the port closed, not a queue nobody takes from.
        for sock in self._held:
            sock.close()
        self._held = []
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        await cancel_and_wait(self._tasks)
        if self._beats is not None:
            self._beats.close()
            self._beats = None
        if self._balance is not None:
            os.close(self._balance)  # (the workers have theirs)
            self._balance = None
        await asyncio.gather(*(self._drained(worker) for worker in self.workers))
        await self.control.close()

    async def _drained(self, worker: _Worker) -> None:
        """Wait for ``worker`` (told to stop) to end; kill it :data:`DRAIN_DEADLINE`
        seconds after, as a crash would (its mail is delivered from its shard or the
        shared queue at the next start)."""
        process = worker.process
        if process is not None and process.returncode is None:
            try:
                async with asyncio.timeout(DRAIN_DEADLINE):
                    await process.wait()
            except TimeoutError:
                log.error(
                    "workers: worker %d (pid %d) still running %g s after SIGTERM: killed",
                    worker.index,
                    process.pid,
                    DRAIN_DEADLINE,
                )
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        worker.running = False

    @property
    def clean_exit(self) -> bool:
        """Every worker ended with status 0 (after :meth:`close`)."""
        return all(w.process is None or w.process.returncode == 0 for w in self.workers)

    def stop(self) -> None:
        self._stop.set()

    # -- workers ------------------------------------------------------------------------

    async def _spawn(self, worker: _Worker) -> None:
        ports = ",".join(str(port) for port in self.ports)
        fds = [sock.fileno() for sock in self._held]  # the workers share them
        inherited, balance = list(fds), []
        if self._balance is not None:
            inherited.append(self._balance)
            balance = ["--balance", str(self._balance)]
        worker.process = await asyncio.create_subprocess_exec(
            *self.command,
            "--worker",
            f"{worker.index}/{self.count}",
            "--ports",
            ports,
            "--fds",
            ",".join(str(fd) for fd in fds),
            *balance,
            stdin=asyncio.subprocess.DEVNULL,
            pass_fds=inherited,
        )
        worker.started = time.monotonic()
        worker.running = True
        log.info("workers: worker %d started (pid %d)", worker.index, worker.process.pid)

    async def _ready(self, worker: _Worker) -> None:
        """Wait until ``worker`` answers on its control socket (WorkerFailed if it ends)."""
        client = self.control.workers[worker.index]
        deadline = time.monotonic() + READY_TIMEOUT
        process = worker.process
        assert process is not None
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise WorkerFailed(f"worker {worker.index} ended with status {process.returncode}")
            with contextlib.suppress(Exception):
                if (await client.call("GET", "/healthz")).status == 200:
                    return
            await asyncio.sleep(0.05)
        raise WorkerFailed(f"worker {worker.index} did not start in {READY_TIMEOUT:g} s")

    async def _serve(self, worker: _Worker) -> None:
        """Tell a ready worker to accept (it would by itself after a while anyway)."""
        client = self.control.workers[worker.index]
        try:
            answer = await client.call("POST", "/v1/server/serve", None, {})
        except WorkerDown as exc:
            log.warning("workers: worker %d was not told to accept: %s", worker.index, exc)
            return
        if answer.status != 200:
            log.warning("workers: worker %d answered %d to serve", worker.index, answer.status)

    async def _watch(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it dies, until the supervisor stops."""
        pause = RESTART_MIN
        while not self._stop.is_set():
            lived = 0.0
            if worker.process is not None:
                status = await worker.process.wait()
                worker.running = False
                if self._stop.is_set():
                    return
                lived = time.monotonic() - worker.started
                log.error(
                    "workers: worker %d (pid %d) ended with status %d after %.1f s",
                    worker.index,
                    worker.process.pid,
                    status,
                    lived,
                )
            pause = RESTART_MIN if lived >= STABLE_AFTER else min(pause * 2, RESTART_MAX)
            log.warning("workers: restarting worker %d in %.1f s", worker.index, pause)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            worker.restarts += 1
            try:
                await self._spawn(worker)
            except OSError as exc:  # no memory or processes left: try again later
                log.error("workers: cannot start worker %d: %s", worker.index, exc)
                worker.process = None
                continue
            try:
                await self._ready(worker)
            except WorkerFailed as exc:  # it died again: the loop restarts it
                log.error("workers: %s", exc)
                continue
            await self._serve(worker)

    async def _watchdog(self, beats: Beats) -> None:
        """Every :data:`WATCHDOG_EVERY` seconds: kill each worker that serves and whose
        loop has stood still for :data:`WATCHDOG` seconds (:meth:`_watch` restarts it)."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCHDOG_EVERY):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            for index in beats.stalled(WATCHDOG):
                beats.clear(index)  # (its next run beats anew)
                process = self.workers[index].process
                if process is None or process.returncode is not None:
                    continue
                log.error(
                    "workers: worker %d (pid %d) has not turned its event loop for %g s: "
                    "killed (it is restarted; what it acknowledged is on disk)",
                    index,
                    process.pid,
                    WATCHDOG,
                )
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    # -- signals ------------------------------------------------------------------------

    def forward(self, signum: int) -> None:
        for worker in self.workers:
            worker.signal(signum)

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """While the block runs: SIGTERM and SIGINT stop, SIGHUP goes to the workers."""
        loop = asyncio.get_running_loop()
        handlers: dict[signal.Signals, Callable[[], object]] = {
            signal.SIGTERM: self._stop.set,
            signal.SIGINT: self._stop.set,
            signal.SIGHUP: lambda: self.forward(signal.SIGHUP),
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        try:
            yield
        finally:
            for sig in handlers:
                loop.remove_signal_handler(sig)

    async def wait(self) -> None:
        """Until SIGTERM or SIGINT (under :meth:`signals`) or :meth:`stop`."""
        await self._stop.wait()


def split_state_warnings(config: MtaConfig) -> list[str]:
    """What each worker keeps for itself that an operator may expect to be shared: the
    guards' memory without ``[redis]``."""
    if config.redis.url is not None:
        return []
    warnings = []
    if config.greylist.enabled:
        warnings.append(
            "greylisting keeps its triplets per worker without redis.url: a retry that "
            "reaches another worker is greylisted again (set redis.url to share them)"
        )
    if config.rate_limits.rules:
        warnings.append(
            "rate limits count per worker without redis.url: a client may send up to "
            "workers x each limit (set redis.url to share the counts)"
        )
    return warnings


async def watch_parent(
    parent: int,
    stop: Callable[[], None],
    every: float = 1.0,
    *,
    grace: float = ORPHAN_GRACE,
    end_process: Callable[[int], object] | None = None,
) -> None:
    """Call ``stop`` once the process ``parent`` is no longer this one's parent (the
    supervisor died: a worker must not live on alone). Run it until the worker has
    closed, drain included: if it is still running ``grace`` seconds after the
    supervisor was found gone (its drain hangs), the process exits with status 1 (what
    it acknowledged is on disk: as after a crash, the next start delivers it)."""
    while os.getppid() == parent:
        await asyncio.sleep(every)
    log.error("workers: the supervisor (pid %d) is gone; stopping", parent)
    stop()
    await asyncio.sleep(grace)
    log.error("workers: still not stopped %gs after the supervisor went: exiting", grace)
    (end_process or _exit_now)(1)


def _exit_now(status: int) -> None:
    """Leave at once (a drain that hangs would hold up a normal exit), the log flushed."""
    logging.shutdown()
    os._exit(status)

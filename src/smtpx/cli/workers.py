"""``smtpx serve`` with ``[server] workers = N``: the supervisor's side (the ``serve``
process itself) and the workers' (``serve --worker I/N --ports P,... --fds F,...
--balance B``, started by it).
See :mod:`smtpx.mta.supervisor`."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from smtpx._version import __version__
from smtpx.maillog import FieldsFilter

if TYPE_CHECKING:
    from smtpx.mta.app import Mta
    from smtpx.mta.config import MtaConfig

__all__ = ["WorkerSpec", "run_supervisor", "run_worker", "worker_command"]


class WorkerSpec:
    """``--worker I/N --ports P,... --fds F,... --balance B``: which worker this process
    is, the ports the supervisor reserved (one per listener) and their sockets, and the
    workers' shared counts of sessions (the last two inherited)."""

    def __init__(
        self, worker: str, ports: str | None, fds: str | None = None, balance: str | None = None
    ) -> None:
        index, slash, count = worker.partition("/")
        try:
            self.index, self.count = int(index), int(count)
            self.ports = [int(port) for port in (ports or "").split(",") if port]
            self.fds = [int(fd) for fd in (fds or "").split(",") if fd]
            self.balance = int(balance) if balance else None
        except ValueError:
            raise click.BadParameter("--worker I/N --ports P,... --fds F,... --balance B") from None
        if not slash or not 0 <= self.index < self.count:
            raise click.BadParameter(f"--worker {worker!r}: I/N with 0 <= I < N")
        self.parent = os.getppid()

    def logging(self, configure: Callable[[str, str], None]) -> Callable[[str, str], None]:
        """``configure`` (the log's level and format), then every line of this worker
        says ``worker=I`` (a field of the mail log's kind: JSON lines have it too)."""

        def configure_worker(level: str, fmt: str) -> None:
            configure(level, fmt)
            for handler in logging.getLogger().handlers:
                handler.addFilter(FieldsFilter({"worker": self.index}))

        return configure_worker

    def apply(self, config: MtaConfig) -> MtaConfig:
        from smtpx.mta.workers import worker_config  # noqa: PLC0415

        return worker_config(
            config, self.index, self.count, self.ports, fds=self.fds, balance=self.balance
        )


def worker_command(
    config_file: str | None,
    spool_dir: str | None,
    listen: tuple[str, ...],
    log_level: str | None,
    loop: str,
) -> list[str]:
    """How the supervisor runs a worker: this ``smtpx serve``'s own options."""
    command = [sys.executable, "-m", "smtpx", "serve", "--loop", loop]
    if config_file is not None:
        command += ["--config", str(Path(config_file).absolute())]
    if spool_dir is not None:
        command += ["--spool-dir", str(Path(spool_dir).absolute())]
    for address in listen:
        command += ["--listen", address]
    if log_level is not None:
        command += ["--log-level", log_level]
    return command


async def run_supervisor(config: MtaConfig, config_file: Path | None, command: list[str]) -> bool:
    """Run the workers until SIGTERM or SIGINT; True when all of them ended well."""
    from smtpx.cli import locate  # noqa: PLC0415
    from smtpx.mta.supervisor import Supervisor  # noqa: PLC0415
    from smtpx.mta.workers import listen_addresses  # noqa: PLC0415

    supervisor = Supervisor(config, command)
    with supervisor.signals():
        async with supervisor:
            listeners = [
                (kind, f"[{a.host}]:{port}" if ":" in a.host else f"{a.host}:{port}")
                for kind, a, port in zip(
                    _kinds(config), listen_addresses(config.server), supervisor.ports, strict=True
                )
            ]
            record = locate.write_record(os.getpid(), config_file, config.control.socket, listeners)
            try:
                where = ", ".join(f"{kind} {address}" for kind, address in listeners)
                click.echo(
                    f"smtpx {__version__}: {supervisor.count} workers listening on {where}",
                    err=True,
                )
                click.echo(f"  control socket {config.control.socket}", err=True)
                await supervisor.wait()
            finally:
                locate.remove_record(record)
            click.echo("smtpx: shutting down (the workers finish their sessions)", err=True)
    return supervisor.clean_exit


def _kinds(config: MtaConfig) -> list[str]:
    from smtpx.mta.workers import LISTEN_KINDS  # noqa: PLC0415

    names = {"listen": "smtp"}
    server = config.server
    return [names.get(k, k) for k in LISTEN_KINDS for _ in getattr(server, k)]


def schedule(policy: str) -> None:
    """Put this process (a worker) under ``[server] worker_scheduling``: ``"batch"`` is
    ``SCHED_BATCH`` (a process woken by a packet does not preempt the one running: workers
    sharing the cores switch less), where the system has it."""
    if policy != "batch" or not hasattr(os, "sched_setscheduler"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        logging.getLogger("smtpx.server").warning("worker_scheduling = batch: %s", exc)


async def run_worker(mta: Mta, spec: WorkerSpec) -> None:
    """A worker: the MTA until SIGTERM (from the supervisor) or until the supervisor is
    gone."""
    import asyncio  # noqa: PLC0415

    from smtpx.io.tasks import cancel_and_wait  # noqa: PLC0415
    from smtpx.mta.supervisor import watch_parent  # noqa: PLC0415

    schedule(mta.config.server.worker_scheduling)
    # Watching the supervisor lasts until the worker has closed: a drain that hangs once
    # the supervisor is gone must not leave the worker running alone for good.
    watcher = asyncio.get_running_loop().create_task(watch_parent(spec.parent, mta.stop))
    try:
        async with mta:
            await mta.wait_for_signal()
    finally:
        await cancel_and_wait([watcher])

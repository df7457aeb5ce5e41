"""What one worker of ``[server] workers = N`` runs with, and the spool shards they own.

A worker is a normal :class:`~smtpx.mta.app.Mta` whose configuration
:func:`worker_config` derives from the operator's:

* its listeners are the configured ones, on the ports the supervisor resolved (port 0
  becomes the port it reserved), served on the supervisor's own listening sockets
  (inherited): a worker takes a connection when its loop is free, so a busy worker
  leaves it to another (:mod:`smtpx.io.accept`), and one with more sessions than the
  others lets it wait a moment for them (their counts in a shared memory,
  :mod:`smtpx.io.balance`);
* with the journal it owns a shard of the spool: worker 0 the spool directory itself
  (so going back to one worker finds its mail where it is), worker ``I`` the directory
  ``spool.dir/shard-I``; with PostgreSQL the queue is shared and each worker is a node
  of its own (``node-wI``), its local files (spilled messages, TLS reports) in its shard;
* its control socket is private (``<control.socket>.worker-I``), without HTTP: the
  supervisor serves the public one and asks each worker (:mod:`smtpx.mta.aggregate`).

A shard that no worker owns any more (fewer workers than before) is adopted before the
workers start: :func:`adopt_shards` moves its messages into shard ``I mod N`` with
:func:`~smtpx.spool.migrate.migrate_queue` (each copy durable before the source lets it
go) and deletes the shard once it is empty.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import socket
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from smtpx.mta.config import ListenAddress, MtaConfig, ServerSettings, SpoolBackend
from smtpx.spool.journal_store import JournalStore
from smtpx.spool.migrate import migrate_queue
from smtpx.spool.shards import SHARD_RE, shard_dir
from smtpx.spool.spool import SpoolConfig

__all__ = [
    "LISTEN_KINDS",
    "adopt_shards",
    "listen_addresses",
    "reserve_ports",
    "shard_dir",
    "worker_config",
    "worker_socket",
]

log = logging.getLogger("smtpx.mta")

# The [server] keys that hold listeners, in the order their ports are passed on.
LISTEN_KINDS = ("listen", "smtps", "submission", "lmtp")


def worker_socket(control_socket: Path, index: int) -> Path:
    """Worker ``index``'s private control socket, next to the public one."""
    return control_socket.with_name(f"{control_socket.name}.worker-{index}")


def listen_addresses(server: ServerSettings) -> list[ListenAddress]:
    """Every listener address, in :data:`LISTEN_KINDS` order."""
    return [address for kind in LISTEN_KINDS for address in getattr(server, kind)]


def worker_config(
    config: MtaConfig,
    index: int,
    count: int,
    ports: list[int],
    *,
    fds: Sequence[int] = (),
    balance: int | None = None,
) -> MtaConfig:
    """What worker ``index`` of ``count`` runs (see the module docstring). ``ports``: one
    per :func:`listen_addresses`, as the supervisor resolved them; ``fds``: its listening
    sockets, in the same order (none: the worker binds its own, with ``SO_REUSEPORT``);
    ``balance``: the workers' shared counts of sessions (:mod:`smtpx.io.balance`)."""
    if fds and len(fds) != len(ports):
        raise ValueError(f"{len(fds)} sockets given for {len(ports)} listeners")
    server = dataclasses.replace(
        _with_ports(config.server, ports), listen_fds=tuple(fds), balance_fd=balance
    )
    spool = dataclasses.replace(config.spool, dir=shard_dir(config.spool.dir, index))
    if spool.postgresql is not None:
        node = f"{spool.postgresql.node}-w{index}"
        spool = dataclasses.replace(
            spool, postgresql=dataclasses.replace(spool.postgresql, node=node)
        )
    control = dataclasses.replace(
        config.control, socket=worker_socket(config.control.socket, index), http=None
    )
    return dataclasses.replace(
        config,
        server=dataclasses.replace(server, workers=count, worker=index),
        spool=spool,
        control=control,
    )


def _with_ports(server: ServerSettings, ports: list[int]) -> ServerSettings:
    addresses = listen_addresses(server)
    if len(ports) != len(addresses):
        raise ValueError(f"{len(ports)} ports given for {len(addresses)} listeners")
    given = iter(ports)
    changes: dict[str, tuple[ListenAddress, ...]] = {
        kind: tuple(dataclasses.replace(a, port=next(given)) for a in getattr(server, kind))
        for kind in LISTEN_KINDS
    }
    # a proxied address names a listen or submission address: the first it is equal to
    before = [*server.listen, *server.submission]
    after = [*changes["listen"], *changes["submission"]]
    changes["proxied"] = tuple(after[before.index(a)] if a in before else a for a in server.proxied)
    return dataclasses.replace(server, **changes)  # type: ignore[arg-type]


def reserve_ports(server: ServerSettings) -> tuple[list[socket.socket], list[int]]:
    """Bind (without listening) a socket on every listener address: the port is then the
    workers' for as long as the supervisor runs (port 0 becomes a real one, a port taken
    by another program is an OSError now, not in every worker). The workers inherit them
    and listen once they start accepting: until then the ports refuse connections. The
    sockets, and the ports."""
    held: list[socket.socket] = []
    try:
        for address in listen_addresses(server):
            held.append(_reserve(address))
    except OSError:
        for sock in held:
            sock.close()
        raise
    return held, [int(sock.getsockname()[1]) for sock in held]


def _reserve(address: ListenAddress) -> socket.socket:
    family, kind, proto, _, where = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(where)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None
    return sock


async def adopt_shards(config: MtaConfig, count: int) -> Counter[int]:
    """Move the mail of every shard ``K >= count`` into shard ``K mod count`` (journal
    only; the workers must not run). How many messages each adopted shard gave."""
    moved: Counter[int] = Counter()
    if config.spool.backend is not SpoolBackend.JOURNAL or not config.spool.dir.is_dir():
        return moved
    for path in sorted(config.spool.dir.iterdir()):
        match = SHARD_RE.fullmatch(path.name)
        if match is None or int(match[1]) < count or not path.is_dir():
            continue
        index = int(match[1])
        target = shard_dir(config.spool.dir, index % count)
        moved[index] = await _adopt(config, path, target)
    return moved


async def _adopt(config: MtaConfig, source_dir: Path, target_dir: Path) -> int:
    source = _store(config, source_dir)
    target = _store(config, target_dir)
    await source.open()
    try:
        await target.open()
        try:
            report = await migrate_queue(source, target)
        finally:
            await target.close()
        left = len(await source.all())
    finally:
        await source.close()
    copied = len(report.copied)
    if left:
        log.error("workers: %s keeps %d messages it could not move (see above)", source_dir, left)
    else:
        shutil.rmtree(source_dir)
    log.warning("workers: moved %d messages from %s into %s", copied, source_dir, target_dir)
    return copied


def _store(config: MtaConfig, directory: Path) -> JournalStore:
    return JournalStore(SpoolConfig(directory=directory, fsync=config.spool.fsync), Counter())

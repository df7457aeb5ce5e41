"""A private, throwaway PostgreSQL cluster for tests and benchmarks (the spool's shared
queue, ``[spool] backend = "postgresql"``, against a real server).

PostgreSQL refuses to run as root, and the tests run as root in CI, so the cluster is
made and run by the ``postgres`` user (``runuser -u postgres --``) when we are root, and
by ourselves otherwise. It lives in a fresh directory under the system temp directory
(pytest's own temp dirs are mode 0700 for root, closed to ``postgres``), listens on
127.0.0.1 at a free port and on a unix socket in that directory, and nowhere else.

Unlike pytest-postgresql (``pg_ctl -o "-F ..."``), fsync stays ON: commit timings taken
here are durable commits, and crash tests mean something. Only initdb's own bootstrap
files skip their sync (``--no-sync``): the directory is thrown away after the run anyway.

The bootstrap superuser is ``smtpx`` with a random password over TCP (scram), so another
local user cannot walk into the test server; the unix socket, in a 0700 directory, trusts.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cluster", "MissingPostgres", "find_bindir", "start_cluster"]

USER = "smtpx"  # the bootstrap superuser of the private cluster
OWNER = "postgres"  # who runs the server when we are root
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "on",  # on purpose: see the module docstring
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "60",
    "shared_buffers": "'64MB'",
    "logging_collector": "off",
    "log_min_messages": "warning",
}
_BIND_FAILED = re.compile(r"could not bind|could not create listen socket|already in use")


class MissingPostgres(RuntimeError):
    """PostgreSQL's server binaries (or a user to run them as root) are not here."""


def find_bindir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``: $SMTPX_PG_BIN, then
    ``pg_config --bindir``, then Debian's /usr/lib/postgresql/<newest>/bin."""
    candidates: list[Path] = []
    if os.environ.get("SMTPX_PG_BIN"):
        candidates.append(Path(os.environ["SMTPX_PG_BIN"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        run = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(run.stdout.strip()))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        candidates.extend(p / "bin" for p in reversed(versions))
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "psql")):
            return bindir
    raise MissingPostgres(
        "PostgreSQL server binaries not found (initdb, pg_ctl, postgres, psql): install Debian's "
        "postgresql package, or set SMTPX_PG_BIN"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A running private cluster; :meth:`stop` ends it and deletes its files."""

    bindir: Path
    root: Path
    port: int
    password: str
    as_owner: list[str] = field(default_factory=list)  # the runuser prefix, when root

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run one of the cluster's tools as the cluster's owner; raise with its output."""
        command = [*self.as_owner, str(self.bindir / argv[0]), *argv[1:]]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
        return done

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql over the unix socket (no driver needed)."""
        done = self.run(
            "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockets),
            "-p", str(self.port), "-U", USER, "-d", database, "-c", statement,
        )  # fmt: skip
        return done.stdout.strip()

    def crash(self) -> None:
        """Stop the server the way a crash or a power cut would (``-m immediate``: no
        shutdown checkpoint; the next start replays the WAL)."""
        self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30")

    def start(self) -> None:
        """Start it again on the same port (after :meth:`crash`)."""
        if not _start(self):
            raise RuntimeError(f"port {self.port} was taken meanwhile:\n{_log_tail(self)}")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(attempts: int = 5) -> Cluster:
    """initdb and start a private cluster (see the module docstring). A port taken between
    choosing and binding it is retried with another."""
    bindir = find_bindir()
    as_owner = _owner_prefix()
    root = Path(tempfile.mkdtemp(prefix="smtpx-pg-"))
    cluster = Cluster(bindir, root, 0, secrets.token_urlsafe(18), as_owner)
    try:
        _initdb(cluster)
        for _ in range(attempts):
            cluster.port = _free_port()
            if _start(cluster):
                return cluster
        raise RuntimeError(f"no free port after {attempts} tries:\n{_log_tail(cluster)}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _owner_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser is None:
        raise MissingPostgres("running as root, and runuser (util-linux) is not installed")
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        raise MissingPostgres(f"running as root, and there is no {OWNER!r} user") from None
    return [runuser, "-u", OWNER, "--"]


def _chown(path: Path, cluster: Cluster) -> None:
    if cluster.as_owner:
        shutil.chown(path, OWNER, OWNER)


def _initdb(cluster: Cluster) -> None:
    cluster.sockets.mkdir()
    secret = cluster.root / "pwfile"
    secret.write_text(cluster.password + "\n")
    secret.chmod(0o600)
    for path in (cluster.root, cluster.sockets, secret):
        _chown(path, cluster)
    cluster.run(
        "initdb", "-D", str(cluster.data), "-U", USER, "-E", "UTF8", "--no-locale",
        "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={secret}", "--no-sync",
    )  # fmt: skip
    secret.unlink()
    lines = [f"{key} = {value}" for key, value in SETTINGS.items()]
    lines.append(f"unix_socket_directories = '{cluster.sockets}'")
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write("\n# smtpx test cluster\n" + "\n".join(lines) + "\n")


def _start(cluster: Cluster) -> bool:
    """Start on ``cluster.port``; False when the port was taken meanwhile."""
    command = [
        *cluster.as_owner, str(cluster.bindir / "pg_ctl"), "start", "-D", str(cluster.data),
        "-l", str(cluster.log), "-w", "-t", "60", "-o", f"-p {cluster.port}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=cluster.root, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return True
    tail = _log_tail(cluster)
    if _BIND_FAILED.search(tail):
        return False
    raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}{done.stderr}\n{tail}")


def _log_tail(cluster: Cluster, lines: int = 20) -> str:
    try:
        return "\n".join(cluster.log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"

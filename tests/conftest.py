"""Shared test configuration."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, settings

from smtpx import maillog
from smtpx.testing.dns import DnsLab, Zone

# CI runs the property tests a bit harder than a developer's edit-test loop.
settings.register_profile("ci", max_examples=400, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(
    "ci" if os.environ.get("CI") or os.environ.get("SMTPX_REQUIRE_INTEROP") else "dev"
)

REQUIRE_INTEROP = os.environ.get("SMTPX_REQUIRE_INTEROP", "") not in ("", "0")


@pytest.fixture(scope="session", autouse=True)
def _runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every smtpx serve the tests start records itself in a directory of the test run's
    own, never in the developer's runtime directory; and the CLI under test does not find
    the developer's running smtpx (smtpx.cli.locate)."""
    before = os.environ.get("SMTPX_RUNTIME_DIR")
    os.environ["SMTPX_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("runtime"))
    yield
    if before is None:
        del os.environ["SMTPX_RUNTIME_DIR"]
    else:
        os.environ["SMTPX_RUNTIME_DIR"] = before


def require_tool(name: str, *needs: str) -> str:
    """The path of a peer tool that has every capability in ``needs``; skip the test when
    the tool or a capability is missing, or fail under SMTPX_REQUIRE_INTEROP=1 (as .ci/run
    sets), so CI never passes by skipping. A binary is not enough: swaks without Net::SSLeay
    runs, but cannot STARTTLS."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is None:
        _missing(f"interop peer {name!r} is not installed")
    lacking = [need for need in needs if need not in tool_capabilities(path)]
    if lacking:
        _missing(f"interop peer {name!r} ({path}) lacks {', '.join(lacking)}")
    return path


def _missing(message: str) -> NoReturn:
    if REQUIRE_INTEROP:
        pytest.fail(message + " (SMTPX_REQUIRE_INTEROP=1)")
    pytest.skip(message)


@functools.cache
def tool_capabilities(path: str) -> frozenset[str]:
    """What a peer tool says it can do: swaks's ``--support`` lines ("=== TLS supported"),
    curl's protocols and features (``smtps``, ``SSL``); nothing for other tools."""
    name = os.path.basename(path)
    if name == "swaks":
        run = subprocess.run([path, "--support"], capture_output=True, text=True, check=False)
        lines = (run.stdout + run.stderr).splitlines()
        found = (re.fullmatch(r"=== (.+) supported", line.strip()) for line in lines)
        return frozenset(match.group(1) for match in found if match)
    if name == "curl":
        run = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        words: set[str] = set()
        for line in run.stdout.splitlines():
            label, _, rest = line.partition(":")
            if label in ("Protocols", "Features"):
                words.update(rest.split())
        return frozenset(words)
    return frozenset()


@pytest.fixture
def dns_lab(tmp_path: Path) -> Iterator[Callable[..., DnsLab]]:
    """Start a real DNS lab (:mod:`smtpx.testing.dns`: NSD, and for signed zones ldns and a
    validating Unbound) on 127.0.0.1 for the zones given: ``lab = dns_lab(zone, ...)``.
    Skips (fails under SMTPX_REQUIRE_INTEROP=1) when the packages are missing."""
    labs: list[DnsLab] = []

    def start(*zones: Zone, validating: bool | None = None) -> DnsLab:
        require_tool("nsd")
        if validating or any(zone.signed for zone in zones):
            for tool in ("unbound", "ldns-keygen", "ldns-signzone"):
                require_tool(tool)
        lab = DnsLab(tmp_path / f"dns{len(labs)}", zones, validating=validating)
        labs.append(lab)
        return lab.start()

    yield start
    for lab in labs:
        lab.stop()


@pytest.fixture(scope="session")
def ca() -> Any:
    """A throwaway certificate authority (trustme): no key is ever committed."""
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_tls_context(ca: Any, *names: str) -> ssl.SSLContext:
    """A server context with a certificate for ``names`` issued by ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    return context


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only: CI runs as root)."""
    if os.geteuid() != 0:
        if REQUIRE_INTEROP:
            pytest.fail("the disk-full test needs root to mount a small tmpfs")
        pytest.skip("the disk-full test needs root to mount a small tmpfs")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, ...), or
    None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A real redis-server (Debian's) on 127.0.0.1 and a free port, in the foreground with
    its files in a temp dir (:class:`smtpx.testing.daemons.RedisServer`); the test may kill
    and restart it. Skips (fails under SMTPX_REQUIRE_INTEROP=1) without the package."""
    from smtpx.testing.daemons import RedisServer

    require_tool("redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The root logger's handlers and level, and the direct path, as before the test."""
    root = logging.getLogger()
    handlers, level, direct = list(root.handlers), root.level, maillog._DIRECT[0]
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    maillog._DIRECT[0] = direct

"""A DNS lab on loopback: real name servers answering for zones made from Python data.

::

    zone = Zone("example.test")
    zone.add("@", "MX", "10 mx.example.test.").add("mx", "A", "127.0.0.1")
    zone.txt("s1._domainkey", "v=DKIM1; k=ed25519; p=...")   # quoted, split at 255 octets
    signed = Zone("dane.test", signed=True).add("_25._tcp.mx", "TLSA", "3 1 1 ab12...")
    with DnsLab(tmp_path / "dns", [zone, signed]) as lab:
        resolver = lab.resolver()                  # dnspython, asking NSD on 127.0.0.1:port
        secure = lab.resolver(validating=True)     # asking Unbound, which validates: AD=1
        ...
        lab.update(zone.txt("_dmarc", "v=DMARC1; p=reject"))   # served again, waited for

:class:`DnsLab` runs Debian's ``nsd`` (authoritative only: small, starts in a tenth of a
second, runs as any user on a high port) on ``127.0.0.1`` and a free port. Zones marked
``signed`` are signed with ``ldns-signzone`` (fresh ECDSA P-256 keys per lab, signatures
made at every write, so they never expire under a long-lived fixture), and an ``unbound``
validating resolver is started beside NSD with a trust anchor for each signed zone: its
answers for them carry the AD bit, answers for the other zones are insecure (no AD), and
a tampered signed zone gives SERVFAIL. Nothing leaves loopback: Unbound knows only the lab
(each zone as a stub, everything else forwarded to NSD, which refuses it) and sends from
127.0.0.1. Tools built on libunbound (OpenDKIM's ``ResolverConfiguration``) get a client
configuration that points them at the lab too: :meth:`DnsLab.libunbound_conf`.

Every daemon runs in the foreground in its own process group and is stopped by its id.
When a tool is missing or a daemon does not come up, :class:`DnsLabUnavailable` says why.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

__all__ = ["DnsLab", "DnsLabUnavailable", "Record", "Zone", "txt_data"]

START_TIMEOUT = 20.0  # seconds for a daemon to answer, or a reload to be served
SETTLED = 20  # answers in a row with the new serial before a reload counts as done
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


class DnsLabUnavailable(Exception):
    """The lab could not be set up or started (the message says why)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record: ``name`` relative to the zone (``"@"`` is the apex) or absolute
    with a final dot; ``data`` in zone-file (presentation) form."""

    name: str
    type: str
    data: str
    ttl: int = 300

    def line(self) -> str:
        return f"{self.name}\t{self.ttl}\tIN\t{self.type.upper()}\t{self.data}"


def txt_data(text: str | bytes) -> str:
    """TXT record data in zone-file form: quoted character-strings of at most 255 octets
    each (a DKIM key of 2048 bits needs two), with ``"`` and ``\\`` escaped."""
    raw = text.encode() if isinstance(text, str) else text
    chunks = [raw[at : at + 255] for at in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + _escape(chunk) + '"' for chunk in chunks)


def _escape(chunk: bytes) -> str:
    out = []
    for octet in chunk:
        char = chr(octet)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= octet < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{octet:03d}")
    return "".join(out)


@dataclass
class Zone:
    """A zone served by the lab: its origin (``"example.test"``), its records, and whether
    it is DNSSEC-signed. The lab adds the SOA and NS records."""

    origin: str
    records: list[Record] = field(default_factory=list)
    signed: bool = False

    def __post_init__(self) -> None:
        self.origin = self.origin.lower().rstrip(".")

    def add(self, name: str, type: str, data: str, ttl: int = 300) -> Zone:
        self.records.append(Record(name, type, data, ttl))
        return self

    def txt(self, name: str, text: str | bytes, ttl: int = 300) -> Zone:
        """A TXT record from its plain text (see :func:`txt_data`)."""
        return self.add(name, "TXT", txt_data(text), ttl)

    def remove(self, name: str, type: str | None = None) -> Zone:
        """Drop the records of ``name`` (of ``type`` only, when given)."""
        self.records = [
            r
            for r in self.records
            if not (r.name == name and (type is None or r.type.upper() == type.upper()))
        ]
        return self

    def zone_file(self, serial: int) -> str:
        # Negative answers are cached for 1 second at most: tests change zones.
        lines = [
            f"$ORIGIN {self.origin}.",
            f"@\t60\tIN\tSOA\tlocalhost. hostmaster.localhost. {serial} 3600 600 86400 1",
            "@\t60\tIN\tNS\tlocalhost.",
            *(record.line() for record in self.records),
        ]
        return "\n".join(lines) + "\n"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=_SBIN)
    if found is None:
        raise DnsLabUnavailable(f"{name} is not installed (see .ci/run for the packages)")
    return found


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (name servers listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise DnsLabUnavailable("no port free for both UDP and TCP on 127.0.0.1")


class _Daemon:
    """A foreground daemon in its own process group, with its log file."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log.with_suffix(".out"), "wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def said(self) -> str:
        text = ""
        for path in (self.log, self.log.with_suffix(".out")):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return " / ".join(text.strip().splitlines()[-6:])

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        # NSD's children (server, xfrd) are in the group this process leads.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


class DnsLab:
    """NSD (and, for signed zones or with ``validating=True``, a validating Unbound) on
    127.0.0.1, serving ``zones`` from files under ``root``. Start it with :meth:`start`
    or ``with``; :attr:`port` is NSD's, :attr:`resolver_port` Unbound's (0 without)."""

    def __init__(
        self, root: Path, zones: Iterable[Zone] = (), *, validating: bool | None = None
    ) -> None:
        self.root = root
        self.zones: dict[str, Zone] = {}
        for zone in zones:
            self.zones[zone.origin] = zone
        self.validating = (
            any(z.signed for z in self.zones.values()) if validating is None else validating
        )
        self.port = 0
        self.resolver_port = 0
        self.serial = 0
        self.trust_anchors: dict[str, str] = {}  # origin -> its DS record
        self._keys: dict[str, list[str]] = {}  # origin -> key file bases (KSK, ZSK)
        self._nsd: _Daemon | None = None
        self._unbound: _Daemon | None = None

    # -- life ----------------------------------------------------------------------------

    def __enter__(self) -> DnsLab:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> DnsLab:
        if not self.zones:
            raise DnsLabUnavailable("a DNS lab needs at least one zone")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._write_zones()
            self._start_nsd()
            if self.validating:
                self._start_unbound()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for daemon in (self._unbound, self._nsd):
            if daemon is not None:
                daemon.stop()
        self._unbound = self._nsd = None

    def update(self, *zones: Zone) -> None:
        """Serve ``zones`` (changed or new; signed ones are signed again) and wait until NSD
        answers with the new serial. New zones restart the daemons on the same ports."""
        if self._nsd is None:
            raise DnsLabUnavailable("the lab is not running")
        known = set(self.zones)
        for zone in zones:
            self.zones[zone.origin] = zone
        self._write_zones()
        if set(self.zones) == known:
            self._reload([z.origin for z in zones])
            return
        self.stop()
        self._start_nsd(keep_port=True)
        if self.validating:
            self._start_unbound(keep_port=True)

    def _reload(self, origins: list[str]) -> None:
        if self._nsd is None:
            raise DnsLabUnavailable("the lab is not running")
        os.kill(self._nsd_main_pid(), signal.SIGHUP)  # NSD rereads changed zone files
        for origin in origins:
            self._wait_for_serial(origin)

    def tamper(self, origin: str, old: str, new: str) -> None:
        """Replace ``old`` with ``new`` in the served (signed) file of ``origin`` after
        signing, and serve it: the records no longer match their signatures, so a
        validating resolver answers SERVFAIL for them (DNSSEC "bogus"). The SOA serial
        goes up too (its signature breaks with it), so the reload can be waited for."""
        zone = self.zones[origin.lower().rstrip(".")]
        path = self._served_file(zone)
        text = path.read_text()
        if old not in text:
            raise ValueError(f"{old!r} is not in {path.name}")
        self.serial += 1
        soa = re.compile(r"(\tSOA\t\S+ \S+ )(\d+)")
        path.write_text(soa.sub(rf"\g<1>{self.serial}", text.replace(old, new), count=1))
        stamp = time.time() + self.serial
        os.utime(path, (stamp, stamp))
        self._reload([zone.origin])

    # -- clients -------------------------------------------------------------------------

    def resolver(
        self, *, validating: bool = False, lifetime: float = 5.0
    ) -> dns.asyncresolver.Resolver:
        """A dnspython async resolver asking the lab: NSD, or with ``validating`` Unbound
        (with the DO bit, so ``answer.response.flags & dns.flags.AD`` tells "secure")."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        self._point(resolver, validating=validating, lifetime=lifetime)
        return resolver

    def blocking_resolver(
        self, *, validating: bool = False, lifetime: float = 5.0
    ) -> dns.resolver.Resolver:
        """The same, for code that resolves synchronously (in a thread)."""
        resolver = dns.resolver.Resolver(configure=False)
        self._point(resolver, validating=validating, lifetime=lifetime)
        return resolver

    def _point(
        self, resolver: dns.resolver.BaseResolver, *, validating: bool, lifetime: float
    ) -> None:
        if validating and not self.resolver_port:
            raise DnsLabUnavailable("this lab has no validating resolver (no signed zone)")
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.resolver_port if validating else self.port
        resolver.lifetime = lifetime
        resolver.timeout = min(lifetime, 2.0)
        if validating:
            resolver.use_edns(0, dns.flags.DO, 1232)

    def libunbound_conf(self) -> Path:
        """A configuration for programs built on libunbound (OpenDKIM's
        ``ResolverConfiguration``): the lab's zones as stubs of NSD, nothing else."""
        path = self.root / "libunbound.conf"
        path.write_text(self._unbound_conf(server=False))
        return path

    # -- zones ---------------------------------------------------------------------------

    def _write_zones(self) -> None:
        self.serial += 1
        for zone in self.zones.values():
            path = self.root / f"{zone.origin}.zone"
            path.write_text(zone.zone_file(self.serial))
            if zone.signed:
                self._sign(zone.origin, path)
            # NSD reloads a file whose mtime changed: make sure it did.
            served = self._served_file(zone)
            stamp = time.time() + self.serial
            os.utime(served, (stamp, stamp))

    def _served_file(self, zone: Zone) -> Path:
        suffix = ".zone.signed" if zone.signed else ".zone"
        return self.root / f"{zone.origin}{suffix}"

    def _sign(self, origin: str, path: Path) -> None:
        keys = self._keys.get(origin)
        if keys is None:
            keygen = _tool("ldns-keygen")
            ksk = self._run([keygen, "-a", "ECDSAP256SHA256", "-k", origin]).strip()
            zsk = self._run([keygen, "-a", "ECDSAP256SHA256", origin]).strip()
            keys = self._keys[origin] = [ksk, zsk]
            ds = (self.root / f"{ksk}.ds").read_text().split()
            self.trust_anchors[origin] = " ".join(ds)
        self._run([_tool("ldns-signzone"), "-o", origin + ".", path.name, *keys])

    def _run(self, argv: list[str]) -> str:
        result = subprocess.run(
            argv, cwd=self.root, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            said = (result.stdout + result.stderr).strip()[-800:]
            raise DnsLabUnavailable(f"{' '.join(argv)} exited with {result.returncode}: {said}")
        return result.stdout

    # -- NSD -----------------------------------------------------------------------------

    def _write_nsd_conf(self) -> Path:
        root = self.root
        lines = [
            "server:",
            f"  ip-address: 127.0.0.1@{self.port}",
            "  do-ip6: no",
            '  database: ""',
            '  username: ""',  # keep the user it was started as (root or not)
            f'  zonesdir: "{root}"',
            f'  pidfile: "{root}/nsd.pid"',
            f'  xfrdfile: "{root}/xfrd.state"',
            f'  zonelistfile: "{root}/zone.list"',
            f'  logfile: "{root}/nsd.log"',
            "  server-count: 1",
            "  verbosity: 1",
            "remote-control:",
            "  control-enable: no",
        ]
        for zone in self.zones.values():
            lines += ["zone:", f'  name: "{zone.origin}"']
            lines.append(f'  zonefile: "{self._served_file(zone).name}"')
        path = root / "nsd.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _start_nsd(self, *, keep_port: bool = False) -> None:
        nsd = _tool("nsd")
        failures = []
        for _ in range(3):  # the free port can be taken between the check and the bind
            self.port = self.port if keep_port else _free_port()
            conf = self._write_nsd_conf()
            (self.root / "nsd.pid").unlink(missing_ok=True)
            daemon = _Daemon("nsd", [nsd, "-d", "-c", str(conf)], self.root / "nsd.log")
            if self._wait_for(daemon, self.port, recursion=False):
                self._nsd = daemon
                return
            failures.append(daemon.said())
            daemon.stop()
        raise DnsLabUnavailable(f"nsd did not start: {' | '.join(failures)}")

    def _nsd_main_pid(self) -> int:
        # NSD's main process (the one that reloads) writes the pid file.
        assert self._nsd is not None
        try:
            return int((self.root / "nsd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return self._nsd.process.pid

    def _wait_for_serial(self, origin: str) -> None:
        """Until NSD answers only with the new serial. During a reload the old server
        process answers on the same socket beside the new one until it quits: one new
        answer is not enough, so :data:`SETTLED` in a row are asked for."""
        deadline = time.monotonic() + START_TIMEOUT
        in_a_row = 0
        while time.monotonic() < deadline:
            serial = self._soa_serial(origin, self.port, recursion=False)
            in_a_row = in_a_row + 1 if serial == self.serial else 0
            if in_a_row >= SETTLED:
                return
            if not in_a_row:
                time.sleep(0.02)
        raise DnsLabUnavailable(f"nsd did not serve serial {self.serial} of {origin} in time")

    # -- Unbound -------------------------------------------------------------------------

    def _unbound_conf(self, *, server: bool) -> str:
        root = self.root
        lines = ["server:"]
        if server:
            lines += [
                f"  interface: 127.0.0.1@{self.resolver_port}",
                "  do-daemonize: no",
                f'  pidfile: "{root}/unbound.pid"',
                f'  logfile: "{root}/unbound.log"',
                "  num-threads: 1",
                "  access-control: 127.0.0.0/8 allow",
                "  val-log-level: 2",
                # Always ask NSD afresh: tests change zones under a running resolver.
                "  cache-max-ttl: 0",
                "  cache-max-negative-ttl: 0",
                "  verbosity: 1",
            ]
        lines += [
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{root}"',
            "  use-syslog: no",
            "  do-ip6: no",
            "  outgoing-interface: 127.0.0.1",
            "  do-not-query-localhost: no",  # the stubs are on 127.0.0.1
            '  module-config: "validator iterator"',
        ]
        # test., invalid., 127.in-addr.arpa. ... are static empty zones unless told.
        lines += [f'  local-zone: "{name}." nodefault' for name in self._ancestors()]
        lines += [f'  trust-anchor: "{ds}"' for ds in self.trust_anchors.values()]
        for origin in self.zones:
            lines += ["stub-zone:", f'  name: "{origin}."', f"  stub-addr: 127.0.0.1@{self.port}"]
        # Anything else goes to NSD too (which refuses it): never to the root servers.
        lines += ["forward-zone:", '  name: "."', f"  forward-addr: 127.0.0.1@{self.port}"]
        return "\n".join(lines) + "\n"

    def _ancestors(self) -> list[str]:
        names: dict[str, None] = {}
        for origin in self.zones:
            labels = origin.split(".")
            for at in range(len(labels)):
                names.setdefault(".".join(labels[at:]), None)
        return list(names)

    def _start_unbound(self, *, keep_port: bool = False) -> None:
        unbound = _tool("unbound")
        failures = []
        for _ in range(3):
            self.resolver_port = self.resolver_port if keep_port else _free_port()
            conf = self.root / "unbound.conf"
            conf.write_text(self._unbound_conf(server=True))
            argv = [unbound, "-d", "-c", str(conf)]
            daemon = _Daemon("unbound", argv, self.root / "unbound.log")
            if self._wait_for(daemon, self.resolver_port, recursion=True):
                self._unbound = daemon
                return
            failures.append(daemon.said())
            daemon.stop()
        self.resolver_port = 0
        raise DnsLabUnavailable(f"unbound did not start: {' | '.join(failures)}")

    # -- probing -------------------------------------------------------------------------

    def _wait_for(self, daemon: _Daemon, port: int, *, recursion: bool) -> bool:
        """Whether ``daemon`` answers for every zone (each at the current serial) before
        it exits or time runs out. Every zone, not the first only: after a restart for a
        new zone, answers for the old ones prove nothing about the new one."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(self.zones)
        while daemon.alive() and time.monotonic() < deadline:
            waiting = [
                origin
                for origin in waiting
                if self._soa_serial(origin, port, recursion=recursion) != self.serial
            ]
            if not waiting:
                return True
            time.sleep(0.02)
        return False

    @staticmethod
    def _soa_serial(origin: str, port: int, *, recursion: bool) -> int | None:
        query = dns.message.make_query(origin + ".", dns.rdatatype.SOA)
        if not recursion:
            query.flags &= ~dns.flags.RD
        try:
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.05)
        except (dns.exception.DNSException, OSError):
            return None
        if response.rcode() != dns.rcode.NOERROR:
            return None
        for rrset in response.answer:
            for rdata in rrset:
                serial = getattr(rdata, "serial", None)
                if isinstance(serial, int):
                    return serial
        return None

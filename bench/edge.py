"""What the MX edge checks cost ``smtpx serve``'s intake, per message: PROXY protocol
behind HAProxy, DNSBL lookups, rate limits (local and in Redis), greylisting (memory and
Redis), and all of them together, against the same server without them, in one run.

    .venv/bin/python bench/edge.py [--messages 2000] [--size 4096] [--sessions 20]
                                   [--rounds 3] [--quick] [--cases plain milter ...]

Postfix's ``smtp-source`` sends ``--messages`` messages of ``--size`` octets over
``--sessions`` kept connections (``-d``) from 127.0.0.1 (not a trusted network here, so
every check applies) to a local domain (delivered to a maildir, alike in every case;
spool fsync "never", so the disk does not drown the differences). Per case, the table
gives messages/s (smtp-source's wall time) and the CPU time the ``smtpx serve`` child
spent per message (user + system, from /proc), the figure the checks add to.

* ``haproxy``: through Debian's haproxy (TCP mode), no PROXY header: the hop alone;
  ``proxy-v2``: the same with ``send-proxy-v2`` to a ``proxied`` listener.
* ``dnsbl``: two lists (a block list and an allow list) in a DNS lab (NSD on 127.0.0.1)
  that do not name the client; the resolver's cache answers after the first session.
* ``rate-local`` / ``rate-redis``: two rules (per client, per sender domain; limits far
  above the run) counted in memory, or in a redis-server on 127.0.0.1 (a round trip and a
  Lua script at each RCPT and DATA, a read at MAIL).
* ``grey-memory`` / ``grey-redis``: greylisting, the triplet passed beforehand (one
  transaction and a wait of the 0.05 s delay), so each RCPT finds it known.
* ``all``: proxy-v2, dnsbl, rate-redis and grey-redis together.
* ``milter``: one ``[[milters]]`` entry, Debian's OpenDKIM signing every message (the
  client, 127.0.0.1, is in its default InternalHosts): the milter protocol's round trips
  (connect, HELO, MAIL, RCPT, DATA, each header, the body, the end) and applying the
  header it adds. Not part of ``all``.

Each run has Redis keys of its own (``[redis] key_prefix``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from benchlib import free_port, read_reply, smtpx_serve, tool, wait_listening
from smtpx.testing.daemons import HAProxy, RedisServer
from smtpx.testing.dns import DnsLab, Zone

SENDER = "alice@sender.example"
LOCAL = "sink.example"
CASES = (
    "plain", "haproxy", "proxy-v2", "dnsbl", "rate-local", "rate-redis", "grey-memory",
    "grey-redis", "all", "milter",
)  # fmt: skip


def sections(case: str, redis: str, dns_port: int, milter: str = "") -> str:
    text = ""
    if milter:
        text += f'[[milters]]\nname = "opendkim"\naddress = "{milter}"\n'
    if case in ("dnsbl", "all"):
        text += '[[dnsbl.zones]]\nzone = "bl.example"\n[[dnsbl.zones]]\nzone = "wl.example"\n'
        text += "weight = -1\n"
    if case.startswith("rate") or case == "all":
        for by, what in (("client", "messages"), ("sender_domain", "recipients")):
            text += f'[[rate_limits.rules]]\nby = "{by}"\n{what} = 1000000\nwindow = "1h"\n'
    if case.startswith("grey") or case == "all":
        text += "[greylist]\nenabled = true\ndelay = 0.05\n"
    if case.endswith("redis") or case == "all":
        text += f'[redis]\nurl = "{redis}"\nkey_prefix = "{case}-{time.monotonic()}:"\n'
    return text + f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\n'


def config(
    root: Path, case: str, port: int, redis: str, dns_port: int, *, milter: str = ""
) -> Path:
    server = ""
    if case in ("proxy-v2", "all"):
        server = f'proxied = ["127.0.0.1:{port}"]\nproxy_from = ["127.0.0.1/32"]\n'
    text = (
        'hostname = "mx.bench.example"\n'
        f'[server]\nlisten = ["127.0.0.1:{port}"]\n{server}'
        f'[relay]\nlocal_domains = ["{LOCAL}"]\ntrusted_networks = []\n'
        f'[spool]\ndir = "{root / "spool"}"\nfsync = "never"\n'
        f'[local]\nmaildir = "{root / "mail"}"\n'
        f'[control]\nsocket = "{root / "control.sock"}"\n' + sections(case, redis, dns_port, milter)
    )
    path = root / "smtpx.toml"
    path.write_text(text)
    return path


def wait_for_port(port: int, proxied: bool) -> None:
    if not proxied:
        wait_listening(port, 60)
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a probe must send a header: a LOCAL one
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
            read_reply(s)
            return
        time.sleep(0.05)
    raise RuntimeError(f"smtpx did not come up on {port}")


@contextlib.contextmanager
def opendkim(root: Path) -> Iterator[str]:
    """OpenDKIM in the foreground, signing for the sender's domain with a fresh key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    root.mkdir()
    (root / "key.pem").write_bytes(pem)
    port = free_port()
    conf = root / "opendkim.conf"
    conf.write_text(
        f"Syslog no\nMode s\nDomain {SENDER.split('@')[1]}\nSelector bench\n"
        f"KeyFile {root / 'key.pem'}\nSocket inet:{port}@127.0.0.1\nRequireSafeKeys false\n"
        + ("UserID root\n" if os.geteuid() == 0 else "")
    )
    log = (root / "opendkim.log").open("wb")
    argv = [tool("opendkim"), "-f", "-x", str(conf)]
    process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_listening(port, 30)
        yield f"inet:127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def pass_triplet(port: int) -> None:
    """One transaction greylisted, then the delay: the run's triplet is known."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        read_reply(s)
        for line in (b"HELO bench\r\n", f"MAIL FROM:<{SENDER}>\r\n".encode()):
            s.sendall(line)
            read_reply(s)
        s.sendall(f"RCPT TO:<user@{LOCAL}>\r\n".encode())
        assert read_reply(s).startswith(b"451"), "greylisting did not defer"
    time.sleep(0.1)


def run_case(
    root: Path, case: str, redis: str, dns_port: int, args: argparse.Namespace
) -> tuple[float, float]:
    root.mkdir()
    port = free_port()
    proxied = case in ("proxy-v2", "all")
    with contextlib.ExitStack() as stack:
        milter = stack.enter_context(opendkim(root / "opendkim")) if case == "milter" else ""
        process = stack.enter_context(
            smtpx_serve(
                config(root, case, port, redis, dns_port, milter=milter),
                lambda: wait_for_port(port, proxied),
            )
        )
        target = port
        if case in ("haproxy", "proxy-v2", "all"):
            send = "send-proxy-v2" if proxied else ""
            proxy = stack.enter_context(HAProxy(root / "haproxy", backend_port=port, send=send))
            target = proxy.port
        if case.startswith("grey") or case == "all":
            pass_triplet(target)
        argv = [tool("smtp-source"), "-s", str(args.sessions), "-m", str(args.messages), "-d"]
        argv += ["-l", str(args.size), "-f", SENDER, "-t", f"user@{LOCAL}", "-M", "bench.example"]
        before = cpu_seconds(process.pid)
        began = time.perf_counter()
        subprocess.run([*argv, f"127.0.0.1:{target}"], check=True, timeout=1800)
        rate = args.messages / (time.perf_counter() - began)
        cpu = (cpu_seconds(process.pid) - before) / args.messages * 1e6
    return rate, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 messages, 1 round")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=CASES, help="a subset")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 500, 1
    cases = ["plain", *(case for case in CASES if case in args.cases and case != "plain")]
    results: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
    lists = [Zone("bl.example"), Zone("wl.example")]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with DnsLab(root / "dns", lists) as lab, RedisServer(root / "redis") as redis:
            for round_ in range(args.rounds):
                for case in cases:
                    where = root / f"{case}-{round_}"
                    rate, cpu = run_case(where, case, redis.url, lab.port, args)
                    results[case].append((rate, cpu))
                    print(f"round {round_ + 1}: {case:<12} {rate:7.0f} msg/s {cpu:7.0f} us CPU/msg")
    plain = statistics.median(cpu for _, cpu in results["plain"])
    print(
        f"{args.messages} x {args.size} octets, {args.sessions} sessions, median of {args.rounds}:"
    )
    for case, values in results.items():
        rate = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"  {case:<12} {rate:7.0f} msg/s {cpu:7.0f} us CPU/msg ({cpu - plain:+5.0f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What judging inbound mail costs ``smtpx serve``'s intake: messages/s with ``[inbound]``
off and on (SPF for MAIL FROM and HELO, DKIM, ARC, DMARC, Authentication-Results), in the
same run.

    .venv/bin/python bench/inbound.py [--messages 5000] [--size 4096] [--sessions 20]
                                      [--rounds 3] [--quick]

A DNS lab (``smtpx.testing.dns``: NSD on 127.0.0.1) serves the sender's domain: SPF
``ip4:127.0.0.1 -all``, DMARC ``p=reject``, an RSA-2048 DKIM key; ``[dns]`` points
``smtpx serve`` (a child process, fsync "batch" as shipped) at it, so its resolver's cache
answers after the first message, as a caching resolver would for a busy domain. Postfix's
``smtp-source`` sends ``--messages`` copies of one DKIM-signed message (``-F``) from
127.0.0.1, not a trusted network, to a local domain (delivered to a maildir, in both
cases alike); messages/s is smtp-source's wall time. Cases alternate, ``--rounds`` times
each; medians and the ratio to "off" are printed, with the verification alone (DKIM and
ARC, one thread) per message. Each run checks the maildir: every message carries
``dkim=pass`` and ``dmarc=pass`` when on, no Authentication-Results when off.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dkim

from benchlib import free_port, smtpx_serve, tool, wait_listening
from smtpx.mta.dkim import generate_key, parse_key
from smtpx.mta.inbound.dkimverify import verify_arc, verify_dkim
from smtpx.mta.inbound.lookup import Answer, Outcome
from smtpx.testing.dns import DnsLab, Zone

DOMAIN = "sender.example"
SENDER = f"alice@{DOMAIN}"
HELO = f"mx.{DOMAIN}"
LOCAL = "sink.example"
CASES = ("off", "on")


def zone(public_record: str) -> Zone:
    z = Zone("example")
    z.txt("sender", "v=spf1 ip4:127.0.0.1 -all").txt("mx.sender", "v=spf1 ip4:127.0.0.1 -all")
    z.txt("_dmarc.sender", "v=DMARC1; p=reject").txt("s1._domainkey.sender", public_record)
    return z


def signed_message(private: bytes, size: int) -> bytes:
    line = b"x" * 70 + b"\r\n"
    head = (
        f"From: {SENDER}\r\nTo: user@{LOCAL}\r\nSubject: bench\r\n"
        f"Date: Thu, 03 Dec 2026 09:00:00 +0000\r\nMessage-ID: <bench@{DOMAIN}>\r\n\r\n"
    ).encode()
    message = head + line * max(1, (size - len(head)) // len(line))
    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"from"]
    signature = dkim.sign(
        message, b"s1", DOMAIN.encode(), private, canonicalize=(b"relaxed", b"relaxed"),
        include_headers=headers,
    )  # fmt: skip
    return bytes(signature) + message


def config(root: Path, case: str, port: int, dns_port: int) -> Path:
    inbound = '"smtp"' if case == "on" else ""
    text = (
        'hostname = "mx.bench.example"\n'
        f'[server]\nlisten = ["127.0.0.1:{port}"]\n'
        f'[relay]\nlocal_domains = ["{LOCAL}"]\ntrusted_networks = []\n'
        f'[spool]\ndir = "{root / "spool"}"\n'
        f'[local]\nmaildir = "{root / "mail"}"\n'
        f'[control]\nsocket = "{root / "control.sock"}"\n'
        f"[inbound]\nlisteners = [{inbound}]\n"
        f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\n'
    )
    path = root / "smtpx.toml"
    path.write_text(text)
    return path


def run_case(
    root: Path, case: str, message_file: Path, dns_port: int, args: argparse.Namespace
) -> float:
    root.mkdir()
    port = free_port()
    with smtpx_serve(config(root, case, port, dns_port), lambda: wait_listening(port, 60)):
        argv = [tool("smtp-source"), "-s", str(args.sessions), "-m", str(args.messages)]
        argv += ["-F", str(message_file), "-d", "-M", HELO, "-f", SENDER, "-t", f"user@{LOCAL}"]
        began = time.perf_counter()
        subprocess.run([*argv, f"127.0.0.1:{port}"], check=True, timeout=1800)
        rate = float(args.messages) / (time.perf_counter() - began)
        check_maildir(root / "mail" / LOCAL / "user" / "new", case, args.messages)
    return rate


def check_maildir(new: Path, case: str, count: int) -> None:
    """Wait for local delivery, then check every message's Authentication-Results."""
    deadline = time.monotonic() + 600
    while len(list(new.glob("*"))) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    judged = 0
    for path in new.iterdir():
        head = path.read_bytes().split(b"\n\n", 1)[0]
        if b"Authentication-Results: mx.bench.example;" in head:
            if b"dkim=pass" not in head or b"dmarc=pass" not in head:
                sys.exit(f"{case}: {path.name} was not judged a pass:\n{head.decode()}")
            judged += 1
    expected = count if case == "on" else 0
    if judged != expected:
        sys.exit(f"{case}: {judged} messages judged, expected {expected}")


def verify_alone(message: bytes, record: bytes, count: int = 500) -> float:
    """Microseconds per message for the DKIM and ARC verification (one thread)."""
    keys = {f"s1._domainkey.{DOMAIN}.".encode(): Answer(Outcome.FOUND, (record,))}
    began = time.perf_counter()
    for _ in range(count):
        assert verify_dkim(message, keys)[0].result == "pass"
        verify_arc(message, keys)
    return (time.perf_counter() - began) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1000 messages, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 1000, 1
    rates: dict[str, list[float]] = {case: [] for case in CASES}
    key = parse_key(generate_key("rsa"))
    message = signed_message(key.private, args.size)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        message_file = root / "message.txt"  # smtp-source adds the CR of each line
        message_file.write_bytes(message.replace(b"\r\n", b"\n"))
        with DnsLab(root / "dns", [zone(key.txt_record())]) as lab:
            for round_ in range(args.rounds):
                for case in CASES:
                    rate = run_case(root / f"{case}-{round_}", case, message_file, lab.port, args)
                    rates[case].append(rate)
                    print(f"round {round_ + 1}: {case:<4} {rate:8.0f} msg/s", flush=True)
        alone = verify_alone(message, key.txt_record().encode())
    off = statistics.median(rates["off"])
    print(f"{args.messages} x {len(message)} octets, {args.sessions} sessions, median of "
          f"{args.rounds}:")  # fmt: skip
    for case, values in rates.items():
        rate = statistics.median(values)
        print(f"  {case:<4} {rate:8.0f} msg/s  {rate / off:5.2f} x off")
    print(f"  DKIM + ARC verification alone: {alone:6.0f} us/msg")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What DKIM signing costs ``smtpx serve``'s intake: messages/s with signing off, with one
RSA-2048 key, and with RSA-2048 + Ed25519 (dual signatures), in the same run.

    .venv/bin/python bench/signing.py [--messages 5000] [--size 4096] [--sessions 20]
                                   [--rounds 3] [--quick]

Each case starts ``smtpx serve`` (a child process, fsync "batch" as shipped, delivery
paused: the only route leads to a port where nothing listens, retried after 1h) and
sends ``--messages`` messages from ``bench@bench.example`` (a signing domain when signing
is on) over ``--sessions`` sessions with Postfix's ``smtp-source``; messages/s is
smtp-source's wall time. Cases alternate, ``--rounds`` times each; the medians and the
ratios to "off" are printed, with the signing alone (``DkimSigner.sign``, one thread) per
message. Each run checks its spool: every message signed when signing is on, none when off.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, smtpx_serve, tool, wait_listening
from smtpx.mta.dkim import DkimSigner, SigningKey, generate_key, parse_key

DOMAIN = "bench.example"
SENDER = f"bench@{DOMAIN}"
CASES = {"off": (), "rsa": ("rsa",), "rsa+ed25519": ("rsa", "ed25519")}


def config(root: Path, case: str, port: int, keys: dict[str, Path]) -> Path:
    signing = "".join(
        f'[[dkim.sign]]\ndomain = "{DOMAIN}"\nselector = "{algorithm}"\n'
        f'key_file = "{keys[algorithm]}"\n'
        for algorithm in CASES[case]
    )
    text = (
        'hostname = "mta.bench.example"\n'
        f'[server]\nlisten = ["127.0.0.1:{port}"]\n'
        f'[spool]\ndir = "{root / "spool"}"\nretry_intervals = ["1h"]\n'
        f'[routing]\nsmarthost = "127.0.0.1:{free_port()}"\n'
        f'[control]\nsocket = "{root / "control.sock"}"\n' + signing
    )
    path = root / "smtpx.toml"
    path.write_text(text)
    return path


def run_case(root: Path, case: str, keys: dict[str, Path], args: argparse.Namespace) -> float:
    root.mkdir()
    port = free_port()
    with smtpx_serve(config(root, case, port, keys), lambda: wait_listening(port, 60)):
        argv = [tool("smtp-source"), "-s", str(args.sessions), "-m", str(args.messages)]
        argv += ["-l", str(args.size), "-d", "-f", SENDER, "-t", "sink@example.net"]
        began = time.perf_counter()
        subprocess.run([*argv, f"127.0.0.1:{port}"], check=True, timeout=1800)
        rate = float(args.messages) / (time.perf_counter() - began)
    check_spool(root / "spool", case, args.messages)
    return rate


def check_spool(spool: Path, case: str, count: int) -> None:
    """Every message carries one signature per key (counted in the journal's segments)."""
    data = b"".join(p.read_bytes() for p in spool.rglob("*") if p.is_file())
    found = data.count(b"DKIM-Signature: v=1;")
    expected = count * len(CASES[case])
    if found != expected:
        sys.exit(f"{case}: {found} signatures in the spool, expected {expected}")


def sign_alone(keys: dict[str, Path], size: int, count: int = 500) -> dict[str, float]:
    """Microseconds per message for DkimSigner.sign with each case's keys."""
    line = b"x" * 70 + b"\r\n"
    message = f"From: {SENDER}\r\nTo: a@example.net\r\nSubject: s\r\n\r\n".encode()
    message += line * max(1, (size - len(message)) // len(line))
    costs = {}
    for case, algorithms in CASES.items():
        if not algorithms:
            continue
        signer = DkimSigner(
            [SigningKey(DOMAIN, a, parse_key(keys[a].read_bytes())) for a in algorithms]
        )
        began = time.perf_counter()
        for _ in range(count):
            signer.sign(message)
        costs[case] = (time.perf_counter() - began) / count * 1e6
    return costs


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
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        keys = {}
        for algorithm in ("rsa", "ed25519"):
            keys[algorithm] = root / f"{algorithm}.key"
            keys[algorithm].write_bytes(generate_key(algorithm))
        for round_ in range(args.rounds):
            for case in CASES:
                rate = run_case(root / f"{case}-{round_}", case, keys, args)
                rates[case].append(rate)
                print(f"round {round_ + 1}: {case:<12} {rate:8.0f} msg/s", flush=True)
        alone = sign_alone(keys, args.size)
    off = statistics.median(rates["off"])
    print(
        f"{args.messages} x {args.size} octets, {args.sessions} sessions, median of {args.rounds}:"
    )
    for case, values in rates.items():
        rate = statistics.median(values)
        cost = f"  signing alone {alone[case]:7.0f} us/msg" if case in alone else ""
        print(f"  {case:<12} {rate:8.0f} msg/s  {rate / off:5.2f} x off{cost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Large messages into ``smtpx serve``: intake MB/s and what they cost in memory.

    .venv/bin/python bench/large.py [--sessions 8] [--size 34000000] [--rounds 3]
                                    [--baseline PYTHON]

``smtp-source -s N -m N -l SIZE`` sends N messages of SIZE octets at once, one per
session, to a fresh ``smtpx serve`` (fsync "batch", delivery paused: the next hop is a
closed port). Reported, median of the rounds: intake MB/s (all the octets over
smtp-source's wall time) and the server's resident memory growth: its peak (VmHWM) during
the run minus its resident size before it.

``--baseline PYTHON`` runs the same rounds, alternating, with another smtpx (the python
of a virtualenv where an older smtpx is installed, say a worktree of an older commit) and
prints the ratios. Target (issue "Never lose, never mix, never choke", item 5): 8
concurrent 34 MB messages add under 100 MB, and intake MB/s does not drop.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, rss_kb, tool, wait_listening


def hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def config(directory: Path, port: int) -> Path:
    path = directory / "smtpx.toml"
    path.write_text(
        f"""
hostname = "bench.test"
[server]
listen = ["127.0.0.1:{port}"]
max_message_size = "100M"
[spool]
dir = "{directory / "spool"}"
fsync = "batch"
retry_intervals = ["1h"]
[routing]
smarthost = "127.0.0.1:{free_port()}"
[control]
socket = "{directory / "control.sock"}"
"""
    )
    return path


def one_round(python: str, sessions: int, size: int) -> tuple[float, float]:
    """(MB/s, MB of resident growth) for one run on a fresh server."""
    with tempfile.TemporaryDirectory(prefix="smtpx-large-") as scratch:
        directory = Path(scratch)
        port = free_port()
        server = subprocess.Popen(
            [python, "-m", "smtpx", "serve", "--config", str(config(directory, port))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port, 30)
            time.sleep(0.5)  # let start-up allocations settle
            before = rss_kb(server.pid)
            argv = [tool("smtp-source"), "-s", str(sessions), "-m", str(sessions)]
            argv += ["-l", str(size), "-f", "a@bench.test", "-t", "b@example.net"]
            began = time.perf_counter()
            subprocess.run([*argv, f"127.0.0.1:{port}"], check=True, timeout=600)
            elapsed = time.perf_counter() - began
            growth = hwm_kb(server.pid) - before
        finally:
            server.terminate()
            server.wait(30)
    return sessions * size / elapsed / 1e6, growth / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--size", type=int, default=34_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="the python of another smtpx, to compare with")
    args = parser.parse_args()
    pythons = {"smtpx": sys.executable}
    if args.baseline:
        pythons["baseline"] = args.baseline
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in pythons}
    for round_ in range(args.rounds):
        for name, python in pythons.items():
            rate, growth = one_round(python, args.sessions, args.size)
            results[name].append((rate, growth))
            print(f"round {round_ + 1} {name:8}: {rate:7.1f} MB/s, +{growth:6.1f} MB resident")
    print(f"{args.sessions} sessions x {args.size / 1e6:.0f} MB at once, median of {args.rounds}:")
    medians = {}
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        growth = statistics.median(g for _, g in runs)
        medians[name] = (rate, growth)
        print(f"  {name:8}: intake {rate:7.1f} MB/s, resident growth {growth:6.1f} MB")
    if "baseline" in medians:
        (rate, growth), (old_rate, old_growth) = medians["smtpx"], medians["baseline"]
        print(f"  ratio   : intake x{rate / old_rate:.2f}, memory x{growth / old_growth:.2f}")
    print("  target  : growth under 100 MB; intake not below the baseline's")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``smtpx route test ADDRESS``: the route and the TLS policy of each next hop, and why,
with the server's configuration and DNS (the lab); nothing is delivered or written."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from smtpx.mta.mtasts import CachedPolicy, StsPolicy
from smtpx.testing.dns import DnsLab, Zone
from tests.cli.helpers import invoke

StartLab = Callable[..., DnsLab]
POLICY = "version: STSv1\nmode: enforce\nmx: mx1.sts.test\nmax_age: 86400\n"


def write_config(tmp_path: Path, routing: str) -> Path:
    path = tmp_path / "smtpx.toml"
    path.write_text(
        f"""hostname = "mx.test"
[relay]
local_domains = ["example.org"]
[spool]
dir = "{tmp_path / "spool"}"
[local]
maildir = "{tmp_path / "mail"}"
[routing]
{routing}
"""
    )
    return path


def lab_with_policies(dns_lab: StartLab) -> DnsLab:
    dane = Zone("dane.test", signed=True).add("@", "MX", "10 mx.dane.test.")
    dane.add("mx", "A", "127.0.0.1").add("_25._tcp.mx", "TLSA", "3 1 1 " + "ab" * 32)
    sts = Zone("sts.test").add("@", "MX", "10 mx1.sts.test.").add("@", "MX", "20 mx2.sts.test.")
    sts.txt("_mta-sts", "v=STSv1; id=1")
    return dns_lab(dane, sts, Zone("plain.test").add("@", "A", "127.0.0.1"))


def test_dane_and_mta_sts_per_mx_host(tmp_path: Path, dns_lab: StartLab) -> None:
    lab = lab_with_policies(dns_lab)
    routing = f"""resolver = "127.0.0.1:{lab.resolver_port}"
dane = {{ enabled = true }}
mta_sts = {{ enabled = true }}
"""
    path = write_config(tmp_path, routing)
    # The server fetched sts.test's policy earlier: its cache file (port 443 is not ours).
    cache = tmp_path / "spool" / "mta-sts"
    cache.mkdir(parents=True)
    cached = CachedPolicy("sts.test", "1", StsPolicy.parse(POLICY), time.time())
    (cache / "sts.test.json").write_text(cached.to_json())
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.iterdir()}

    dane = invoke("route", "test", "user@dane.test", "--config", str(path))
    assert dane.exit_code == 0, dane.output
    assert dane.stdout.splitlines() == [
        "destination: dane.test",
        "route: the MX records of dane.test",
        "  mx.dane.test:25: dane: DANE: 1 usable TLSA record(s) at _25._tcp.mx.dane.test: "
        "TLS required, the certificate must match",
        "TLS policy: dane",
        "  DANE: the MX records are DNSSEC-secure: TLSA records apply",
        "  MTA-STS: no policy (no STSv1 TXT record)",
    ]
    sts = invoke("route", "test", "user@sts.test", "--config", str(path))
    assert sts.exit_code == 0, sts.output
    assert sts.stdout.splitlines() == [
        "destination: sts.test",
        "route: the MX records of sts.test",
        "  mx1.sts.test:25: mta-sts-enforce: MTA-STS enforce: TLS required, certificate "
        "valid for mx1.sts.test",
        "  mx2.sts.test:25: not used: MTA-STS (enforce): not among the policy's MX hosts "
        "(mx1.sts.test)",
        "TLS policy: mta-sts-enforce",
        "  DANE: the MX records are not DNSSEC-secure: no DANE",
        "  MTA-STS: mode enforce, mx mx1.sts.test, max_age 86400s (cached (id 1))",
    ]
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.iterdir()}
    assert after == before  # read, never written


def test_no_policies_local_routes_and_failures(tmp_path: Path, dns_lab: StartLab) -> None:
    lab = lab_with_policies(dns_lab)
    routing = f"""resolver = "127.0.0.1:{lab.port}"
routes = {{ "partner.test" = ["relay.partner.test:2525"] }}
credentials = {{ "relay.partner.test" = {{ username = "us", password = "x" }} }}
[[routing.tls]]
suffix = "partner.test"
mode = "required"
certificate = "verify"
"""
    path = write_config(tmp_path, routing)
    plain = invoke("route", "test", "plain.test", "--config", str(path))
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.splitlines() == [
        "destination: plain.test",
        "route: plain.test itself (no MX records: its A/AAAA records)",
        "  plain.test:25: no TLS ([[routing.tls]])",
        "TLS policy: [[routing.tls]] (routing.mta_sts and routing.dane are off)",
    ]
    partner = invoke("route", "test", "someone@sub.partner.test", "--config", str(path))
    assert partner.stdout.splitlines()[1:] == [
        "route: explicit route partner.test (routing.routes)",
        "  relay.partner.test:2525: TLS required, verified certificate ([[routing.tls]]), "
        "AUTH as us",
    ]
    local = invoke("route", "test", "me@example.org", "--config", str(path))
    assert local.stdout.splitlines()[-1] == f"local delivery into {tmp_path / 'mail'}"
    missing = invoke("route", "test", "x@absent.sts.test", "--config", str(path))
    assert missing.exit_code == 1
    assert "no route, for good: 550 5.1.2 Domain absent.sts.test does not exist" in missing.stdout
    bad = invoke("route", "test", "not an address@", "--config", str(path))
    assert bad.exit_code == 2 and "not an address" in bad.stderr

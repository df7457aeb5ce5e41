"""The DNS lab (smtpx.testing.dns): real NSD and Unbound on 127.0.0.1 serving generated
zones, and dnspython (what smtpx resolves with) pointed at them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.rdatatype
import dns.resolver
import pytest

from smtpx.mta.routing import DnsPythonResolver, NoRecords, NoSuchDomain
from smtpx.testing.dns import DnsLab, Zone, txt_data
from tests.conftest import REQUIRE_INTEROP

pytestmark = pytest.mark.interop

StartLab = Callable[..., DnsLab]
LONG_KEY = "v=DKIM1; k=rsa; p=" + "A" * 392  # a 2048-bit key's record: two strings


def example_zone() -> Zone:
    zone = Zone("example.test")
    zone.add("@", "MX", "10 mx1.example.test.").add("@", "MX", "20 mx2.example.test.")
    zone.add("mx1", "A", "127.0.0.1").add("mx2", "A", "127.0.0.2")
    zone.txt("@", "v=spf1 ip4:127.0.0.1 -all")
    zone.txt("s1._domainkey", LONG_KEY)
    zone.txt("_dmarc", "v=DMARC1; p=reject")
    zone.txt("_mta-sts", "v=STSv1; id=20260101")
    zone.add("_25._tcp.mx1", "TLSA", "3 1 1 " + "ab" * 32)
    return zone


def test_txt_data_splits_and_escapes() -> None:
    assert txt_data("a") == '"a"'
    assert txt_data('say "hi" \\ ok') == '"say \\"hi\\" \\\\ ok"'
    assert txt_data(b"\x01") == '"\\001"'
    assert txt_data("x" * 300) == '"' + "x" * 255 + '" "' + "x" * 45 + '"'


async def test_authoritative_answers_from_python_data(dns_lab: StartLab) -> None:
    lab = dns_lab(example_zone())
    resolver = lab.resolver()
    assert resolver.nameservers == ["127.0.0.1"]
    mx = await resolver.resolve("example.test", "MX")
    assert sorted((r.preference, r.exchange.to_text()) for r in mx) == [
        (10, "mx1.example.test."),
        (20, "mx2.example.test."),
    ]
    assert mx.response.flags & dns.flags.AA
    assert [r.address for r in await resolver.resolve("mx2.example.test", "A")] == ["127.0.0.2"]
    dkim = await resolver.resolve("s1._domainkey.example.test", "TXT")
    assert b"".join(next(iter(dkim)).strings).decode() == LONG_KEY
    for name, start in (("_dmarc", b"v=DMARC1"), ("_mta-sts", b"v=STSv1"), ("@", b"v=spf1")):
        qname = "example.test" if name == "@" else f"{name}.example.test"
        answer = await resolver.resolve(qname, "TXT")
        assert b"".join(next(iter(answer)).strings).startswith(start)
    tlsa = next(iter(await resolver.resolve("_25._tcp.mx1.example.test", "TLSA")))
    assert (tlsa.usage, tlsa.selector, tlsa.mtype, tlsa.cert) == (3, 1, 1, b"\xab" * 32)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("nothing.example.test", "A")
    blocking = lab.blocking_resolver()
    assert blocking.resolve("mx1.example.test", "A").rrset is not None


async def test_the_mta_router_resolves_mx_through_the_lab(dns_lab: StartLab) -> None:
    lab = dns_lab(example_zone(), Zone("nomx.test").add("@", "A", "127.0.0.3"))
    dns_ = DnsPythonResolver(lab.resolver())
    assert await dns_.mx("example.test") == [(10, "mx1.example.test"), (20, "mx2.example.test")]
    with pytest.raises(NoRecords):  # then the A record is the host (RFC 5321 5.1)
        await dns_.mx("nomx.test")
    with pytest.raises(NoSuchDomain):
        await dns_.mx("absent.example.test")


async def test_update_serves_the_new_records(dns_lab: StartLab) -> None:
    zone = example_zone()
    lab = dns_lab(zone)
    lab.update(zone.remove("_dmarc").txt("_dmarc", "v=DMARC1; p=none"))
    answer = await lab.resolver().resolve("_dmarc.example.test", "TXT")
    assert [b"".join(r.strings) for r in answer] == [b"v=DMARC1; p=none"]
    port = lab.port
    lab.update(Zone("second.test").add("@", "A", "127.0.0.9"))  # a new zone too
    assert lab.port == port  # clients made before still ask the right place
    answer = await lab.resolver().resolve("second.test", "A")
    assert [r.address for r in answer] == ["127.0.0.9"]


async def test_signed_zone_is_validated_with_the_ad_bit(dns_lab: StartLab) -> None:
    signed = Zone("dane.test", signed=True)
    signed.add("mx", "A", "127.0.0.1").add("_25._tcp.mx", "TLSA", "3 1 1 " + "cd" * 32)
    lab = dns_lab(signed, example_zone())
    assert set(lab.trust_anchors) == {"dane.test"}
    secure = lab.resolver(validating=True)
    answer = await secure.resolve("_25._tcp.mx.dane.test", "TLSA")
    assert answer.response.flags & dns.flags.AD
    # The authoritative answer carries the signatures; NSD itself sets no AD.
    raw = lab.resolver()
    raw.use_edns(0, dns.flags.DO, 1232)
    direct = await raw.resolve("mx.dane.test", "A")
    assert not direct.response.flags & dns.flags.AD
    assert any(r.rdtype == dns.rdatatype.RRSIG for r in direct.response.answer)
    # An unsigned zone resolves through the validator as insecure: no AD.
    insecure = await secure.resolve("mx1.example.test", "A")
    assert not insecure.response.flags & dns.flags.AD
    # A record changed after signing is bogus: SERVFAIL.
    lab.tamper("dane.test", "cd" * 32, "ee" * 32)
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        await secure.resolve("_25._tcp.mx.dane.test", "TLSA")


async def test_nothing_outside_the_lab_is_asked(dns_lab: StartLab) -> None:
    lab = dns_lab(Zone("dane.test", signed=True).add("mx", "A", "127.0.0.1"))
    conf = (lab.root / "unbound.conf").read_text()
    assert "outgoing-interface: 127.0.0.1" in conf
    with pytest.raises(dns.resolver.NoNameservers):  # forwarded to NSD, refused: at once
        await lab.resolver(validating=True, lifetime=3).resolve("example.com", "A")
    with pytest.raises(dns.resolver.NoNameservers):
        await lab.resolver(lifetime=3).resolve("example.com", "A")


def test_stop_ends_the_daemons(dns_lab: StartLab) -> None:
    lab = dns_lab(Zone("dane.test", signed=True).add("mx", "A", "127.0.0.1"))
    daemons = [d for d in (lab._nsd, lab._unbound) if d is not None]
    assert len(daemons) == 2
    lab.stop()
    assert all(not d.alive() for d in daemons)
    with pytest.raises(dns.resolver.LifetimeTimeout):
        lab.blocking_resolver(lifetime=0.5).resolve("mx.dane.test", "A")


def test_the_lab_runs_without_root(request: pytest.FixtureRequest) -> None:
    """CI runs as root; developers may not. Run the signed lab as ``nobody``."""
    if os.geteuid() != 0:
        pytest.skip("already not root: the other tests show it")
    setpriv = shutil.which("setpriv")
    for tool in ("nsd", "unbound", "ldns-signzone"):
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin")):
            pytest.fail(f"{tool} missing") if REQUIRE_INTEROP else pytest.skip(f"{tool} missing")
    if setpriv is None:
        pytest.skip("no setpriv")
    root = Path(tempfile.mkdtemp(prefix="smtpx-dnslab-"))  # pytest's tmp is root's only
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    os.chown(root, 65534, 65534)
    root.chmod(0o755)
    script = textwrap.dedent(
        f"""
        import dns.flags
        from pathlib import Path
        from smtpx.testing.dns import DnsLab, Zone
        zone = Zone("dane.test", signed=True).add("mx", "A", "127.0.0.1")
        with DnsLab(Path({str(root / "lab")!r}), [zone]) as lab:
            answer = lab.blocking_resolver(validating=True).resolve("mx.dane.test", "A")
            print("AD" if answer.response.flags & dns.flags.AD else "no AD")
        """
    )
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "HOME": str(root)}

    def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
        return subprocess.run(
            [*argv, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    probe = as_nobody("import smtpx.testing.dns")
    if probe.returncode != 0:
        # The interpreter or the checkout lies under a directory only root may enter.
        pytest.skip(f"nobody cannot run this Python: {probe.stderr.strip()[-200:]}")
    result = as_nobody(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "AD"

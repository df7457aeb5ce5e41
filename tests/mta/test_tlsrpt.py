"""TLS-RPT (RFC 8460): the day's events, the report's JSON checked against the RFC's
structure (section 4), and reports sent by mail and by HTTPS from a real MTA."""

from __future__ import annotations

import datetime
import email
import email.message
import email.policy
import gzip
import ipaddress
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from smtpx.errors import ConfigError
from smtpx.mta.tlsrpt import PolicyRef, TlsEvent, TlsRptLog, build_report, rua_of
from smtpx.testing.dns import DnsLab
from tests.mta.helpers import config, maildir, wait_until
from tests.mta.test_dane import world
from tests.mta.tls_helpers import deferred, policy_host, send

StartLab = Callable[..., DnsLab]

# RFC 8460 section 4.3.
RESULT_TYPES = {
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
}
DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")  # RFC 3339 date-time, in UTC


def check_rfc8460(report: dict[str, Any]) -> None:
    """Assert that ``report`` has the structure of RFC 8460 section 4.4."""
    assert set(report) == {
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
    }
    for name in ("organization-name", "contact-info", "report-id"):
        assert isinstance(report[name], str) and report[name]
    dates = report["date-range"]
    assert set(dates) == {"start-datetime", "end-datetime"}
    assert all(DATETIME.fullmatch(value) for value in dates.values())
    assert dates["start-datetime"] < dates["end-datetime"]
    assert isinstance(report["policies"], list) and report["policies"]
    for entry in report["policies"]:
        _check_policy(entry)


def _check_policy(entry: dict[str, Any]) -> None:
    assert {"policy", "summary"} <= set(entry) <= {"policy", "summary", "failure-details"}
    policy = entry["policy"]
    assert {"policy-type", "policy-domain"} <= set(policy)
    assert set(policy) <= {"policy-type", "policy-string", "policy-domain", "mx-host"}
    assert policy["policy-type"] in ("tlsa", "sts", "no-policy-found")
    for name in ("policy-string", "mx-host"):
        values = policy.get(name, [])
        assert isinstance(values, list) and all(isinstance(v, str) for v in values)
    summary = entry["summary"]
    assert set(summary) == {"total-successful-session-count", "total-failure-session-count"}
    assert all(isinstance(v, int) and v >= 0 for v in summary.values())
    details = entry.get("failure-details", [])
    for detail in details:
        assert detail["result-type"] in RESULT_TYPES
        assert isinstance(detail["failed-session-count"], int)
        assert detail["failed-session-count"] > 0
        optional = {
            "sending-mta-ip",
            "receiving-mx-hostname",
            "receiving-mx-helo",
            "receiving-ip",
            "additional-information",
            "failure-reason-code",
        }
        assert set(detail) - {"result-type", "failed-session-count"} <= optional
        for name in ("sending-mta-ip", "receiving-ip"):
            if name in detail:
                ipaddress.ip_address(detail[name])
    failed = sum(detail["failed-session-count"] for detail in details)
    assert summary["total-failure-session-count"] == failed


STS = PolicyRef("sts", "example.com", ("version: STSv1", "mode: enforce"), ("mx.example.com",))
TLSA = PolicyRef("tlsa", "example.com", ("3 1 1 ab",), ("mx2.example.com",))
DAY = "2026-03-04"
NOON = datetime.datetime(2026, 3, 4, 12, tzinfo=datetime.UTC).timestamp()


def event(ref: PolicyRef, result: str = "success", **fields: Any) -> TlsEvent:
    mx_host = ref.mx_hosts[0] if ref.mx_hosts else ""
    values = {"mx_host": mx_host, "receiving_ip": "127.0.0.1", "sending_ip": "127.0.0.2"}
    values.update(fields)
    return TlsEvent(ref, result, NOON, **values)


def test_the_report_has_the_rfc_structure_and_counts() -> None:
    events = [
        event(STS),
        event(STS),
        event(STS, "certificate-expired", detail="the certificate is not valid now"),
        event(STS, "certificate-expired", detail="the certificate is not valid now"),
        event(TLSA, "validation-failure", detail="matches none of the 1 usable TLSA records"),
        event(PolicyRef("sts", "example.com"), "sts-policy-fetch-error", mx_host=""),
    ]
    report = build_report(
        DAY, events, organization="Example", contact="postmaster@example.net", report_id="r1"
    )
    check_rfc8460(report)
    assert report["date-range"] == {
        "start-datetime": "2026-03-04T00:00:00Z",
        "end-datetime": "2026-03-04T23:59:59Z",
    }
    sts, tlsa, fetch = report["policies"]
    assert sts["policy"] == {
        "policy-type": "sts",
        "policy-domain": "example.com",
        "policy-string": ["version: STSv1", "mode: enforce"],
        "mx-host": ["mx.example.com"],
    }
    assert sts["summary"] == {
        "total-successful-session-count": 2,
        "total-failure-session-count": 2,
    }
    assert sts["failure-details"] == [
        {
            "result-type": "certificate-expired",
            "failed-session-count": 2,
            "sending-mta-ip": "127.0.0.2",
            "receiving-mx-hostname": "mx.example.com",
            "receiving-ip": "127.0.0.1",
            "failure-reason-code": "the certificate is not valid now",
        }
    ]
    assert tlsa["summary"]["total-successful-session-count"] == 0
    assert fetch["policy"] == {"policy-type": "sts", "policy-domain": "example.com"}
    assert "receiving-mx-hostname" not in fetch["failure-details"][0]
    json.dumps(report)  # JSON all through


def test_rua_needs_exactly_one_tlsrptv1_record() -> None:
    assert rua_of(["v=TLSRPTv1; rua=mailto:a@x.test,https://r.test/up"]) == [
        "mailto:a@x.test",
        "https://r.test/up",
    ]
    assert rua_of(["v=TLSRPTv1;rua=mailto:a@x.test, ftp://x, http://plain.test/"]) == [
        "mailto:a@x.test"
    ]
    assert rua_of(["v=TLSRPTv1; rua=mailto:a@x.test", "v=TLSRPTv1; rua=mailto:b@x.test"]) == []
    assert rua_of(["v=spf1 -all"]) == []


def test_the_log_keeps_each_day_until_it_is_reported(tmp_path: Path) -> None:
    now = [NOON]
    log = TlsRptLog(tmp_path / "tlsrpt", clock=lambda: now[0])
    log.record(event(STS))
    log.record(event(TLSA, "validation-failure", detail="x"))
    assert log.finished_days() == []  # today's is not over
    now[0] += 86_400
    assert log.finished_days() == [DAY]
    assert log.events(DAY) == [event(STS), event(TLSA, "validation-failure", detail="x")]
    log.forget(DAY)
    assert log.finished_days() == [] and log.events(DAY) == []


async def test_reports_go_by_mail_and_https_after_the_day(
    tmp_path: Path, dns_lab: StartLab, ca: Any, ca_file: str
) -> None:
    async with policy_host(ca.issue_cert("reports.right.test")) as reports:
        uri = f"https://reports.right.test:{reports.port}/tlsrpt"
        rua = f"mailto:tlsrpt@example.org,{uri}"
        tlsrpt = {"enabled": True, "organization": "Test Org"}
        async with world(tmp_path, dns_lab, ca, rua=rua, routing=_routing(ca_file, tlsrpt)) as (
            mta,
            sink,
            lab,
        ):
            lab.update(lab.zones["right.test"].add("reports", "A", "127.0.0.1"))
            await send(mta, "user@right.test", "user@wrong.test")
            await wait_until(lambda: len(sink.messages()) == 1)
            await deferred(mta, "wrong.test")
            assert mta.tls_reports is not None and mta.tls_reporter is not None
            mta.tls_reports.clock = lambda: time.time() + 86_400  # the day is over
            await mta.tls_reporter.send_due()
            await wait_until(lambda: len(maildir(tmp_path, "tlsrpt@example.org")) == 2)
            assert mta.tls_reports.finished_days() == []
    mailed = {_report_domain(m): m for m in maildir(tmp_path, "tlsrpt@example.org")}
    assert set(mailed) == {"right.test", "wrong.test"}
    right = _attachment(mailed["right.test"])
    check_rfc8460(right)
    assert right["organization-name"] == "Test Org"
    assert right["contact-info"] == "postmaster@mx.test"
    [entry] = right["policies"]
    assert entry["policy"]["policy-type"] == "tlsa"
    assert entry["policy"]["mx-host"] == ["mx.right.test"]
    assert entry["summary"] == {
        "total-successful-session-count": 1,
        "total-failure-session-count": 0,
    }
    wrong = _attachment(mailed["wrong.test"])
    check_rfc8460(wrong)
    [failed] = wrong["policies"]
    assert failed["summary"]["total-successful-session-count"] == 0
    [detail] = failed["failure-details"]
    assert detail["result-type"] == "validation-failure"
    assert detail["receiving-mx-hostname"] == "mx.wrong.test"
    assert detail["receiving-ip"] == "127.0.0.1"
    # The same reports by HTTPS POST, gzipped.
    posted = {}
    for path, headers, body in reports.posts:
        assert path == "/tlsrpt" and headers["Content-Type"] == "application/tlsrpt+gzip"
        report = json.loads(gzip.decompress(body))
        check_rfc8460(report)
        posted[report["policies"][0]["policy"]["policy-domain"]] = report
    assert set(posted) == {"right.test", "wrong.test"}


def _routing(ca_file: str, tlsrpt: dict[str, Any]) -> dict[str, Any]:
    # world() adds the resolver and DANE; here also the trust for the HTTPS upload.
    return {"tlsrpt": tlsrpt, "mta_sts": {"ca_file": ca_file}}


def _report_domain(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return str(message["TLS-Report-Domain"])


def _attachment(raw: bytes) -> dict[str, Any]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    assert message["TLS-Report-Submitter"] == "mx.test"
    subject = str(message["Subject"])
    assert subject.startswith(f"Report Domain: {message['TLS-Report-Domain']} Submitter: mx.test")
    [part] = [p for p in message.iter_attachments() if isinstance(p, email.message.EmailMessage)]
    assert part.get_content_type() == "application/tlsrpt+gzip"
    name = part.get_filename() or ""
    assert re.fullmatch(r"mx\.test![a-z.]+!\d+!\d+!.+\.json\.gz", name)
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    report: dict[str, Any] = json.loads(gzip.decompress(payload))
    return report


@pytest.mark.parametrize("contact", ["not an address", ""])
def test_the_contact_must_be_a_mailbox(tmp_path: Path, contact: str) -> None:
    with pytest.raises(ConfigError, match=r"routing\.tlsrpt\.contact"):
        config(tmp_path, routing={"tlsrpt": {"enabled": True, "contact": contact}})

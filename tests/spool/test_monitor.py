"""The spool monitor (F103): problems that persist are reported once, and their end too."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from smtpx.cli import fsck_watch
from smtpx.cli import main as cli_main
from smtpx.mta.app import Mta, _spool_watch
from smtpx.mta.routing import FakeDns
from smtpx.spool.fsck import Problem, check
from smtpx.spool.monitor import Alert, Monitor
from smtpx.testing.clock import run_virtual
from tests.mta.helpers import config, wait_until
from tests.spool.test_fsck import spool_with

A = Problem("stray-file", "/s/journal/x", "not a journal segment")
B = Problem("too-old", "ID1", "due for 10s and not attempted")
B_LATER = Problem("too-old", "ID1", "due for 20s and not attempted")


def test_a_problem_is_reported_once_it_persists_and_when_it_ends() -> None:
    monitor = Monitor(alert_after=2)
    assert monitor.observe([A, B], 1) == []  # once: could be a record being written
    assert monitor.observe([A, B_LATER], 2) == [Alert("start", 2, A), Alert("start", 2, B_LATER)]
    assert monitor.observe([A, B_LATER], 3) == []  # still there: said already
    assert monitor.by_kind() == {"stray-file": 1, "too-old": 1}
    assert monitor.observe([B_LATER], 4) == [Alert("end", 4, A)]
    assert monitor.observe([A], 5) == [Alert("end", 5, B_LATER)]  # A starts counting again
    assert monitor.observe([], 6) == [] and monitor.by_kind() == {} and monitor.checks == 6


def test_alert_after_one_reports_at_once_and_zero_is_refused() -> None:
    assert Monitor(alert_after=1).observe([A], 7) == [Alert("start", 7, A)]
    with pytest.raises(ValueError, match="at least 1"):
        Monitor(alert_after=0)


def test_the_loop_checks_every_interval_and_survives_a_failed_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_with(tmp_path, 1, frozen=True)
    stray = tmp_path / "journal" / "notes.txt"
    plan = iter(["add", "fail", None, "remove", None])
    alerts: list[Alert] = []

    async def checked() -> list[Problem]:
        step = next(plan)
        if step == "add":
            stray.write_text("x")
        elif step == "fail":
            raise OSError("disk on fire")
        elif step == "remove":
            stray.unlink()
        return check(tmp_path)

    async def watch() -> float:
        loop = asyncio.get_running_loop()
        await Monitor().run(checked, 60, alerts.append, clock=loop.time, cycles=5)
        return loop.time()

    assert run_virtual(watch()) == 4 * 60
    assert [(a.event, a.time, a.problem.kind) for a in alerts] == [
        ("start", 120, "stray-file"),  # seen at 0 and 120: the failed check did not count
        ("end", 180, "stray-file"),
    ]
    assert "the check failed" in caplog.text and "disk on fire" in caplog.text


def test_fsck_watch_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsck_watch, "runner", run_virtual)
    spool_with(tmp_path, 1, frozen=True)
    runner = CliRunner()
    args = ["spool", "fsck", "--spool-dir", str(tmp_path), "--watch", "1m", "--cycles", "3"]
    clean = runner.invoke(cli_main, args)
    assert clean.exit_code == 0 and clean.output == ""
    (tmp_path / "journal" / "notes.txt").write_text("x")
    found = runner.invoke(cli_main, [*args, "--json"])
    assert found.exit_code == 1
    (line,) = found.output.splitlines()
    assert json.loads(line) | {"time": 0} == {
        "event": "start",
        "time": 0,
        "kind": "stray-file",
        "where": str(tmp_path / "journal" / "notes.txt"),
        "description": "not a journal segment",
    }
    plain = runner.invoke(cli_main, [*args, "--alert-after", "3"])
    assert plain.exit_code == 1 and " start stray-file: " in plain.output
    missing = runner.invoke(cli_main, [*args[:3], str(tmp_path / "none"), *args[4:]])
    assert missing.exit_code == 2 and "not a spool directory" in missing.output


async def test_the_daemon_logs_and_counts_persisting_problems(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, spool={"monitor_every": "1h", "monitor_alert_after": 1})
    journal = tmp_path / "spool" / "journal"
    journal.mkdir(parents=True)
    (journal / "notes.txt").write_text("x")
    caplog.set_level(logging.ERROR, "smtpx.spool.monitor")
    async with (
        Mta(cfg, dns=FakeDns()) as running,
        TestClient(TestServer(running.control.app)) as api,
    ):
        assert running.spool_watch is not None
        watch = running.spool_watch
        await wait_until(lambda: watch.monitor.checks >= 1)
        running.control.token = "secret"
        api.session.headers["Authorization"] = "Bearer secret"
        text = await (await api.get("/metrics")).text()
    samples: dict[tuple[str, Any], float] = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("smtpx_spool_problems", ("stray-file",))] == 1
    assert samples[("smtpx_spool_problems", ("damaged",))] == 0
    assert samples[("smtpx_spool_monitor_checks", ())] == 1
    assert "spool monitor: stray-file: " in caplog.text
    assert running.spool_watch._task is None  # stopped with the MTA


def test_no_monitor_by_default(tmp_path: Path) -> None:
    assert _spool_watch(config(tmp_path)) is None
    assert _spool_watch(config(tmp_path, spool={"monitor_every": "15m"})) is not None

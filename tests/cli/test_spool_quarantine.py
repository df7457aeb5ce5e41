"""``smtpx spool quarantine`` (F13): an operator holds mail, with a reason, through the
control plane of a running daemon."""

from __future__ import annotations

import json

from tests.cli.helpers import Daemon


def test_quarantine_by_id_and_by_selector_then_recover(daemon: Daemon) -> None:
    ids = daemon.inject("held@example.com", ["x@example.net"], count=2)
    only = ["--sender", "^<held@"]
    assert daemon.cli("spool", "quarantine", ids[0]).exit_code == 2  # --reason is required
    assert daemon.cli("spool", "quarantine", "--reason", " ", ids[0]).exit_code == 2
    held = daemon.cli("spool", "quarantine", "--reason", "abuse report 42", ids[0])
    assert held.exit_code == 0 and "quarantined: 1 message" in held.stdout
    (message,) = [m for m in daemon.messages(*only) if m["id"] == ids[0]]
    assert message["status"] == "quarantined"
    assert message["quarantine"] == {
        "description": "abuse report 42",
        "envelope_sender": "<held@example.com>",
        "from_headers": "held@example.com",
    }
    shown = daemon.cli("spool", "show", ids[0])
    assert "abuse report 42" in shown.stdout and "quarantined From" in shown.stdout
    picked = daemon.cli(
        "spool", "quarantine", "--reason", "all of it", "--select", "envelope_sender /^held@/"
    )
    assert picked.exit_code == 0 and "quarantined: 1 message" in picked.stdout
    assert [m["status"] for m in daemon.messages(*only)] == ["quarantined"] * 2
    unknown = daemon.cli("spool", "quarantine", "--reason", "x", "nope")
    assert unknown.exit_code == 1 and "nope: not found" in unknown.stderr
    back = daemon.cli("spool", "recover", "--from", "quarantine", *ids)
    assert back.exit_code == 0
    listing = json.loads(daemon.cli("spool", "status", "--format", "json", *only).stdout)
    assert [(m["status"], m["quarantine"]) for m in listing] == [("frozen", None)] * 2

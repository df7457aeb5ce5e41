"""``smtpx spool ...`` end to end against a real ``smtpx serve``."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from smtpx.cli import render
from smtpx.spool.filter import STATUS_WORDS as _STATUS_WORDS
from smtpx.spool.journal import Journal
from smtpx.spool.spool import Spool
from tests.cli.helpers import Daemon, Lines, inject_in_background, invoke, send, smtpx_process

ID_LINE = re.compile(r"^[0-9A-Za-z_~]{16}-[0-9A-Za-z_~]{6}$")  # <envelope id>-<counter> (F7)


@pytest.fixture(scope="module")
def queued(daemon: Daemon) -> dict[str, list[str]]:
    """Messages every test may look at but none changes."""
    return {
        "alice": daemon.inject("alice@example.com", ["bob@example.net"], count=2),
        "carol": daemon.inject(
            "carol@example.com", ["dave@example.net", "erin@example.net"], subject="Report"
        ),
    }


# -- status and count --------------------------------------------------------------------


def test_status_formats(daemon: Daemon, queued: dict[str, list[str]]) -> None:
    ids = queued["alice"] + queued["carol"]
    # ids: one per line, oldest first
    result = daemon.cli("spool", "status", "--format", "ids", "--sender", "alice|carol")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines == ids and all(ID_LINE.match(line) for line in lines)
    # json parses, with the control plane's fields
    messages = daemon.messages("--sender", "^<carol@")
    assert [m["id"] for m in messages] == queued["carol"]
    assert messages[0]["recipients"] == ["dave@example.net", "erin@example.net"]
    assert messages[0]["status"] == "send_at" and messages[0]["route"] == "example.net"
    # exim: "age size id <sender>", then the recipients indented
    exim = daemon.cli("spool", "status", "--format", "exim", "--sender", "carol").stdout
    head, first, second = exim.splitlines()[:3]
    assert re.fullmatch(
        r" +\dm +\d+ " + re.escape(queued["carol"][0]) + " <carol@example.com>", head
    )
    assert first == "          dave@example.net" and second == "          erin@example.net"
    # table (the default): every id, sender and next hop
    table = daemon.cli("spool", "status", "--sender", "alice|carol").stdout
    for message_id in ids:
        assert message_id in table
    assert "<alice@example.com>" in table and "example.net" in table and "in 59m" in table
    assert "time on spool" in table and "next attempt" in table


def test_table_ages_are_coloured(daemon: Daemon, queued: dict[str, list[str]]) -> None:
    result = invoke(
        "spool", "status", "--socket", str(daemon.socket), "--sender", "alice", FORCE_COLOR="1"
    )
    assert result.exit_code == 0
    assert "\x1b[32m" in result.stdout  # a fresh message: green
    assert [render.age_colour(m * 60) for m in (5, 30, 120, 200)] == [
        "green",
        "yellow",
        "red",
        "blue",
    ]


def test_shape_counts_by_domain_and_age(daemon: Daemon, queued: dict[str, list[str]]) -> None:
    result = daemon.cli("spool", "shape", "--sender", "alice|carol")
    assert result.exit_code == 0, result.output
    header, total, net = result.stdout.splitlines()[:3]
    assert header.split()[:4] == ["domain", "T", "5m", "10m"] and header.endswith("21h20m+")
    assert total.split()[:3] == ["TOTAL", "3", "3"] and net.split()[:3] == ["example.net", "3", "3"]
    by_sender = daemon.cli("spool", "shape", "--by", "sender", "--json", "--sender", "alice")
    data = json.loads(by_sender.stdout)
    assert data["rows"][1] == {"domain": "example.com", "total": 2, "by_age": [2] + [0] * 9}
    offline = invoke(
        "spool", "shape", "--spool-dir", str(daemon.spool_dir), "--json", "--sender", "alice|carol"
    )
    assert offline.exit_code == 0 and json.loads(offline.stdout)["rows"][0]["total"] == 3


def test_status_words_match_the_api() -> None:
    from smtpx.cli.spool import EVENT_KINDS, STATUS_WORDS
    from smtpx.spool.types import EventKind

    assert set(STATUS_WORDS) == _STATUS_WORDS
    assert set(EVENT_KINDS) == {k.value for k in EventKind} - {"ping"}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--sender", "^<alice@"], "alice"),
        (["--sender", "ALICE"], "alice"),  # any case
        (["--recipient", "erin@"], "carol"),
        (["--sender", "alice|carol", "--next-hop", "example\\.net"], "both"),
        (["--sender", "alice|carol", "--status", "active"], "both"),
        (["--sender", "alice|carol", "--status", "send_at"], "both"),
        (["--sender", "alice|carol", "--status", "frozen"], "none"),
        (["--sender", "alice|carol", "--younger", "1h"], "both"),
        (["--sender", "alice|carol", "--older", "1h"], "none"),
        (["--sender", "alice", "--recipient", "erin"], "none"),
        # envelope selectors: header terms read the stored message (offline: the journal)
        (["--select", "exists_header subject /^Report$/"], "carol"),
        (
            ["--select", "envelope_sender /^alice@/ or all_envelope_recipients /^(dave|erin)@/"],
            "both",
        ),
        (
            ["--select", "exists_envelope_recipient /^erin@/ and not exists_header To /erin/"],
            "none",
        ),
    ],
)
def test_filters_and_count(
    daemon: Daemon, queued: dict[str, list[str]], filters: list[str], expected: str
) -> None:
    wanted = {
        "alice": queued["alice"],
        "carol": queued["carol"],
        "both": queued["alice"] + queued["carol"],
        "none": [],
    }[expected]
    shown = daemon.cli("spool", "status", "--format", "ids", *filters)
    assert shown.exit_code == 0 and shown.stdout.split() == wanted
    counted = daemon.cli("spool", "count", *filters)
    assert counted.exit_code == 0 and counted.stdout == f"{len(wanted)}\n"
    offline = invoke("spool", "count", "--spool-dir", str(daemon.spool_dir), *filters)
    assert offline.exit_code == 0 and offline.stdout == f"{len(wanted)}\n"


def test_count_json(daemon: Daemon, queued: dict[str, list[str]]) -> None:
    result = daemon.cli("spool", "count", "--json", "--sender", "alice")
    assert json.loads(result.stdout) == {"count": 2, "by_status": {"send_at": 2}}


def test_offline_status_equals_online(daemon: Daemon, queued: dict[str, list[str]]) -> None:
    filters = ["--sender", "alice|carol", "--format", "json"]
    online = json.loads(daemon.cli("spool", "status", *filters).stdout)
    for how in (
        ["--offline", "--config", str(daemon.config)],
        ["--spool-dir", str(daemon.spool_dir)],
    ):
        result = invoke("spool", "status", *how, *filters)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == online
    exim = ["spool", "status", "--format", "exim", "--sender", "carol"]
    assert invoke(*exim, "--spool-dir", str(daemon.spool_dir)).stdout == daemon.cli(*exim).stdout


def test_config_and_tcp_with_token(daemon: Daemon, queued: dict[str, list[str]]) -> None:
    filters = ["--sender", "alice", "--format", "ids"]
    expected = "".join(f"{i}\n" for i in queued["alice"])
    via_config = invoke("spool", "status", "--config", str(daemon.config), *filters)
    assert via_config.stdout == expected
    via_tcp = invoke("spool", "status", "--config", str(daemon.config), "--tcp", *filters)
    assert via_tcp.exit_code == 0 and via_tcp.stdout == expected
    via_url = invoke(
        "spool", "status", "--url", daemon.url, "--token-file", str(daemon.token_file), *filters
    )
    assert via_url.exit_code == 0 and via_url.stdout == expected
    wrong = daemon.directory / "wrong-token"
    wrong.write_text("nope\n", encoding="utf-8")
    refused = invoke("spool", "status", "--url", daemon.url, "--token-file", str(wrong))
    assert refused.exit_code == 2
    assert "bearer token" in refused.stderr and "Traceback" not in refused.output


# -- operations ----------------------------------------------------------------------------


def test_purge(daemon: Daemon) -> None:
    (message_id,) = daemon.inject("purge@example.com", ["x@example.net"])
    refused = daemon.cli("spool", "purge", "--yes", message_id)
    assert refused.exit_code == 1 and "only removed or quarantined" in refused.stderr
    daemon.cli("spool", "freeze", message_id)
    daemon.cli("spool", "remove", message_id)
    declined = daemon.cli("spool", "purge", message_id, input="n\n")
    assert declined.exit_code == 1 and "Delete 1 message for good?" in declined.stderr
    assert [m["status"] for m in daemon.messages("--sender", "^<purge@")] == ["removed"]
    purged = daemon.cli("spool", "purge", message_id, input="y\n")
    assert purged.exit_code == 0 and "purged: 1 message" in purged.stdout
    assert daemon.messages("--sender", "^<purge@") == []


def test_freeze_remove_recover_send(daemon: Daemon) -> None:
    ids = daemon.inject("ops@example.com", ["x@example.net"], count=3)
    only = ["--sender", "^<ops@"]

    def statuses() -> list[str]:
        return [m["status"] for m in daemon.messages(*only)]

    # ids never look like options
    assert not any(i.startswith("-") for i in ids)
    frozen = daemon.cli("spool", "freeze", *ids[:2])
    assert frozen.exit_code == 0 and "frozen: 2 messages" in frozen.stdout
    assert statuses() == ["frozen", "frozen", "send_at"]
    exim = daemon.cli("spool", "status", "--format", "exim", *only).stdout
    assert exim.count("*** frozen ***") == 2
    assert daemon.cli("spool", "count", "--status", "frozen", *only).stdout == "2\n"

    removed = daemon.cli("spool", "remove", ids[0])
    assert removed.exit_code == 0
    assert statuses() == ["removed", "frozen", "send_at"]
    assert daemon.cli(
        "spool", "status", "--format", "ids", "--status", "removed", *only
    ).stdout == (ids[0] + "\n")

    not_sent = daemon.cli("spool", "send", ids[0])
    assert not_sent.exit_code == 1 and "recover it first" in not_sent.stderr
    recovered = daemon.cli("spool", "recover", "--from", "removed", ids[0])
    assert recovered.exit_code == 0
    assert statuses() == ["frozen", "frozen", "send_at"]
    not_quarantined = daemon.cli("spool", "recover", "--from", "quarantine", ids[1])
    assert not_quarantined.exit_code == 1 and "is not quarantined" in not_quarantined.stderr

    # send the frozen ones with a retry interval first: they are tried, fail, and wait
    sent = daemon.cli("spool", "send", *ids[:2], "--retry-interval", "2h")
    assert sent.exit_code == 0 and "released: 2 messages" in sent.stdout
    daemon.wait_for(lambda m: m["id"] in ids[:2] and m["attempt_count"] >= 2, 2)
    after = {m["id"]: m for m in daemon.messages(*only)}
    assert [after[i]["status"] for i in ids] == ["send_at"] * 3
    assert after[ids[0]]["next_attempt"] - time.time() > 3600  # the 2h interval came first

    # --frozen and --all
    daemon.cli("spool", "freeze", ids[2])
    released = daemon.cli("spool", "send", "--frozen")
    assert released.exit_code == 0 and "released: 1 message" in released.stdout
    daemon.wait_for(lambda m: m["id"] == ids[2] and m["attempt_count"] >= 2, 1)
    everything = daemon.cli("spool", "send", "--all", "--retry-interval", "1h")
    assert everything.exit_code == 0 and re.search(r"released: \d+ messages?", everything.stdout)


def test_remove_takes_any_state_and_asks_above_three(daemon: Daemon) -> None:
    ids = daemon.inject("rm@example.com", ["x@example.net"], count=5)
    only = ["--sender", "^<rm@"]
    daemon.cli("spool", "freeze", ids[0])
    # waiting (send_at) and frozen alike; three ids are removed without a question
    removed = daemon.cli("spool", "remove", *ids[:3])
    assert removed.exit_code == 0 and "removed: 3 messages" in removed.stdout
    assert removed.stderr == ""
    assert [m["status"] for m in daemon.messages(*only)] == ["removed"] * 3 + ["send_at"] * 2
    again = daemon.cli("spool", "remove", ids[0])  # removing a removed message: no change
    assert again.exit_code == 0
    # more than three: a question first; no answer (a pipe) is no
    declined = daemon.cli("spool", "remove", *ids, input="")
    assert declined.exit_code == 1 and "Remove 5 messages?" in declined.stderr
    assert [m["status"] for m in daemon.messages(*only)][3:] == ["send_at"] * 2
    confirmed = daemon.cli("spool", "remove", *ids, input="y\n")
    assert confirmed.exit_code == 0 and "removed: 5 messages" in confirmed.stdout
    recovered = daemon.cli("spool", "recover", "--from", "removed", *ids)
    assert recovered.exit_code == 0
    assert daemon.cli("spool", "remove", "--yes", *ids).exit_code == 0
    assert {m["status"] for m in daemon.messages(*only)} == {"removed"}


def test_freeze_remove_recover_send_by_selector(daemon: Daemon) -> None:
    picked = daemon.inject("pick@example.com", ["p@example.net"], count=2, subject="pick me")
    (other,) = daemon.inject("pick@example.com", ["p@example.net"], subject="not me")
    select = "envelope_sender /^pick@/ and exists_header Subject /^pick me$/"

    def statuses() -> dict[str, str]:
        return {m["id"]: m["status"] for m in daemon.messages("--sender", "^<pick@")}

    frozen = daemon.cli("spool", "freeze", "--select", select)
    assert frozen.exit_code == 0 and "frozen: 2 messages" in frozen.stdout
    assert statuses() == {picked[0]: "frozen", picked[1]: "frozen", other: "send_at"}
    # remove takes the messages the selector picks, and leaves the others be
    removed = daemon.cli("spool", "remove", "--select", select)
    assert removed.exit_code == 0 and "removed: 2 messages" in removed.stdout
    assert statuses() == {picked[0]: "removed", picked[1]: "removed", other: "send_at"}
    daemon.cli("spool", "recover", "--from", "removed", *picked)
    sent = daemon.cli("spool", "send", "--select", select, "--retry-interval", "2h")
    assert sent.exit_code == 0 and "released: 2 messages" in sent.stdout
    daemon.wait_for(lambda m: m["id"] in picked and m["attempt_count"] >= 2, 2)
    nothing = daemon.cli("spool", "send", "--select", "false")
    assert nothing.exit_code == 0 and "released: 0 messages" in nothing.stdout


def test_many_ids_go_in_chunks(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    import smtpx.cli.spool

    monkeypatch.setattr(smtpx.cli.spool, "CHUNK", 2)
    ids = daemon.inject("chunks@example.com", ["c@example.net"], count=3)
    frozen = daemon.cli("spool", "freeze", *ids)
    assert frozen.exit_code == 0 and "frozen: 3 messages" in frozen.stdout
    assert daemon.cli("spool", "count", "--status", "frozen", "--sender", "chunks").stdout == "3\n"
    partly = daemon.cli("spool", "remove", "--yes", *ids, "00000000000nosuc")
    assert partly.exit_code == 1
    assert "00000000000nosuc: not found (the 3 ids before it were done)" in partly.stderr
    statuses = [m["status"] for m in daemon.messages("--sender", "chunks")]
    assert statuses == ["removed", "removed", "removed"]
    released = daemon.cli("spool", "recover", "--from", "removed", *ids)
    assert released.exit_code == 0


def test_unknown_id_fails(daemon: Daemon) -> None:
    for args in (["freeze", "00000000000nosuc"], ["show", "nosuch"], ["send", "nosuch"]):
        result = daemon.cli("spool", *args)
        assert result.exit_code == 1, args
        assert "not found" in result.stderr and "Traceback" not in result.output


def test_show_and_raw(daemon: Daemon, queued: dict[str, list[str]]) -> None:
    message_id = queued["carol"][0]
    shown = daemon.cli("spool", "show", message_id)
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    for expected in (
        message_id,
        "<carol@example.com>",
        "dave@example.net",
        "send_at",
        "Subject: Report",
        "Received:",
    ):
        assert expected in text
    assert "Last attempts" in text and "127.0.0.1" in text
    raw = daemon.cli("spool", "show", "--raw", message_id)
    assert raw.exit_code == 0
    assert raw.stdout_bytes.startswith(b"Received: from ")
    assert b"\r\nSubject: Report\r\n" in raw.stdout_bytes
    assert raw.stdout_bytes.endswith(b"body 0\r\n")
    as_json = json.loads(daemon.cli("spool", "show", "--json", message_id).stdout)
    assert ["Subject", "Report"] in as_json["headers"]
    # offline: the same message, the same body, read from the journal
    offline = invoke("spool", "show", "--spool-dir", str(daemon.spool_dir), "--raw", message_id)
    assert offline.stdout_bytes == raw.stdout_bytes
    offline_json = invoke(
        "spool", "show", "--spool-dir", str(daemon.spool_dir), "--json", message_id
    )
    assert json.loads(offline_json.stdout) == as_json


def test_show_finds_messages_by_any_id_they_go_by(daemon: Daemon) -> None:
    """One transaction for two domains: two spool messages with one parent id (the
    "queued as" id). show takes a spool id (that one), the parent id or the Message-ID
    (both), online and offline; status --id selects the same."""
    asyncio.run(send(daemon.port, "frank@example.com", ["g@example.net", "h@example.com"]))
    spool_ids = daemon.wait_for(
        lambda m: m["sender"] == "<frank@example.com>" and m["attempt_count"] >= 1, 2
    )
    messages = daemon.messages("--sender", "^<frank@")
    assert [m["id"] for m in messages] == spool_ids
    (parent,) = {m["parent_id"] for m in messages}
    (message_id,) = {m["message_id"] for m in messages}
    assert message_id.startswith("<0.") and message_id.endswith("@cli.test>")
    for where in (["--socket", str(daemon.socket)], ["--spool-dir", str(daemon.spool_dir)]):
        for key in (parent, message_id, message_id.strip("<>")):
            listed = json.loads(invoke("spool", "show", "--json", key, *where).stdout)
            assert [m["id"] for m in listed] == spool_ids, (where, key)
            assert all(["Subject", "hello"] in m["headers"] for m in listed)
            text = invoke("spool", "show", key, *where).stdout
            assert all(i in text for i in spool_ids) and text.count("Header") == 2
            assert f"message-id    {message_id}" in text
            ids = invoke("spool", "status", "--format", "ids", "--id", key, *where).stdout
            assert ids.split() == spool_ids
        # A spool id names one message: --json gives the object itself.
        one = json.loads(invoke("spool", "show", "--json", spool_ids[1], *where).stdout)
        assert one["id"] == spool_ids[1] and one["parent_id"] == parent
        assert invoke("spool", "show", "--raw", spool_ids[1], *where).exit_code == 0
        # --raw needs one message.
        raw = invoke("spool", "show", "--raw", parent, *where)
        assert raw.exit_code == 2
        assert f"{parent} names 2 messages ({', '.join(spool_ids)})" in raw.stderr
        missing = invoke("spool", "show", "<nobody@cli.test>", *where)
        assert missing.exit_code == 1 and "<nobody@cli.test>: not found" in missing.stderr


# -- events -----------------------------------------------------------------------------------


def test_events_without_follow_stop_on_their_own(daemon: Daemon) -> None:
    stop = threading.Event()
    thread = inject_in_background(daemon, "events@example.com", stop)
    try:
        started = time.monotonic()
        raw = daemon.cli("spool", "events", "--json", "--timeout", "2s")
        took = time.monotonic() - started
        pretty = daemon.cli("spool", "events", "--timeout", "1.5")
    finally:
        stop.set()
        thread.join()
    assert raw.exit_code == 0, raw.output
    assert 1.5 < took < 6
    events = [json.loads(line) for line in raw.stdout.splitlines()]
    assert {"spooled", "delayed"} <= {e["kind"] for e in events}
    assert all(set(e) == {"time", "kind", "id", "detail", "queue"} for e in events if e["id"])
    assert {e["queue"] for e in events if e["kind"] == "spooled"} == {"active"}
    assert pretty.exit_code == 0
    assert re.search(r"spooled +[0-9A-Za-z_~]{16}-[0-9A-Za-z_~]{6}", pretty.stdout)


def test_events_of_a_queue_with_what_is_there(daemon: Daemon) -> None:
    (message_id,) = daemon.inject("queue@example.com", ["q@example.net"])
    daemon.cli("spool", "freeze", message_id)
    args = ["--queue", "frozen", "--existing", "--kind", "frozen", "--timeout", "1s"]
    result = daemon.cli("spool", "events", "--json", *args)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    listed = [e for e in events if e["kind"] == "listed"]
    assert message_id in {e["id"] for e in listed}
    assert {e["queue"] for e in listed} == {"frozen"}
    assert {e["kind"] for e in events} <= {"listed", "frozen", "ping"}


def test_events_follow_until_interrupted(daemon: Daemon) -> None:
    process = smtpx_process(
        "spool",
        "events",
        "--follow",
        "--socket",
        str(daemon.socket),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    out, err = Lines(process.stdout), Lines(process.stderr)
    try:
        assert b"watching spool events" in err.get()
        ids = daemon.inject("follow@example.com", ["f@example.net"])
        seen = b""
        while b"delayed" not in seen:
            seen += out.get()
        assert ids[0].encode() in seen and b"spooled" in seen
        time.sleep(0.3)
        assert process.poll() is None  # still following
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        assert b"Traceback" not in err.rest()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- fsck -----------------------------------------------------------------------------------


def test_fsck_clean_and_damaged(
    daemon: Daemon, queued: dict[str, list[str]], tmp_path: Path
) -> None:
    frozen = daemon.inject("fsck@example.com", ["f@example.net"])
    assert daemon.cli("spool", "freeze", *frozen).exit_code == 0
    live = invoke("spool", "fsck", "--config", str(daemon.config), "--verify-bodies")
    assert live.exit_code == 0, live.output
    assert "clean" in live.stdout
    copy = tmp_path / "spool"
    shutil.copytree(daemon.spool_dir, copy, ignore=shutil.ignore_patterns("lock"))
    assert invoke("spool", "fsck", "--spool-dir", str(copy), "--verify-bodies").exit_code == 0
    # rot one body and drop a stray file into journal/
    message = next(m for m in Spool.status_from_disk(copy) if m.id == queued["carol"][0])
    segment = Journal(copy).segment_path(message.location.segment)
    with open(segment, "r+b") as file:
        file.seek(message.location.offset + 2)
        file.write(b"#")
    (copy / "journal" / "notes.txt").write_text("hello", encoding="utf-8")
    damaged = invoke("spool", "fsck", "--spool-dir", str(copy), "--verify-bodies")
    assert damaged.exit_code == 1
    assert f"bad-body: {message.id}" in damaged.stdout
    assert "stray-file:" in damaged.stdout and "2 problems found" in damaged.stdout
    as_json = json.loads(
        invoke("spool", "fsck", "--spool-dir", str(copy), "--verify-bodies", "--json").stdout
    )
    assert {p["kind"] for p in as_json["problems"]} == {"bad-body", "stray-file"}
    # bodies are verified by default; --no-verify-bodies reads metadata only
    assert "bad-body" in invoke("spool", "fsck", "--spool-dir", str(copy)).stdout
    unverified = invoke("spool", "fsck", "--spool-dir", str(copy), "--no-verify-bodies")
    assert unverified.exit_code == 1 and "bad-body" not in unverified.stdout
    time.sleep(1.1)
    aged = invoke(
        "spool", "fsck", "--spool-dir", str(copy), "--no-verify-bodies", "--max-frozen-age", "1s"
    )
    assert aged.exit_code == 1 and f"too-old: {frozen[0]}: frozen" in aged.stdout
    assert "bad-body" not in aged.stdout
    not_a_spool = invoke("spool", "fsck", "--spool-dir", str(tmp_path / "nothing"))
    assert not_a_spool.exit_code == 2 and "not a spool directory" in not_a_spool.stderr


# -- errors -----------------------------------------------------------------------------------


def test_unreachable_socket_is_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    for args in (
        ["status"],
        ["count"],
        ["freeze", "x"],
        ["send", "--all"],
        ["events"],
        ["show", "x"],
    ):
        result = invoke("spool", *args, "--socket", str(path))
        assert result.exit_code == 3, (args, result.output)
        assert f"smtpx serve is not running: nothing answers on {path}" in result.stderr
        assert "Traceback" not in result.output
    url = invoke("spool", "status", "--url", "http://127.0.0.1:9", "--token-file", __file__)
    assert url.exit_code == 3 and "cannot reach the smtpx control plane" in url.stderr


def test_default_socket_is_in_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMTPX_RUNTIME_DIR", str(tmp_path / "runtime"))  # no daemon running
    monkeypatch.setattr("smtpx.cli.locate.STANDARD_CONFIG", tmp_path / "absent.toml")
    result = invoke("spool", "status")
    assert result.exit_code == 3
    assert str(tmp_path / "var" / "control.sock") in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--all", "-5NEsjLvAeLQ4MnY"],
        ["send", "--all", "--frozen"],
        ["send"],
        ["send", "x", "--retry-interval", "5q"],
        ["freeze"],
        ["events", "--kind", "nope"],
        ["events", "--queue", "elsewhere"],
        ["freeze", "--select", "true", "x"],
        ["remove"],
        ["send", "--select", "true", "--all"],
        ["status", "--select", "maybe"],
        ["count", "--select", "envelope_sender /(/"],
        ["recover", "x"],
        ["recover", "--from", "nowhere", "x"],
        ["status", "--format", "xml"],
        ["status", "--status", "bogus"],
        ["status", "--sender", "("],
        ["status", "--older", "5q"],
        ["status", "--offline", "--socket", "x.sock"],
        ["status", "--socket", "x.sock", "--url", "http://127.0.0.1:1"],
        ["status", "--url", "ftp://example.org"],
        ["status", "--tcp"],
        ["status", "--token-file", "x"],
        ["status", "--config", "/nonexistent/smtpx.toml"],
        ["show", "--raw", "--json", "x"],
        ["events", "--offline"],
        ["fsck", "--max-frozen-age", "soon"],
    ],
)
def test_usage_errors_are_exit_2(args: list[str]) -> None:
    result = invoke("spool", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_bad_config_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "smtpx.toml"
    config.write_text("[spool]\nretry_intervals = ['5q']\n", encoding="utf-8")
    result = invoke("spool", "status", "--config", str(config))
    assert result.exit_code == 2
    assert "configuration error" in result.stderr and "spool.retry_intervals" in result.stderr

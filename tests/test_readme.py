"""The README's examples run as written (a newcomer copies them first)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.cli.helpers import free_port
from tests.interop.conftest import CoreServer

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS: list[str] = re.findall(r"```python\n(.*?)```", README, re.S)


SH_BLOCKS: list[str] = re.findall(r"```sh\n(.*?)```", README, re.S)


def block(containing: str) -> str:
    (found,) = [b for b in BLOCKS if containing in b]
    return found


def test_every_python_block_is_tested() -> None:
    tested = [
        "from smtpx import simplemail",
        "async for status in client.send_many(batch)",
        "class Inbox(Plugin)",
        'conn.receive_data(b"EHLO client.example',
        "def serve(sock)",
        "from smtpx.testing import Session",
    ]
    assert sorted(BLOCKS) == sorted(block(text) for text in tested)
    for code in BLOCKS:
        compile(code, "README.md", "exec")  # no SyntaxError, whatever else


@contextlib.contextmanager
def core_server() -> Iterator[CoreServer]:
    server = CoreServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_five_line_send_example_sends() -> None:
    code = block("from smtpx import simplemail")
    assert len(code.strip().splitlines()) == 5
    with core_server() as server:
        exec(code.replace("port=2525", f"port={server.port}"), {})
    (message,) = server.messages()
    assert b"Subject: Hello" in message and b"Hi!" in message


def test_the_protocol_core_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(block('conn.receive_data(b"EHLO client.example'), namespace)
    assert "conn" in namespace


def test_the_in_memory_session_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(block("from smtpx.testing import Session"), namespace)
    session = namespace["session"]
    assert len(session.handler.messages) == 1  # type: ignore[attr-defined]


def test_the_client_example_sends_one_then_a_batch(capsys: Any) -> None:
    code = block("async for status in client.send_many(batch)")
    with core_server() as server:
        exec(code.replace("2525", str(server.port)), {})
    messages = server.messages()
    assert [m.split(b"\r\n", 1)[0] for m in messages] == [
        f"Subject: hello {n}".encode() for n in range(4)
    ]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and all(line.startswith("Envelope accepted (Ok") for line in printed)


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError("the example server did not start")


def test_the_plugin_example_runs_a_server() -> None:
    port = free_port()
    code = block("class Inbox(Plugin)").replace("port=2526", f"port={port}")
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.mail("a@example.net")
            code_, reply = client.rcpt("c@elsewhere.test")
            assert (code_, reply) == (550, b"5.7.1 Relay access denied")
            assert client.rcpt("b@example.org")[0] == 250
            code_, reply = client.data(b"Subject: y\r\n\r\nagain\r\n")
            assert code_ == 250 and reply.startswith(b"2.0.0 Ok: queued as ")
    finally:
        process.send_signal(signal.SIGINT)  # the Ctrl-C of its comment
        process.communicate(timeout=20)


def test_the_server_loop_serves_smtplib() -> None:
    namespace: dict[str, Any] = {}
    exec(block("def serve(sock)"), namespace)
    received: list[list[bytes]] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept() -> None:
            sock, _ = listener.accept()
            with sock:
                received.append(namespace["serve"](sock))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with smtplib.SMTP("127.0.0.1", listener.getsockname()[1], timeout=10) as client:
            assert client.ehlo()[0] == 250 and client.has_extn("pipelining")
            refused = client.sendmail("a@example.org", ["b@example.org"], b".hidden\r\nbody\r\n")
            assert refused == {}
            assert client.docmd("VRFY", "b")[0] == 502
            assert client.docmd("RCPT", "TO:<c@example.org>")[0] == 503  # no MAIL: the core
        thread.join(10)
    assert received == [[b".hidden\r\nbody\r\n"]]


def test_the_quick_start_finds_make_serve(tmp_path: Path) -> None:
    """make serve's smtpx serve (its embedded default configuration; on another port, as
    ARGS allows), then the README's first command, run from elsewhere, as written."""
    (send_line,) = [
        line.split("#")[0].strip()
        for text in SH_BLOCKS
        for line in text.splitlines()
        if line.startswith("echo hello | smtpx send --to postmaster@localhost")
    ]
    serve_dir, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    serve_dir.mkdir()
    elsewhere.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SMTPX_RUNTIME_DIR": str(tmp_path / "runtime"),  # this smtpx serve and no other
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "smtpx", "serve", "--listen", f"127.0.0.1:{port}"],
        cwd=serve_dir,
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, serve)
        sent = subprocess.run(
            ["bash", "-c", send_line],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        new = serve_dir / "var" / "mail" / "localhost" / "postmaster" / "new"
        deadline = time.monotonic() + 10
        while not (new.is_dir() and list(new.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.05)
        (delivered,) = new.iterdir()
        assert b"Subject: hi" in delivered.read_bytes()
    finally:
        serve.terminate()
        _, log = serve.communicate(timeout=30)
    assert b"try: echo hi | smtpx send --to postmaster@localhost" in log

"""The control plane of a bare Server (F33) and plugins' own endpoints (F35, F111), on the
server's plane and on the MTA's."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from smtpx.client import connect
from smtpx.envelope import Envelope
from smtpx.mta.app import Mta
from smtpx.mta.guards import Guard
from smtpx.mta.routing import FakeDns
from smtpx.mta.servercontrol import ServerControl
from smtpx.server import Listener, Server, ServerConfig, Session, Transaction
from tests.mta.helpers import PLAIN, config
from tests.server.helpers import Keep

ENVELOPE = Envelope.create(
    sender="a@example.com", recipients=["b@example.org"], message=b"Subject: x\r\n\r\nx\r\n"
)


class Counting(Keep):
    """Counts senders, and serves the counts."""

    def __init__(self) -> None:
        super().__init__()
        self.senders: dict[str, int] = {}

    async def mail_from(self, session: Session, transaction: Transaction) -> None:
        key = str(transaction.sender)
        self.senders[key] = self.senders.get(key, 0) + 1

    def control_routes(self) -> list[web.RouteDef]:
        async def senders(request: web.Request) -> web.Response:
            return web.json_response(self.senders)

        async def reset(request: web.Request) -> web.Response:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("a JSON object, please")
            self.senders.clear()
            return web.json_response({"reset": True})

        return [web.get("/senders", senders), web.post("/senders/reset", reset)]


async def test_a_bare_server_serves_its_control_plane_and_its_plugins_endpoints(
    tmp_path: Path,
) -> None:
    plugin = Counting()
    plugin.hostname = "mx.test"
    socket_path = tmp_path / "control.sock"
    async with (
        Server(plugin, ServerConfig(listeners=[Listener(port=0, name="mx")])) as server,
        ServerControl(server, socket_path=socket_path) as control,
    ):
        async with connect("127.0.0.1", server.ports[0], config=PLAIN) as client:
            assert (await client.send(ENVELOPE)).ok
        assert socket_path.stat().st_mode & 0o777 == 0o600
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with aiohttp.ClientSession(connector=connector) as http:
            base = "http://control"
            health = await (await http.get(f"{base}/healthz")).json()
            assert health["status"] == "ok"
            status = await (await http.get(f"{base}/v1/server")).json()
            assert status["listeners"] == [{"name": "mx", "port": server.ports[0]}]
            assert status["stats"]["messages"] == 1
            assert await (await http.get(f"{base}/v1/plugin/senders")).json() == {
                "<a@example.com>": 1
            }
            refused = await http.post(f"{base}/v1/plugin/senders/reset", json=[1])
            assert refused.status == 400  # the plugin's errors are the plane's JSON errors
            assert (await refused.json())["error"] == "a JSON object, please"
            assert (await http.post(f"{base}/v1/plugin/senders/reset", json={})).status == 200
            assert plugin.senders == {}
            text = await (await http.get(f"{base}/metrics")).text()
            assert (await http.get(f"{base}/v1/spool/messages")).status == 404  # no spool
            logging.getLogger("test.control").error("boom")
            errors = await http.get(f"{base}/v1/errors?recent=1&ping=0.1")
            first = json.loads(await errors.content.readline())
            assert first["message"] == "boom"
            errors.close()
        assert control.errors is not None
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("smtpx_messages_received_total", ())] == 1
    assert samples[("smtpx_sessions_active", ())] == 0
    assert not socket_path.exists()


async def test_over_tcp_the_plugins_endpoints_need_the_token() -> None:
    server = Server(Counting())
    control = ServerControl(server, http=("127.0.0.1", 0), token="secret")
    async with TestClient(TestServer(control.app)) as api:
        assert (await api.get("/v1/plugin/senders")).status == 401
        api.session.headers["Authorization"] = "Bearer secret"
        assert (await api.get("/v1/plugin/senders")).status == 200


class Stats(Guard):
    name = "stats"

    def control_routes(self) -> list[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"guard": self.name})

        return [web.get("/stats/hello", hello)]


async def test_the_mtas_guards_add_endpoints_to_its_control_plane(tmp_path: Path) -> None:
    async with (
        Mta(config(tmp_path), dns=FakeDns(), guards=[Stats()]) as mta,
        TestClient(TestServer(mta.control.app)) as api,
    ):
        mta.control.token = "secret"
        api.session.headers["Authorization"] = "Bearer secret"
        answer: Any = await (await api.get("/v1/plugin/stats/hello")).json()
        assert answer == {"guard": "stats"}
        assert (await api.get("/v1/spool/count")).status == 200  # the rest as before

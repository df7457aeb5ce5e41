"""[routing] warm_connections (F78): the MTA keeps sessions open to its smarthost and to
its explicit routes' first hops, under the key deliveries use, so mail goes out on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpx.client import CacheKey, connect
from smtpx.envelope import HostPort
from smtpx.errors import ConfigError
from smtpx.mta.app import Mta
from smtpx.mta.config import MtaConfig
from smtpx.mta.routing import FakeDns
from smtpx.testing import Handler, ScriptedServer
from tests.mta.helpers import PLAIN, config, message, wait_until


async def test_mail_goes_out_on_a_warm_session(tmp_path: Path) -> None:
    async with ScriptedServer(Handler) as sink:
        hop = HostPort("127.0.0.1", sink.port)
        cfg = config(
            tmp_path,
            routing={"routes": {"example.net": [str(hop)]}, "warm_connections": 2},
        )
        assert cfg.cache_config().keep_warm == (CacheKey(hop, None, "example.net"),)
        async with Mta(cfg, dns=FakeDns()) as mta:
            cache = mta.spool.cache
            await wait_until(lambda: cache.open_connections == 2)
            assert len(sink.handlers) == 2  # open before any mail
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert (await client.send(message(1, to="u@example.net"))).ok
            await wait_until(lambda: sum(len(h.messages) for h in sink.handlers) == 1)
            assert cache.opened == 2 and cache.reused >= 1  # no new session for it


def test_warm_connections_cover_the_smarthost_and_default_to_none(tmp_path: Path) -> None:
    assert config(tmp_path).cache_config().keep_warm == ()
    cfg = config(
        tmp_path,
        routing={
            "smarthost": "relay.example:587",
            "routes": {"example.net": ["a.example:25", "b.example:25"]},
            "warm_connections": 1,
        },
    )
    keys = cfg.cache_config().keep_warm
    assert [(str(k.address), k.route) for k in keys] == [
        ("relay.example:587", "relay.example:587"),
        ("a.example:25", "example.net"),
    ]


@pytest.mark.parametrize("value", [-1, 11, "2", True])
def test_bad_warm_connections(value: object) -> None:
    with pytest.raises(ConfigError, match=r"routing\.warm_connections"):
        MtaConfig.from_dict({"routing": {"warm_connections": value}})

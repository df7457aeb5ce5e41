"""``smtpx serve``'s spool on a real filesystem that fills up: clients get 451 (and 452 at
MAIL while the spool refuses at once), /metrics counts it, and when space comes back mail
is taken again without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from smtpx.client import connect
from smtpx.envelope import Envelope
from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from smtpx.spool.journal import RETRY_AFTER
from tests.conftest import grow, small_filesystem
from tests.mta.helpers import PLAIN, config, wait_until


def big(n: int) -> Envelope:
    line = f"{n:06d} " * 10 + "\r\n"
    return Envelope.create(
        sender="a@example.com",
        recipients=["x@example.net"],
        message=f"Subject: {n}\r\nMessage-ID: <{n}@full>\r\n\r\n{line * 70}".encode(),
    )


async def metrics(mta: Mta) -> dict[str, Any]:
    async with TestClient(TestServer(mta.control.app)) as client:
        mta.control.token = "secret"
        client.session.headers["Authorization"] = "Bearer secret"
        text = await (await client.get("/metrics")).text()
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_a_full_spool_disk_answers_4xx_then_recovers(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", "64k") as small:
        cfg = config(
            tmp_path,
            spool={"dir": str(small / "spool"), "fsync": "batch", "retry_intervals": ["1h"]},
            # Mail for example.net waits in the spool (port 9 is closed).
            routing={"routes": {"example.net": ["127.0.0.1:9"]}},
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            port = mta.server.ports[0]
            codes: list[int] = []
            async with connect("127.0.0.1", port, config=PLAIN) as client:
                for n in range(40):
                    status = await client.send(big(n))
                    codes.append(status.reply.code if not status.ok else 250)
                    if codes[-1] != 250:
                        break
                # Refused moments ago: the next MAIL hears it before sending DATA.
                again = await client.send(big(99))
            assert 250 in codes and codes[-1] == 451, codes
            assert not again.ok and again.reply.code == 452, again
            families = await metrics(mta)
            errors = {
                s.labels["operation"]: s.value
                for s in families["smtpx_spool_write_errors"].samples
                if s.name.endswith("_total")
            }
            assert errors["write"] >= 1  # (the failing gauge may be 0 already: small
            # state records of the deliveries to port 9 can fit where a message did not)
            kept = len(mta.spool.messages)
            assert kept == codes.count(250)

            grow(small, "4m")
            await asyncio.sleep(RETRY_AFTER)
            async with connect("127.0.0.1", port, config=PLAIN) as client:
                assert (await client.send(big(100))).ok
            assert len(mta.spool.messages) == kept + 1
            families = await metrics(mta)
            assert families["smtpx_spool_failing"].samples[0].value == 0


async def test_show_tells_a_damaged_body_and_delivery_quarantines_it(tmp_path: Path) -> None:
    cfg = config(tmp_path, routing={"routes": {"example.net": ["127.0.0.1:9"]}})
    async with Mta(cfg, dns=FakeDns()) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            assert (await client.send(big(1))).ok
        (entry,) = mta.spool.status()
        await mta.spool.freeze([entry.id])
        path = mta.spool.journal.segment_path(entry.location.segment)
        with open(path, "r+b") as segment:
            segment.seek(entry.location.offset + 40)
            segment.write(b"#")
        async with TestClient(TestServer(mta.control.app)) as api:
            mta.control.token = "secret"
            api.session.headers["Authorization"] = "Bearer secret"
            shown = await (await api.get(f"/v1/spool/messages/{entry.id}")).json()
            assert "checksum mismatch" in shown["damaged"]
            raw = await api.get(f"/v1/spool/messages/{entry.id}", params={"raw": "1"})
            assert raw.status == 200 and "checksum mismatch" in raw.headers["X-Smtpx-Damaged"]
            await mta.spool.send([entry.id])
            await wait_until(lambda: mta.spool.get(entry.id).status.value == "quarantined")
            families = await metrics(mta)
            assert families["smtpx_spool_damaged_bodies"].samples[0].value == 1

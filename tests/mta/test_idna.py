"""One IDNA in the MTA: configuration, routing, the relay and maildirs all use IDNA 2008
(UTS 46), the same conversion as addresses and the client."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpx.client import Accepted, connect
from smtpx.envelope import Envelope
from smtpx.errors import ConfigError
from smtpx.mta.app import Mta
from smtpx.mta.config import MtaConfig, a_label
from smtpx.mta.local import MaildirAgent
from smtpx.mta.routing import FakeDns, NoRoute, Route, Router
from smtpx.protocol import Address, Mail, Rcpt, Sender, domain_to_ascii
from tests.mta.helpers import PLAIN, config, wait_until


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("straße.de", "xn--strae-oqa.de"),  # IDNA 2003 (dnspython without idna): strasse.de
        ("ς.gr", "xn--3xa.gr"),
        ("ｅｘａｍｐｌｅ．ｏｒｇ", "example.org"),
        ("ＥＸＡＭＰＬＥ。ＯＲＧ。", "example.org"),
    ],
)
def test_a_label_is_the_protocol_conversion(text: str, expected: str) -> None:
    assert a_label(text) == expected == domain_to_ascii(text.rstrip("。")).lower()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"relay": {"local_domains": ["example.org", "☃.example"]}}, "relay.local_domains[1]"),
        (
            {"routing": {"routes": {"a\u200db.example": ["mx.test"]}}},
            'routing.routes."a\u200db.example"',
        ),
        ({"routing": {"routes": {"x.example": ["mx.☃.example"]}}}, 'routing.routes."x.example"[0]'),
        ({"hostname": "mx.☃.example"}, "hostname"),
    ],
)
def test_a_name_idna_2008_refuses_is_a_config_error_naming_the_key(
    section: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_dict(section, base_dir="/nonexistent")
    message = str(caught.value)
    assert message.startswith(key), message
    assert "IDNA 2008" in message


async def test_routing_and_the_local_check_use_the_same_a_label() -> None:
    cfg = MtaConfig.from_dict(
        {"relay": {"local_domains": ["straße.de"]}, "routing": {"routes": {"ς.gr": ["mx.test"]}}},
        base_dir="/nonexistent",
    )
    assert cfg.relay.local_domains == ("xn--strae-oqa.de",)
    router = Router(cfg, FakeDns())
    for written in ("straße.de", "STRAßE.de", "xn--strae-oqa.de", "ｓｔｒａßｅ.ｄｅ"):
        assert await router.route(written) == Route(name="xn--strae-oqa.de", hops=(), local=True)
    # strasse.de is another domain (IDNA 2003 would have made straße.de this one)
    assert not cfg.relay.is_local("strasse.de")
    route = await router.route("ς.gr")
    assert isinstance(route, Route) and route.name == "xn--3xa.gr"
    refused = await router.route("☃.example")
    assert isinstance(refused, NoRoute) and "IDNA 2008" in refused.reply.text


def test_a_fullwidth_domain_is_the_same_maildir_as_its_ascii_form(tmp_path: Path) -> None:
    agent = MaildirAgent(tmp_path, hostname="h")
    assert agent.mailbox("user@ｅｘａｍｐｌｅ．ｏｒｇ") == agent.mailbox("user@example.org")
    assert agent.mailbox("user@ＥＸＡＭＰＬＥ.org") == tmp_path / "example.org" / "user"
    same = {agent.mailbox(f"u@{d}") for d in ("bücher.example", "BÜCHER.example")}
    assert same == {agent.mailbox("u@xn--bcher-kva.example")}
    assert same == {tmp_path / "xn--bcher-kva.example" / "u"}
    # two domains that the old folder names ("b_cher.example") mixed up are apart
    assert agent.mailbox("u@bächer.example") not in same


async def test_fullwidth_and_u_label_recipients_reach_one_maildir(tmp_path: Path) -> None:
    cfg = config(tmp_path, relay={"local_domains": ["example.org", "straße.de"]})
    recipients = [
        "user@ｅｘａｍｐｌｅ．ｏｒｇ",
        "user@example.org",
        "u@straße.de",
        "u@xn--strae-oqa.de",
    ]
    async with Mta(cfg, dns=FakeDns()) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            # With SMTPUTF8 the server sees the domains as written; without, the client
            # sends A-labels. Either way one maildir per domain.
            for args in ("SMTPUTF8", ""):
                envelope = Envelope.create(
                    sender="a@example.com",
                    recipients=recipients,
                    message=b"Subject: idna\r\n\r\nbody\r\n",
                    sender_args=args,
                )
                assert isinstance(await client.send(envelope), Accepted)
            # refused at RCPT with the reason, not by a traceback (an Address made by hand:
            # the parser would not make it)
            assert (await client.command(Mail(Sender.parse("<a@example.com>")))).code == 250
            refused = await client.command(Rcpt(Address("u", "☃.example")))
            assert (refused.code, str(refused.enhanced)) == (501, "5.1.3")
            assert "IDNA 2008" in refused.text and "U+2603" in refused.text

        def delivered(folder: str) -> list[Path]:
            new = tmp_path / "mail" / folder / "new"
            return sorted(new.iterdir()) if new.is_dir() else []

        await wait_until(
            lambda: (
                len(delivered("example.org/user")) == 4
                and len(delivered("xn--strae-oqa.de/u")) == 4
            )
        )
    assert sorted(p.name for p in (tmp_path / "mail").iterdir()) == [
        "example.org",
        "xn--strae-oqa.de",
    ]

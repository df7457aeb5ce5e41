"""The client's domains in ASCII are IDNA 2008: the A-label fallback for servers without
SMTPUTF8, host names it resolves, and the TLS policy it looks up."""

from __future__ import annotations

import pytest

from smtpx.client import Client, ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.io import StaticResolver
from smtpx.protocol import Extensions
from smtpx.testing import Handler, ScriptedServer
from tests.client.helpers import in_memory

BODY = b"Subject: test\r\n\r\nbody\r\n"
NO_SMTPUTF8 = Extensions(pipelining=True, eightbitmime=True)


@pytest.mark.parametrize(
    ("domain", "a_label"),
    [
        pytest.param("straße.de", "xn--strae-oqa.de", id="sharp-s"),  # IDNA 2003: strasse.de
        pytest.param("ς.gr", "xn--3xa.gr", id="final-sigma"),  # IDNA 2003: xn--4xa.gr
        pytest.param("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com", id="fullwidth"),
    ],
)
async def test_a_server_without_smtputf8_gets_the_idna_2008_a_label(
    domain: str, a_label: str
) -> None:
    handler = Handler(extensions=NO_SMTPUTF8)
    envelope = Envelope.create(sender=f"s@{domain}", recipients=[f"u@{domain}"], message=BODY)

    async def use(client: Client) -> None:
        assert (await client.send(envelope)).ok

    run = await in_memory(handler, use)
    assert run.error is None
    assert f"C: MAIL FROM:<s@{a_label}>" in run.lines()
    assert f"C: RCPT TO:<u@{a_label}>" in run.lines()
    (received,) = handler.messages
    assert [str(r.recipient) for r in received.recipients] == [f"u@{a_label}"]


@pytest.mark.parametrize(
    ("smtputf8", "written"), [(True, "straße.de"), (False, "xn--strae-oqa.de")]
)
async def test_a_server_with_smtputf8_gets_the_domain_as_written_only_with_smtputf8(
    smtputf8: bool, written: str
) -> None:
    # RFC 6531 3.4: UTF-8 in RCPT needs SMTPUTF8 on MAIL, whatever the server offers.
    handler = Handler()
    envelope = Envelope.create(
        sender="s@example.com",
        recipients=["u@straße.de"],
        message=BODY,
        sender_args="SMTPUTF8" if smtputf8 else "",
    )

    async def use(client: Client) -> None:
        assert (await client.send(envelope)).ok

    run = await in_memory(handler, use)
    assert f"C: RCPT TO:<u@{written}>" in run.lines()
    (mail,) = [line for line in run.lines() if line.startswith("C: MAIL FROM:<s@example.com>")]
    assert mail.endswith(" SMTPUTF8") is smtputf8


async def test_a_u_label_host_is_resolved_by_its_idna_2008_a_label() -> None:
    # The OS resolver would encode straße.test with IDNA 2003 (strasse.test).
    async with ScriptedServer(Handler) as server:
        resolver = StaticResolver({"xn--strae-oqa.test": ["127.0.0.1"]})
        async with connect(
            "straße.test", server.port, config=ClientConfig.for_testing(), resolver=resolver
        ) as client:
            assert (await client.noop()).code == 250


def test_tls_policy_matches_u_label_and_a_label_forms() -> None:
    strict = TlsConfig(mode=TlsMode.REQUIRED)
    for suffix in ("bücher.example", "xn--bcher-kva.example", "ＢÜＣＨＥＲ.example"):
        config = ClientConfig(tls=[(suffix, strict)])
        for host in ("mx.bücher.example", "MX.xn--bcher-kva.example", "bücher.example."):
            assert config.tls_for(host) is strict, (suffix, host)
        assert config.tls_for("mx.bucher.example").mode is TlsMode.NONE

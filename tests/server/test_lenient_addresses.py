"""The server's address grammar: strict RFC 5321 by default, widened by configuration
(F8, F10), from ``[server]`` to the session."""

from __future__ import annotations

import pytest

from smtpx.errors import ConfigError
from smtpx.mta.config import MtaConfig
from smtpx.protocol import Address
from smtpx.protocol.lenient import AddressGrammar
from tests.server.helpers import Keep, raw_session, server

EHLO = b"EHLO client.example\r\n"
LENIENT_MAIL = b'MAIL FROM:"Mailer Daemon" <>\r\nRCPT TO:Joe <joe@example.org>\r\nDATA\r\n'


async def test_strict_by_default() -> None:
    raw = await raw_session(server())
    await raw.send(EHLO)
    assert await raw.codes(LENIENT_MAIL, 3) == [501, 501, 503]  # RCPT: the bad address first
    await raw.finish()


async def test_lenient_forms_and_the_default_domain_reach_the_plugin() -> None:
    plugin = Keep()
    grammar = AddressGrammar(lenient=True, default_domain="example.com")
    raw = await raw_session(server(plugin, addresses=grammar))
    await raw.send(EHLO)
    codes = await raw.codes(b'MAIL FROM:"Mailer Daemon" <>\r\nRCPT TO:Joe <joe@example.org>\r\n', 2)
    assert codes == [250, 250]
    assert await raw.codes(b"RCPT TO:<ann>\r\nDATA\r\n", 2) == [250, 354]
    assert await raw.codes(b"Subject: hi\r\n\r\nhi\r\n.\r\n") == [250]
    await raw.finish()
    (envelope,) = plugin.kept
    assert envelope.sender.is_null
    assert envelope.recipients == (Address("joe", "example.org"), Address("ann", "example.com"))


def test_the_configuration_keys() -> None:
    assert MtaConfig.default().server_config().addresses == AddressGrammar()
    config = MtaConfig.from_toml(
        "[server]\ndefault_domain = 'Example.COM'\nlenient_addresses = true\n"
    )
    assert config.server_config().addresses == AddressGrammar(
        lenient=True, default_domain="example.com"
    )
    with pytest.raises(ConfigError, match="default_domain"):
        MtaConfig.from_toml("[server]\ndefault_domain = 'not a domain'\n")

"""One DNS lab (NSD on 127.0.0.1 serving :func:`~tests.mta.inbound.helpers.auth_zone`)
for the inbound tests of a module: the zone does not change under them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtpx.testing.dns import DnsLab
from tests.conftest import require_tool
from tests.mta.inbound.helpers import auth_zone


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsLab]:
    require_tool("nsd")
    with DnsLab(tmp_path_factory.mktemp("dns"), [auth_zone()]) as started:
        yield started

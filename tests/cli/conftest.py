"""The daemon the CLI tests talk to: one ``smtpx serve`` per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.helpers import Daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    running = Daemon(tmp_path_factory.mktemp("cli"))
    running.start()
    try:
        yield running
    finally:
        running.stop()
